"""Run the pipeline off the GUI thread, with progress and cancellation.

:func:`start_pipeline` runs ``run_pipeline(config, progress, cancel)`` in a worker
thread (superqt's, which napari.qt.threading wraps). The pipeline's ``progress(stage, done, total)`` callback is called
in that thread; it is relayed to the GUI thread through a Qt signal (a queued
connection), so the progress bar is only ever touched by the GUI thread. Cancel
sets a ``threading.Event`` that the pipeline checks between chunks of work; it
then raises :class:`~napari_brainorg.errors.CancelledError`, which arrives as the
worker's ``errored`` signal.
"""

from __future__ import annotations

import threading

from qtpy.QtCore import QObject, Signal


class PipelineJob(QObject):
    """One pipeline run in a worker thread.

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
        self.cancel_event = threading.Event()
        self.worker = None

    def _progress(self, stage: str, done: int, total: int) -> None:
        self.progressed.emit(str(stage), int(done), int(total))

    def start(self) -> PipelineJob:
        # superqt's worker (the one under napari.qt.threading) without napari's relay of
        # errors to the notification manager: the widget reports failures itself, and a
        # cancelled run is not an error
        from superqt.utils import create_worker

        from ..pipeline import run_pipeline

        self.worker = create_worker(run_pipeline, self.config, progress=self._progress,
                                    cancel=self.cancel_event, _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self.finished_ok.emit)
        self.worker.errored.connect(self.failed.emit)
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Ask the pipeline to stop at its next checkpoint."""
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running


def start_pipeline(config, parent: QObject | None = None) -> PipelineJob:
    """Start ``run_pipeline(config)`` in a worker thread; returns the running job."""
    return PipelineJob(config, parent).start()
