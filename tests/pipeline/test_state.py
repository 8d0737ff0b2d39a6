"""Content identities, step stamps and the one-run-per-folder lock (no model runs here)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_brainorg.errors import CacheMismatchWarning, FolderInUseError, IncompleteResultError
from napari_brainorg.io.results import ResultFolder, ResultWriter, RunLock, check_complete, is_locked
from napari_brainorg.io import _identity as _state
from napari_brainorg.pipeline import make_config
from napari_brainorg.pipeline.context import StepContext


def test_file_identity_follows_content_not_path_or_time(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"x" * 1000)
    assert _state.file_identity(a) == _state.file_identity(b)
    a.write_bytes(b"x" * 999 + b"y")  # same size, one byte changed
    assert _state.file_identity(a) != _state.file_identity(b)


def test_large_files_use_size_mtime_and_sampled_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(_state, "FULL_HASH_LIMIT", 4 << 20)
    big = tmp_path / "big.bin"
    data = np.zeros(6 << 20, np.uint8)
    big.write_bytes(data.tobytes())
    first = _state.file_identity(big)
    assert first.startswith("sampled:") and str(6 << 20) in first
    data[-1] = 1  # the last block is always sampled
    big.write_bytes(data.tobytes())
    assert _state.file_identity(big) != first


def _ctx(tmp_path):
    config = make_config({"out": str(tmp_path / "out")})
    return StepContext(config, ResultWriter(config.out), None, None)


def test_stamp_detects_a_same_size_corruption_and_names_the_file(tmp_path):
    ctx = _ctx(tmp_path)
    src = tmp_path / "input.txt"
    src.write_text("one")
    assert not ctx.cached("step", {"k": 1}, ["arr.npy"], inputs=[src])
    arr = np.arange(20, dtype=np.float32).reshape(4, 5)
    ctx.writer.write_npy("arr.npy", arr)
    ctx.done("step")
    assert ctx.cached("step", {"k": 1}, ["arr.npy"], inputs=[src])
    assert ctx.inputs[str(src)].startswith("sha256:")
    # an option, or the input's content at the same path, changes the key
    assert not _ctx(tmp_path).cached("step", {"k": 2}, ["arr.npy"], inputs=[src])
    ctx.done("step")  # restamp with k=1
    src.write_text("two")
    assert not ctx.cached("step", {"k": 1}, ["arr.npy"], inputs=[src])
    src.write_text("one")
    assert not ctx.cached("step", {"k": 1}, ["arr.npy"], inputs=[src])
    ctx.done("step")
    assert ctx.cached("step", {"k": 1}, ["arr.npy"], inputs=[src])
    # zero a column in place: same size, different content
    corrupt = arr.copy()
    corrupt[:, 2] = 0
    size = (ctx.out / "arr.npy").stat().st_size
    ctx.writer.write_npy("arr.npy", corrupt)
    assert (ctx.out / "arr.npy").stat().st_size == size
    with pytest.warns(CacheMismatchWarning, match="arr.npy"):
        assert not ctx.cached("step", {"k": 1}, ["arr.npy"], inputs=[src])
    # the stale stamp is gone: an interrupted recompute is never trusted
    assert not (ctx.out / ".cache/step.json").exists()


HOLD = textwrap.dedent("""
    import sys, time
    from napari_brainorg.io.results import RunLock
    with RunLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(30)
""")


def test_second_run_into_a_folder_in_use_is_refused_with_pid_and_start(tmp_path):
    out = tmp_path / "out"
    ResultWriter(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(out)
        with pytest.raises(FolderInUseError, match=f"PID {holder.pid}.*started 20"):
            with RunLock(out):
                pass
        with pytest.raises(IncompleteResultError, match=f"a run is writing it now \\(PID {holder.pid}"):
            ResultFolder(out)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert not is_locked(out)  # a killed holder never blocks the next run
    with RunLock(out):
        assert json.loads((out / ".napari-brainorg.run.json").read_text())["pid"] > 0


def test_folder_without_summary_is_incomplete(tmp_path):
    out = tmp_path / "out"
    ResultWriter(out).write_json("provenance.json", {})
    with pytest.raises(IncompleteResultError, match="incomplete: its last run did not finish"):
        check_complete(out)
    (out / "summary.json").write_text('{"models": [')
    with pytest.raises(IncompleteResultError, match="not valid JSON"):
        ResultFolder(out)
    with pytest.raises(ValueError, match="not a napari-brainorg result folder"):
        ResultFolder(tmp_path)


def test_a_new_run_clears_what_belongs_to_the_old_one_and_never_an_input(tmp_path):
    from napari_brainorg.pipeline.run import _start_run

    out = tmp_path / "out"
    w = ResultWriter(out)
    for rel in ("summary.json", "figures/smollm2_layer_histograms.png", "comparison/summary.csv",
                "recovery.json", "features/smollm2/an_responses.npy", "atoms/smollm2/atoms.npy",
                ".cache/atoms/smollm2.json", "networks/atlas_yeo17.tsv", "simulated/sub-03_bold.nii.gz",
                "atoms/minilm/atoms.npy", "networks/atlas_smith10.tsv", "simulated/mask.nii.gz"):
        w.write_text(rel, "old")
    config = make_config({"features": {"models": ["minilm"]}, "networks": {"atlases": ["smith10"]},
                          # the user's files live in an old simulation folder: it must stay
                          "fmri": {"images": [str(out / "simulated/sub-03_bold.nii.gz")],
                                   "mask": str(out / "simulated/mask.nii.gz")},
                          "out": str(out)})
    _start_run(StepContext(config, w, None, None))
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != ".napari-brainorg")
    # this run's model and atlas stay (their steps decide); what the config reads is never removed
    assert left == ["atoms/minilm/atoms.npy", "networks/atlas_smith10.tsv", "simulated/mask.nii.gz",
                    "simulated/sub-03_bold.nii.gz"]
