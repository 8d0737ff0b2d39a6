"""Executors: where the pipeline's tasks run, BLAS threads per worker, cancellation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from napari_brainorg.errors import CancelledError, ConfigError
from napari_brainorg.pipeline.tasks import SequentialExecutor, blas_threads_per_worker, make_executor


def _finish(marker: str, seconds: float) -> str:
    time.sleep(seconds)
    Path(marker).write_text("done")
    return marker


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


def test_blas_threads_share_the_cores_among_the_workers():
    assert blas_threads_per_worker(2, cores=2) == 1
    assert blas_threads_per_worker(2, cores=16) == 8
    assert blas_threads_per_worker(4, threads_per_worker=2, cores=16) == 2
    assert blas_threads_per_worker(8, cores=2) == 1  # never 0


def test_default_is_sequential_and_jobs_with_scheduler_is_refused():
    assert isinstance(make_executor(), SequentialExecutor)
    assert isinstance(make_executor(jobs=1), SequentialExecutor)
    with pytest.raises(ConfigError, match="--jobs or --scheduler"):
        make_executor(jobs=2, scheduler="tcp://127.0.0.1:1")


def test_dask_tasks_run_with_limited_blas_and_cancel_stops_the_pending_ones(tmp_path):
    pytest.importorskip("distributed")
    from napari_brainorg.pipeline.tasks import DaskExecutor

    executor = DaskExecutor(jobs=2, processes=False)
    try:
        assert executor.blas_threads == blas_threads_per_worker(2)
        # inside a task the BLAS pools are limited to cores / workers
        assert executor.map(_blas_threads, [()]) == [executor.blas_threads]

        stages = []
        assert executor.map(_finish, [(str(tmp_path / f"ok{i}"), 0.0) for i in range(3)], stage="tasks",
                            progress=lambda *a: stages.append(a)) == [str(tmp_path / f"ok{i}") for i in range(3)]
        assert stages[0] == ("tasks", 0, 3) and stages[-1] == ("tasks", 3, 3)

        cancel = threading.Event()

        def progress(stage, done, total):
            if done >= 1:
                cancel.set()

        markers = [str(tmp_path / f"task{i}") for i in range(8)]
        with pytest.raises(CancelledError):
            executor.map(_finish, [(markers[0], 0.0)] + [(m, 1.0) for m in markers[1:]], stage="tasks",
                         progress=progress, cancel=cancel)
        time.sleep(5.0)  # uncancelled, all 8 would have finished by now (7 x 1 s on 2 workers)
        finished = sum(Path(m).exists() for m in markers)
        assert 1 <= finished < len(markers), finished
    finally:
        executor.close()


def test_subjects_side_by_side_stop_together_and_keep_their_order(tmp_path, monkeypatch):
    """Subjects encoded on threads of their own come back in the subjects' order, each on
    one BLAS thread; an error in one stops the others at their next check (not at their
    end) and reaches the caller."""
    from types import SimpleNamespace

    import numpy as np

    import napari_brainorg.pipeline.steps.encoding as encoding
    from napari_brainorg.io.results import ResultWriter
    from napari_brainorg.pipeline import demo_config
    from napari_brainorg.pipeline.context import StepContext

    ctx = StepContext(demo_config(tmp_path / "out", quick=True), ResultWriter(tmp_path / "out"), None, None)
    tasks = [encoding.SubjectTask("m", f"sub-0{i}", i, 3, False, f"key{i}") for i in range(3)]
    data = SimpleNamespace(data=[np.zeros((10, 4), np.float32)] * 3)
    monkeypatch.setattr(encoding, "subject_threads", lambda n, shape: 2)
    seen = {}

    def fake(wctx, task, Y, *args, **kwargs):
        seen[task.index] = (threading.current_thread().name, _blas_threads())
        time.sleep(0.05 * (3 - task.index))   # the first subject finishes last
        return {"index": task.index}

    monkeypatch.setattr(encoding, "encode_subject", fake)
    out = encoding._encode_subjects(ctx, tasks, data, None, None, None, lambda: None, {})
    assert [o["index"] for o in out] == [0, 1, 2]
    assert {name.split("_")[0] for name, _ in seen.values()} == {"brainorg-subject"}
    assert {blas for _, blas in seen.values()} == {1}

    stopped = {}

    def failing(wctx, task, Y, *args, **kwargs):
        if task.index == 0:
            time.sleep(0.2)
            raise ValueError("subject 0 is broken")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 30:     # a long subject that checks its cancel
            if wctx.cancel.is_set():
                stopped[task.index] = time.perf_counter() - t0
                raise CancelledError("stopped")
            time.sleep(0.01)
        return {}

    monkeypatch.setattr(encoding, "encode_subject", failing)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="subject 0 is broken"):
        encoding._encode_subjects(ctx, tasks, data, None, None, None, lambda: None, {})
    assert time.perf_counter() - t0 < 5
    assert stopped and all(t < 5 for t in stopped.values())
