"""The tiny finished study shared by the fault matrix and the rerun/interrupt tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_study as tiny  # noqa: E402


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> Path:
    """The tiny study and its finished result: one real `brainorg run`, copied by each case."""
    folder = tmp_path_factory.mktemp("study") / "study"
    tiny.make_study(folder)
    done = tiny.brainorg(["run", "study.yaml", "--quiet"], cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "result/summary.json").is_file()
    return folder


@pytest.fixture(scope="module", autouse=True)
def _one_thread_like_the_cli():
    """In-process runs use one thread, as the command-line runs of these tests do
    (OMP_NUM_THREADS=1): sums in another order would differ in the last bits, and a
    sparse code at its threshold can flip, so results could not be compared exactly."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)
