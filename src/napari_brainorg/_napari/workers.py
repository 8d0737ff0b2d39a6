"""Run the pipeline off the GUI, with overall progress, an ETA and cancellation.

:func:`start_pipeline` runs the pipeline in a child process
(:func:`~napari_brainorg.pipeline.child.run_pipeline_in_process`), waited on by a
thread (:mod:`._tasks`: safe when the viewer closes mid-run). A thread alone is not
enough: the run's imports and figure drawing hold the GIL for hundreds of
milliseconds, and the viewer would freeze for as long. The child's
``progress(stage, done, total)`` reports arrive in that thread and are relayed to the
GUI thread through a queued Qt signal, so the progress bar is only ever touched by
the GUI thread. Cancel sets a ``threading.Event``, forwarded to the child, which stops
at its next checkpoint; :class:`~napari_brainorg.errors.CancelledError` then arrives
as :attr:`PipelineJob.failed`.

:class:`OverallProgress` turns the pipeline's per-stage reports into one fraction of
the whole run (each step of each model weighted by its usual share of the time) and
an ETA from the time spent so far.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QObject, Signal

#: (phase, keywords of the pipeline's stage names, relative weight)
PHASES = (
    ("features", ("load ", " ans", "word activations"), 3.0),
    ("atoms", ("dictionary", "sparse codes", "atoms"), 3.0),
    ("fmri", ("simulate", "fmri"), 1.0),
    ("encoding", ("encoding", "ridge", "permutation", "layer-wise"), 3.0),
    ("networks", ("networks", "null", "association", "shift"), 2.0),
    ("top words", ("top words",), 0.5),
)


class OverallProgress:
    """Fraction of a whole pipeline run done, and an ETA, from ``(stage, done, total)`` reports.

    Parameters
    ----------
    n_models : int
        Features, atoms, encoding and networks run once per model.
    clock : callable
        Seconds (``time.monotonic``).
    """

    def __init__(self, n_models: int = 1, clock=time.monotonic):
        self.clock = clock
        self.started = clock()
        weights = dict((name, w) for name, _, w in PHASES)
        # the order the pipeline runs them in: features, atoms and top words per model,
        # the fMRI, then encoding and networks per model
        self.plan: list[tuple[str, int]] = []
        for m in range(n_models):
            self.plan += [("features", m), ("atoms", m), ("top words", m)]
        self.plan.append(("fmri", 0))
        for m in range(n_models):
            self.plan += [("encoding", m), ("networks", m)]
        self.weights = [weights[p] for p, _ in self.plan]
        self.total = float(sum(self.weights))
        self.position = 0  # index in plan of the phase under way
        self.within = 0.0  # fraction of that phase done
        self.stage = ""

    @staticmethod
    def phase_of(stage: str) -> str | None:
        lowered = f" {stage.lower()} "
        for name, keys, _ in PHASES:
            if any(k in lowered for k in keys):
                return name
        return None

    def update(self, stage: str, done: int, total: int) -> float:
        """Record a report; returns the fraction of the run done, in [0, 1]."""
        self.stage = stage
        phase = self.phase_of(stage)
        if phase is not None:
            # the next occurrence of this phase at or after the current position
            for i in range(self.position, len(self.plan)):
                if self.plan[i][0] == phase:
                    if i != self.position:
                        self.position, self.within = i, 0.0
                    break
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        self.within = max(self.within, frac)
        return self.fraction

    @property
    def fraction(self) -> float:
        done = sum(self.weights[: self.position]) + self.weights[self.position] * self.within
        return min(done / self.total, 1.0)

    def eta_seconds(self) -> float | None:
        """Seconds left at the pace so far (``None`` until 2 % is done)."""
        f = self.fraction
        if f < 0.02:
            return None
        elapsed = self.clock() - self.started
        return elapsed * (1.0 - f) / f

    def text(self) -> str:
        """``'42 % · dictionary 12/30 · about 1 min 10 s left'``."""
        parts = [f"{100 * self.fraction:.0f} %"]
        if self.stage:
            parts.append(self.stage)
        eta = self.eta_seconds()
        if eta is not None:
            minutes, seconds = divmod(int(round(eta)), 60)
            parts.append(f"about {minutes} min {seconds:02d} s left" if minutes else f"about {seconds} s left")
        return " · ".join(parts)


class PipelineJob(QObject):
    """One pipeline run in a child process, waited on by a worker thread.

    Signals
    -------
    progressed(str, int, int)
        ``(stage, done, total)``, in the GUI thread.
    finished_ok(object)
        The :class:`~napari_brainorg.io.results.ResultFolder`.
    failed(object)
        The exception (``CancelledError`` after :meth:`cancel`).
    """

    progressed = Signal(str, int, int)
    finished_ok = Signal(object)
    failed = Signal(object)

    def __init__(self, config, parent: QObject | None = None):
        super().__init__(parent)
        self.config = config
        self.task = None

    @property
    def cancel_event(self):
        return self.task.cancel_event if self.task is not None else None

    def start(self) -> PipelineJob:
        from ..pipeline import run_pipeline_in_process
        from ._tasks import Task

        task = Task(run_pipeline_in_process, (self.config,), {}, owner=self, name="pipeline",
                    on_done=self.finished_ok.emit, on_error=self.failed.emit,
                    on_progress=lambda report: self.progressed.emit(*report))
        task.kwargs.update(progress=lambda stage, done, total: task.emit_progress(
            (str(stage), int(done), int(total))), cancel=task.cancel_event)
        self.task = task.start()
        return self

    def cancel(self) -> None:
        """Ask the pipeline to stop at its next checkpoint."""
        if self.task is not None:
            self.task.cancel()

    @property
    def running(self) -> bool:
        return self.task is not None and self.task.running


def start_pipeline(config, parent: QObject | None = None) -> PipelineJob:
    """Start ``run_pipeline(config)`` in a child process; returns the running job."""
    return PipelineJob(config, parent).start()
