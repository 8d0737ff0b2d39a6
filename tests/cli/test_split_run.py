"""`brainorg run --subjects` as two jobs at once into one folder, then `brainorg merge`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_study as tiny  # noqa: E402


def test_two_parts_at_once_then_merge_equal_one_run(finished_study, tmp_path, capsys):
    from napari_brainorg.cli import main

    study = tiny.copy_study(finished_study, tmp_path / "study")
    result = study / "result"
    # keep the shared steps (story, features, atoms) and drop everything made per subject or after
    for name in ("encoding", "networks", "maps", "comparison", "figures"):
        shutil.rmtree(result / name, ignore_errors=True)
        shutil.rmtree(result / ".cache" / name, ignore_errors=True)
    for path in [*result.glob("*.json"), *result.glob("*.html"), *(result / ".cache").glob("statmaps_*.json")]:
        path.unlink()

    # two jobs at the same time: one runs (reuses) the shared steps while the other waits
    # for the folder, then each encodes its subject under its own lock
    parts = [subprocess.Popen(tiny.brainorg_cmd(["run", "study.yaml", "--subjects", subject, "--quiet"]), cwd=study,
                              env=tiny.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for subject in ("sub-01", "sub-02")]
    for part in parts:
        output = part.communicate(timeout=300)[0]
        assert part.returncode == 0, output[-3000:]
        assert "brainorg merge study.yaml" in output
    assert not (result / "summary.json").exists()
    assert sorted(p.name for p in (result / "encoding/minilm/subjects").glob("*.npz")) == ["sub-01.npz", "sub-02.npz"]

    # in this process, with one BLAS thread like the parts (conftest): the same numbers
    assert main(["run", str(study / "study.yaml"), "--subjects", "sub-09", "--quiet"]) == 2
    assert "sub-09" in capsys.readouterr().err
    assert main(["merge", str(study / "study.yaml"), "--quiet"]) == 0
    tiny.assert_same_results(result, finished_study / "result")
