"""Background work that can never take the viewer down.

Every slow thing the plugin does (loading a result's atoms, building the sample,
reading a model's layers, running the pipeline) goes through :func:`run_in_thread`:
a plain ``threading.Thread`` computes, and a small relay ``QObject`` (created in the
GUI thread, kept alive in a module-level set until the work is over) carries the
outcome back to the GUI thread through queued signals.

Why not napari's/superqt's ``thread_worker``: closing the viewer while one runs
deletes Qt objects that the worker still signals through
(``RuntimeError: wrapped C/C++ object of type WorkerBaseSignals has been deleted``),
and under PyQt6 an exception escaping a slot aborts the process. Here:

- the relay has no Qt parent and is referenced from Python until the thread ends, so
  nothing it signals through is deleted under it;
- each callback is skipped when the widget it belongs to (``owner``) has been
  deleted, and any exception it raises is reported (napari notification, or stderr
  without a viewer), never re-raised into Qt;
- at exit, running tasks are asked to cancel and are joined for a few seconds.
"""

from __future__ import annotations

import atexit
import sys
import threading
import traceback
from typing import Any, Callable

from qtpy.QtCore import QObject, Signal

_ALIVE: set = set()
_LOCK = threading.Lock()


def _deleted(obj) -> bool:
    if obj is None:
        return False
    try:
        from qtpy import sip  # PyQt
    except ImportError:  # pragma: no cover - PySide
        try:
            import shiboken6

            return not shiboken6.isValid(obj)
        except ImportError:
            return False
    try:
        return sip.isdeleted(obj)
    except TypeError:
        return False


def _report(exc: BaseException, where: str) -> None:
    try:
        from napari.utils.notifications import show_error

        show_error(f"napari-brainorg ({where}): {type(exc).__name__}: {exc}")
    except Exception:  # noqa: BLE001 - never raise from the reporter
        print(f"napari-brainorg ({where}): {type(exc).__name__}: {exc}", file=sys.stderr)


def viewer_alive(viewer) -> bool:
    """False once the viewer's window was closed (a viewer without a window is alive)."""
    window = getattr(viewer, "window", None)
    if window is None:
        return True
    qt_window = getattr(window, "_qt_window", None)
    return qt_window is not None and not _deleted(qt_window)


class _Relay(QObject):
    done = Signal(object)
    error = Signal(object)
    progress = Signal(object)


class Task:
    """One function running in a thread; see :func:`run_in_thread`.

    Attributes
    ----------
    cancel_event : threading.Event
        Set by :meth:`cancel`; the function gets it as ``cancel=`` when it accepts one.
    """

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, *, owner=None,
                 on_done: Callable | None = None, on_error: Callable | None = None,
                 on_progress: Callable | None = None, name: str = "task"):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.owner = owner
        self.name = name
        self.cancel_event = threading.Event()
        self.relay = _Relay()
        self._callbacks = {"done": on_done, "error": on_error, "progress": on_progress}
        self.relay.done.connect(lambda value: self._deliver("done", value, final=True))
        self.relay.error.connect(lambda exc: self._deliver("error", exc, final=True))
        self.relay.progress.connect(lambda value: self._deliver("progress", value))
        self.thread = threading.Thread(target=self._run, name=f"napari-brainorg {name}", daemon=True)
        self.finished = False

    # worker thread
    def _run(self) -> None:
        try:
            value = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread
            exc.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            self._emit(self.relay.error, exc)
        else:
            self._emit(self.relay.done, value)

    def _emit(self, signal, value) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the relay is gone: the application is shutting down
            pass

    def emit_progress(self, value: Any) -> None:
        """Send ``value`` to ``on_progress`` in the GUI thread (call from the worker thread)."""
        self._emit(self.relay.progress, value)

    # GUI thread
    def _deliver(self, kind: str, value, final: bool = False) -> None:
        try:
            callback = self._callbacks.get(kind)
            if callback is not None and not _deleted(self.owner):
                callback(value)
            elif kind == "error" and callback is None:
                _report(value, self.name)
        except Exception as exc:  # noqa: BLE001 - a slot must not raise into Qt
            _report(exc, f"{self.name}, {kind}")
        finally:
            if final:
                self.finished = True
                with _LOCK:
                    _ALIVE.discard(self)

    def start(self) -> Task:
        with _LOCK:
            _ALIVE.add(self)
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        return self.thread.is_alive() or (self.thread.ident is not None and not self.finished)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


#: seconds a thread holding Python's GIL keeps it once another thread asks for it (Python's
#: default: 5 ms). Every Qt call of the GUI thread lets the GIL go; a busy worker (numba's
#: compiler, imports, reading) then holds it up to this long before the GUI thread gets it
#: back, and a turn of the event loop with hundreds of Qt calls took three to four times
#: its own time while a worker ran. 1 ms: a turn takes its own time, the worker a few
#: per cent longer.
GUI_SWITCH_INTERVAL_S = 0.001


def gui_first_switching() -> None:
    """Make a busy worker thread hand the GIL back to the GUI thread within
    :data:`GUI_SWITCH_INTERVAL_S` (for this process; never lengthens a shorter interval)."""
    import sys

    if sys.getswitchinterval() > GUI_SWITCH_INTERVAL_S:
        sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)


def run_in_thread(fn: Callable, *args, owner=None, on_done: Callable | None = None,
                  on_error: Callable | None = None, on_progress: Callable | None = None,
                  name: str = "task", **kwargs) -> Task:
    """Run ``fn(*args, **kwargs)`` in a thread; call back in the GUI thread.

    Parameters
    ----------
    fn : callable
    owner : QObject, optional
        Callbacks are skipped once it is deleted (a closed dock widget).
    on_done, on_error, on_progress : callable, optional
        ``on_done(value)``, ``on_error(exception)``, ``on_progress(value)`` (what the
        function passes to :meth:`Task.emit_progress`). An error without ``on_error``
        becomes a napari notification.

    Returns
    -------
    Task
        Already started.
    """
    gui_first_switching()
    return Task(fn, args, kwargs, owner=owner, on_done=on_done, on_error=on_error,
                on_progress=on_progress, name=name).start()


def running_tasks() -> list[Task]:
    with _LOCK:
        return [t for t in _ALIVE if t.thread.is_alive()]


def shutdown(timeout: float = 10.0) -> None:
    """Ask every running task to cancel and wait up to ``timeout`` seconds for them."""
    import time

    tasks = running_tasks()
    for task in tasks:
        task.cancel()
    end = time.monotonic() + timeout
    for task in tasks:
        task.join(max(0.0, end - time.monotonic()))


atexit.register(shutdown)
