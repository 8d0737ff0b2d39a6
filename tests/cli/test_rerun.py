"""Reruns after an input changed, and reruns interrupted by SIGINT or SIGKILL.

After each change the rerun into the earlier result must equal a fresh run into an
empty folder (arrays compared numerically); an interrupted rerun leaves a folder that
every reader calls incomplete, and the next run completes it to the clean run's outputs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_study as tiny  # noqa: E402

from napari_brainorg.errors import CacheMismatchWarning, IncompleteResultError  # noqa: E402
from napari_brainorg.io.results import ResultFolder  # noqa: E402
from napari_brainorg.pipeline import load_config, run_pipeline  # noqa: E402

pytestmark = pytest.mark.slow


def _run(study: Path, out: str | None = None):
    overrides = {"out": str(study / out)} if out else {}
    return run_pipeline(load_config(study / "study.yaml", **overrides))


def _overwrite_image(s: Path):
    tiny.write_run(s / "sub-01_bold.nii.gz", seed=11)  # same path, same size, new content


def _replace_atlas(s: Path):
    from napari_brainorg.datasets import atlas_path

    shutil.copy(atlas_path("yeo17"), s / "custom_atlas.nii.gz")


def _change_mask(s: Path):
    tiny.write_mask(s / "mask2.nii.gz", shrink=1)
    tiny.edit_config(s, fmri__mask="mask2.nii.gz")


def _change_seed(s: Path):
    tiny.edit_config(s, seed=7)


def _edit_story(s: Path):
    rows = tiny.story_rows()
    rows = [(w, a + 0.8, b + 0.8) if i >= len(rows) // 2 else (w, a, b) for i, (w, a, b) in enumerate(rows)]
    tiny.write_story(s / "story.tsv", rows)


CHANGES = {"image_overwritten": _overwrite_image, "atlas_replaced": _replace_atlas, "mask_changed": _change_mask,
           "seed_changed": _change_seed, "story_edited": _edit_story}


@pytest.mark.parametrize("change", list(CHANGES))
def test_rerun_after_an_input_change_equals_a_fresh_run(change, finished_study, tmp_path):
    study = tiny.copy_study(finished_study, tmp_path / "study")
    before = ResultFolder(finished_study / "result")
    CHANGES[change](study)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheMismatchWarning)  # a change of input is no corruption
        _run(study)
    fresh = _run(study, out="fresh")
    tiny.assert_same_results(study / "result", fresh.path)
    # and the change did reach the results (the old ones were not kept)
    if change == "story_edited":
        words = ResultFolder(study / "result").words_table()
        assert not np.allclose(words["onset"], before.words_table()["onset"])
    elif change == "seed_changed":  # the seed draws the permutations of the association test
        p_new = ResultFolder(study / "result").associations()["p"].to_numpy()
        assert not np.allclose(p_new, before.associations()["p"].to_numpy())
    elif change == "atlas_replaced":
        assert len(ResultFolder(study / "result").atlas_network_names("custom_atlas")) == 17
    else:
        z_new = np.asarray(ResultFolder(study / "result").atom_maps(stat="z").dataobj)
        z_old = np.asarray(nib_load(ResultFolder(finished_study / "result").map_path(name="atom_maps_z")).dataobj)
        assert z_new.shape != z_old.shape or not np.allclose(z_new, z_old)
    prov = (study / "result/provenance.json").read_text()
    assert "sha256:" in prov and "sub-01_bold.nii.gz" in prov and "custom_atlas.nii.gz" in prov


def nib_load(path):
    import nibabel as nib

    return nib.load(path)


def test_a_corrupted_cached_array_is_recomputed_with_a_warning(finished_study, tmp_path):
    study = tiny.copy_study(finished_study, tmp_path / "study")
    atoms_file = study / "result/atoms/minilm/atoms.npy"
    atoms = np.load(atoms_file)
    size = atoms_file.stat().st_size
    atoms[:, 1] = 0.0  # a same-size corruption
    np.save(atoms_file, atoms)
    assert atoms_file.stat().st_size == size
    with pytest.warns(CacheMismatchWarning, match="atoms.npy"):
        _run(study)
    tiny.assert_same_results(study / "result", finished_study / "result")


def test_a_new_revision_of_the_association_test_is_recomputed_not_reused(finished_study, tmp_path, monkeypatch):
    """Results of an earlier revision of the test in a folder are never taken for the new one."""
    import json

    from napari_brainorg.networks import association

    study = tiny.copy_study(finished_study, tmp_path / "study")
    stamp = study / "result/.cache/networks/minilm.json"
    old_key = json.loads(stamp.read_text())["key"]
    _run(study)
    assert json.loads(stamp.read_text())["key"] == old_key  # nothing changed: reused
    monkeypatch.setattr(association, "TEST_REVISION", association.TEST_REVISION + 1)
    _run(study)
    assert json.loads(stamp.read_text())["key"] != old_key


def test_maps_of_a_model_the_rerun_no_longer_has_are_cleared(finished_study, tmp_path):
    """A model removed from the configuration leaves no BIDS maps behind in the folder."""
    study = tiny.copy_study(finished_study, tmp_path / "study")
    maps = study / "result/maps"
    kept = sorted(p.name for p in maps.rglob("*_desc-minilm*"))
    assert kept
    # named as this version names maps, and as an earlier one did
    old = [maps / "group/task-pieman_desc-goneAtom00Z_statmap.nii.gz", maps / "group/task-pieman_desc-goneAtom00Z_statmap.json",
           maps / "group/model-gone_atom-00_stat-z_statmap.nii.gz", maps / "group/model-gone_atom-00_stat-z_statmap.json",
           maps / "sub-01/sub-01_model-gone_atom-00_stat-z_statmap.nii.gz"]
    for path in old:
        path.write_bytes(b"from a run with another model")
    (study / "result/.cache/statmaps_gone.json").write_text("{}")
    _run(study)
    assert not any(p.exists() for p in old) and not (study / "result/.cache/statmaps_gone.json").exists()
    assert sorted(p.name for p in maps.rglob("*_desc-minilm*")) == kept


# ------------------------------------------------------------------------------ interrupts
def _wait_for(predicate, proc, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def clean_k5(finished_study, tmp_path_factory):
    """A clean run of the changed configuration (5 atoms) into an empty folder."""
    study = tiny.copy_study(finished_study, tmp_path_factory.mktemp("clean") / "study")
    tiny.edit_config(study, atoms__n_atoms=5)
    return _run(study, out="clean").path


def _atoms_rewritten(result: Path):
    return lambda: (result / "atoms/minilm/atoms.npy").is_file() and np.load(
        result / "atoms/minilm/atoms.npy").shape[1] == 5


def _report_started(result: Path):
    t0 = time.time()

    def started():
        try:
            return any(p.stat().st_mtime > t0 for p in result.glob("figures/*.png"))
        except FileNotFoundError:  # a figure being replaced
            return False
    return started


POINTS = {"after_atoms": _atoms_rewritten, "during_report": _report_started}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("point", list(POINTS))
def test_interrupted_rerun_is_incomplete_and_the_next_run_completes_it(point, sig, finished_study, clean_k5,
                                                                       tmp_path):
    study = tiny.copy_study(finished_study, tmp_path / "study")
    tiny.edit_config(study, atoms__n_atoms=5)
    result = study / "result"
    proc = subprocess.Popen(tiny.brainorg_cmd(["run", "study.yaml", "--quiet"]), cwd=study, env=tiny.cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            # a test runner started in the background ignores SIGINT, and its
                            # children would inherit that: give the run Python's own handler
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        reached = _wait_for(POINTS[point](result), proc)
        assert reached, f"the run ended before {point}: {proc.stderr.read()[-2000:]}"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        pytest.skip(f"the run finished before {sig.name} arrived")  # a race the signal lost: nothing to test
    assert "Traceback" not in err, err[-3000:]
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "incomplete" in err, err[-2000:]
    # every reader sees an incomplete folder, never a mix of two runs
    with pytest.raises(IncompleteResultError, match="incomplete"):
        ResultFolder(result)
    view = tiny.brainorg(["view", result], cwd=study)
    assert view.returncode == 2 and "incomplete" in view.stderr, view.stderr
    # the next run completes it, to the clean run's outputs
    _run(study)
    tiny.assert_same_results(result, clean_k5)
