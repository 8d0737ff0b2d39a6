"""Progress reporting and cancellation, shared by every long computation.

Science functions take ``progress=None`` and ``cancel=None``:

- ``progress`` is a callable ``progress(stage: str, done: int, total: int)``;
  the command line turns it into tqdm bars, napari into a progress bar.
- ``cancel`` is anything with an ``is_set()`` method (a ``threading.Event``);
  :func:`check_cancel` raises :class:`~napari_brainorg.errors.CancelledError`
  once it is set, so a long job stops between two chunks of work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .errors import CancelledError

ProgressCallback = Callable[[str, int, int], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`CancelledError` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise CancelledError("The job was cancelled by the user.")


def report(progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    """Call ``progress(stage, done, total)`` when a callback was given."""
    if progress is not None:
        progress(stage, int(done), int(total))


class TqdmProgress:
    """A ``progress`` callback that shows one tqdm bar per stage (command line)."""

    def __init__(self, disable: bool = False):
        self._bars: dict[str, object] = {}
        self.disable = disable

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            bar = tqdm(total=total, desc=stage, disable=self.disable, leave=True, dynamic_ncols=True)
            self._bars[stage] = bar
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()
        if total and done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
