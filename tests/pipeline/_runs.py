"""A result folder reduced to the shared steps of a run, for tests that rerun the rest."""

from __future__ import annotations

import shutil

#: what a rerun of the shared steps recomputes (everything else is reused by content)
_RECOMPUTED = ("encoding", "networks", "maps", "comparison", "figures")


def shared_steps_of(source, out) -> None:
    """A folder holding only the quick run's shared steps (story, features, atoms,
    simulated subjects) and their stamps, for a rerun of the rest."""
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(".napari-brainorg.lock", ".napari-brainorg.run.json"))
    for name in _RECOMPUTED:
        shutil.rmtree(out / name, ignore_errors=True)
        shutil.rmtree(out / ".cache" / name, ignore_errors=True)
    for name in ("summary.json", "report.html", "recovery.json", "warnings.json", "provenance.json"):
        (out / name).unlink(missing_ok=True)
    for stamp in (out / ".cache").glob("statmaps_*.json"):
        stamp.unlink()
