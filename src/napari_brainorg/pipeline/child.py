"""Run one pipeline in a child Python process, for a caller that must stay responsive.

A pipeline run in a thread of the napari process shares that process's GIL: the
model's libraries importing, matplotlib and nilearn drawing the figures, each hold it
for hundreds of milliseconds, and the viewer freezes for as long. In a child process
the run has an interpreter of its own, and the caller's thread only waits on a pipe.

:func:`run_pipeline_in_process` has the signature and the outcome of
:func:`~napari_brainorg.pipeline.run_pipeline` (the result folder, or the same
exception class with the same message, :class:`~napari_brainorg.errors.CancelledError`
after a cancel) and relays ``progress(stage, done, total)`` as the child reports it.

The protocol, one JSON object a line on the child's standard output (anything the
libraries print goes to standard error instead)::

    {"progress": [stage, done, total]}
    {"ok": "/path/of/the/result"}
    {"error": {"type": "StoryFormatError", "message": "...", "traceback": "..."}}

The caller cancels by writing ``cancel`` to the child's standard input; the child also
cancels itself when that input closes (the caller is gone), so it never outlives it
by more than one pipeline checkpoint.

Run by hand: ``python -m napari_brainorg.pipeline.child CONFIG.json``.
"""

from __future__ import annotations

import builtins
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .. import errors
from .._progress import CancelToken, ProgressCallback, report

#: seconds a cancelled child gets to reach its next checkpoint before it is terminated
CANCEL_GRACE_S = 60.0


def _exception(kind: str, message: str) -> BaseException:
    """The exception class named ``kind`` (the package's errors, then built-ins)."""
    cls = getattr(errors, kind, None) or getattr(builtins, kind, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 - a class that needs other arguments
            pass
    return RuntimeError(f"{kind}: {message}")


def run_pipeline_in_process(config, progress: ProgressCallback | None = None,
                            cancel: CancelToken | None = None, *, python: str | None = None):
    """Run ``run_pipeline(config)`` in a child process; returns the result folder.

    Parameters
    ----------
    config : PipelineConfig
    progress : callable ``progress(stage, done, total)``, optional
        Called in the calling thread as the child reports.
    cancel : object with ``is_set()`` (a ``threading.Event``), optional
        When set, the child stops at its next checkpoint and this raises
        :class:`~napari_brainorg.errors.CancelledError`.
    python : str, optional
        The interpreter (default: this one).

    Returns
    -------
    ResultFolder
    """
    from ..io.results import ResultFolder

    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="brainorg-config-", delete=False) as f:
        json.dump(config.model_dump(mode="json"), f)
        config_path = f.name
    try:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "napari_brainorg.pipeline.child", config_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        drain = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True)
        drain.start()
        stop_watch = threading.Event()
        watcher = threading.Thread(target=_watch_cancel, args=(proc, cancel, stop_watch), daemon=True)
        watcher.start()
        outcome: dict = {}
        try:
            for line in proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "progress" in message:
                    report(progress, *message["progress"])
                else:
                    outcome = message
        finally:
            stop_watch.set()
            proc.wait()
            drain.join(timeout=5)
    finally:
        Path(config_path).unlink(missing_ok=True)
    if "ok" in outcome and proc.returncode == 0:
        return ResultFolder(outcome["ok"])
    if "error" in outcome:
        err = outcome["error"]
        exc = _exception(err.get("type", "RuntimeError"), err.get("message", ""))
        exc.__traceback_text__ = err.get("traceback", "")  # type: ignore[attr-defined]
        raise exc
    if cancel is not None and cancel.is_set():
        raise errors.CancelledError("The pipeline was cancelled.")
    tail = "".join(stderr_tail).strip().splitlines()[-5:]
    raise RuntimeError(f"The pipeline process ended with exit code {proc.returncode} and no result"
                       + (": " + " | ".join(tail) if tail else "."))


def _watch_cancel(proc: subprocess.Popen, cancel: CancelToken | None, stop: threading.Event) -> None:
    """Forward a cancel to the child; terminate it if it does not stop in time."""
    if cancel is None:
        return
    while not stop.is_set():
        if cancel.is_set():
            break
        stop.wait(0.1)
    else:
        return
    try:
        proc.stdin.write("cancel\n")
        proc.stdin.flush()
    except (OSError, ValueError):  # already gone
        return
    deadline = time.monotonic() + CANCEL_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.terminate()


def main(argv: list[str] | None = None) -> int:
    """The child's side: run the configuration in ``argv[0]`` (JSON), speaking the protocol."""
    argv = sys.argv[1:] if argv is None else argv
    # The protocol owns the real standard output; whatever else prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(message: dict) -> None:
        with lock:
            proto.write(json.dumps(message) + "\n")
            proto.flush()

    cancel = threading.Event()

    def listen() -> None:
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
        cancel.set()  # "cancel", or the caller closed the pipe (it is gone)

    threading.Thread(target=listen, daemon=True).start()
    try:
        from .config import make_config
        from .run import run_pipeline

        config = make_config(json.loads(Path(argv[0]).read_text()), source=argv[0])
        result = run_pipeline(config, progress=lambda stage, done, total: send(
            {"progress": [str(stage), int(done), int(total)]}), cancel=cancel)
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller
        import traceback

        send({"error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}})
        return 1 if not isinstance(exc, errors.CancelledError) else 3
    send({"ok": str(result.path)})
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through run_pipeline_in_process
    sys.exit(main())
