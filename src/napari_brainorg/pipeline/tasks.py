"""Where the pipeline's tasks run: in this process one after another, or on Dask.

The pipeline splits into tasks that take paths and parameters and write their artifact
into the result folder (``features``/``atoms``/``top_words`` per model, encoding per
model x subject, the network tests per model); the group steps read those files. An *executor* runs a list of tasks:

- :class:`SequentialExecutor` (the default): in this process, in order; Dask is not
  imported.
- :class:`DaskExecutor`: on a ``dask.distributed`` cluster, either a ``LocalCluster`` of
  ``jobs`` worker processes started for the run (``brainorg run --jobs N``) or an
  existing cluster (``--scheduler ADDRESS``, e.g. one that ``dask-jobqueue`` started on
  SLURM). Each worker's BLAS gets ``cores / workers`` threads, so that N workers do not
  start N x cores BLAS threads.

Workers never take the result folder's lock: the run that submitted the tasks holds it,
and every file a task writes is its own (written atomically). The tasks' warnings are
raised again in the submitting process (so ``warnings.json`` records them), their
progress is reported there as tasks finish, and a cancel cancels the pending futures.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .._backend import available_cores
from .._progress import CancelToken, ProgressCallback, check_cancel, report
from ..errors import ConfigError, MissingDependencyError

_log = logging.getLogger(__name__)

#: environment variables that size the BLAS / OpenMP thread pools of a worker process
BLAS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
            "NUMEXPR_NUM_THREADS")




def blas_threads_per_worker(n_workers: int, threads_per_worker: int = 1, cores: int | None = None) -> int:
    """BLAS threads for each task so that ``n_workers`` x ``threads_per_worker`` tasks at
    once use at most ``cores`` cores (at least 1)."""
    cores = available_cores() if cores is None else int(cores)
    return max(1, cores // max(1, int(n_workers) * int(threads_per_worker)))


class SequentialExecutor:
    """Runs each task in this process, in order (the default; no Dask)."""

    name = "sequential"
    n_workers = 1

    def scatter(self, value):
        return value

    def map(self, fn: Callable, arguments: Sequence[tuple], *, stage: str | None = None,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list:
        out = []
        for i, args in enumerate(arguments):
            check_cancel(cancel)
            out.append(fn(*args))
            if stage:
                report(progress, stage, i + 1, len(arguments))
        return out

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"executor": "sequential"}


def _run_task(fn: Callable, args: tuple, blas_threads: int | None) -> tuple[Any, list[tuple[str, type]]]:
    """On a worker: ``fn(*args)`` with the BLAS pools limited, its warnings recorded."""
    from threadpoolctl import threadpool_limits

    if blas_threads is None:  # an existing cluster: share this machine's cores among the worker's threads
        try:
            from distributed import get_worker

            worker = get_worker()
            nthreads = getattr(worker, "nthreads", None) or getattr(getattr(worker, "state", None), "nthreads", 1)
        except (ImportError, ValueError):
            nthreads = 1
        blas_threads = blas_threads_per_worker(1, nthreads)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=int(blas_threads)):
        warnings.simplefilter("always")
        result = fn(*args)
    return result, [(str(w.message), w.category) for w in caught]


class DaskExecutor:
    """Runs tasks on a ``dask.distributed`` cluster.

    Parameters
    ----------
    jobs : int, optional
        Start a ``LocalCluster`` of this many workers for the run (closed at the end).
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``) or a scheduler file
        (``.json``); its workers must import this package and reach the result folder
        at the same path.
    processes : bool
        With ``jobs``: worker processes (default) or threads of this process.
    """

    name = "dask"

    def __init__(self, jobs: int | None = None, scheduler: str | None = None, processes: bool = True):
        if (jobs is None) == (scheduler is None):
            raise ConfigError("DaskExecutor needs exactly one of 'jobs' (a local cluster) or 'scheduler' "
                              f"(an address); jobs={jobs!r} and scheduler={scheduler!r} were provided.")
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise MissingDependencyError(
                "--jobs and --scheduler need dask.distributed; install it with "
                "pip install 'napari-brainorg[dask]' (or pip install 'dask[distributed]').") from None
        self.cluster = None
        if scheduler is not None:
            kwargs = ({"scheduler_file": scheduler} if str(scheduler).endswith(".json")
                      else {"address": scheduler})
            try:
                self.client = Client(timeout="30s", **kwargs)
            except OSError as exc:
                raise ConfigError(f"--scheduler {scheduler!r}: no Dask scheduler answered ({exc}); expected "
                                  "the address of a running scheduler (tcp://host:8786) or its scheduler "
                                  "file.") from None
            self.blas_threads = None  # decided on each worker from its own cores
            self.n_workers = max(1, len(self.client.scheduler_info().get("workers", {})))
            self.address = str(scheduler)
        else:
            jobs = int(jobs)
            if jobs < 1:
                raise ConfigError(f"--jobs must be an integer >= 1; {jobs!r} was provided.")
            self.blas_threads = blas_threads_per_worker(jobs)
            env = {name: str(self.blas_threads) for name in BLAS_ENV}
            kwargs: dict[str, Any] = {"n_workers": jobs, "threads_per_worker": 1, "processes": processes,
                                      "dashboard_address": None}
            if processes:
                kwargs["env"] = env  # read by BLAS when the worker process starts
            self.cluster = LocalCluster(**kwargs)
            self.client = Client(self.cluster)
            self.n_workers = jobs
            self.address = self.cluster.scheduler_address
        _log.info("dask: %d worker(s) at %s%s", self.n_workers, self.address,
                  f", {self.blas_threads} BLAS thread(s) each" if self.blas_threads else "")

    def describe(self) -> dict:
        return {"executor": "dask", "n_workers": self.n_workers,
                "scheduler": "local" if self.cluster is not None else self.address,
                "blas_threads_per_worker": self.blas_threads}

    def scatter(self, value):
        """Send a large argument to the workers once (a future that tasks take as argument).

        Wrapped in a list, so that a dict, list or tuple travels as one object (scattered
        directly, a dict's keys would become the futures' names and collide).
        """
        return self.client.scatter([value], broadcast=False, hash=False)[0]

    def map(self, fn: Callable, arguments: Sequence[tuple], *, stage: str | None = None,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list:
        """``[fn(*args) for args in arguments]`` on the cluster, results in order.

        Progress is reported as tasks finish; when ``cancel`` is set the pending futures
        are cancelled and :class:`~napari_brainorg.errors.CancelledError` is raised.
        """
        check_cancel(cancel)
        futures = [self.client.submit(_run_task, fn, tuple(args), self.blas_threads, pure=False)
                   for args in arguments]
        total = len(futures)
        if stage:
            report(progress, stage, 0, total)
        pending = list(futures)
        try:
            while pending:
                if cancel is not None and cancel.is_set():
                    self.client.cancel(pending)
                    check_cancel(cancel)
                done = [f for f in pending if f.done()]
                if not done:
                    time.sleep(0.1)
                    continue
                pending = [f for f in pending if not f.done()]
                for f in done:
                    if f.status != "finished":
                        f.result()  # raises the task's exception (or CancelledError) here
                if stage:
                    report(progress, stage, total - len(pending), total)
        except BaseException:
            self.client.cancel(pending)
            raise
        out = []
        for f in futures:
            result, caught = f.result()
            for message, category in caught:
                warnings.warn(message, category, stacklevel=2)
            out.append(result)
        return out

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def make_executor(jobs: int | None = None, scheduler: str | None = None):
    """The executor of a run: sequential by default, Dask with ``jobs`` or ``scheduler``."""
    if jobs is not None and scheduler is not None:
        raise ConfigError(f"Give --jobs or --scheduler, not both (jobs={jobs!r}, scheduler={scheduler!r}).")
    if scheduler is not None:
        return DaskExecutor(scheduler=scheduler)
    if jobs is None or int(jobs) == 1:
        return SequentialExecutor()
    return DaskExecutor(jobs=jobs)
