"""The warnings a run shows, kept for ``warnings.json`` and the report."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager


@contextmanager
def record_warnings():
    """Keep a record of the warnings shown while the block runs (they are still shown).

    Yields a list that fills with ``{"category", "message", "source", "count"}`` dicts,
    one per distinct warning that Python's filters let through (the ones a user sees),
    for ``warnings.json`` and the report; ``count`` is how often it was shown (a step
    that loads an atlas several times warns each time).
    """
    caught: list[dict] = []
    seen: dict[tuple, dict] = {}
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        entry = {"category": getattr(category, "__name__", str(category)), "message": str(message),
                 "source": f"{os.path.basename(str(filename))}:{lineno}"}
        key = tuple(entry.values())
        if key in seen:
            seen[key]["count"] += 1
        else:
            seen[key] = {**entry, "count": 1}
            caught.append(seen[key])
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield caught
    finally:
        if warnings.showwarning is showwarning:
            warnings.showwarning = previous

