"""Is a Qt binding installed? Asked before napari is imported, so its absence is one line."""

from __future__ import annotations


def check_qt_binding() -> None:
    """Raise :class:`~napari_brainorg.errors.MissingDependencyError` when no Qt binding imports.

    napari needs one of PyQt6, PySide6, PyQt5 or PySide2; qtpy finds whichever is installed
    and raises an ImportError when there is none.
    """
    try:
        import qtpy  # noqa: F401
    except ImportError as exc:
        from ..errors import MissingDependencyError

        raise MissingDependencyError(
            "napari needs a Qt binding and none is installed; install one with "
            '`pip install "napari-brainorg[qt]"` (PyQt6).'
        ) from exc
