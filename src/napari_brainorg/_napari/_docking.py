"""One tabbed column of the plugin's panels, whichever route docks them.

``brainorg view`` and the pipeline widget dock their panels with :func:`dock_tabbed`;
napari's Plugins menu docks each widget on its own (``add_dock_widget`` without
``tabify``), so four panels opened from the menu would stack one above the other and
push the window's minimum height past a laptop screen. Every panel of the plugin calls
:func:`join_plugin_tabs` when it is built: the first time it is shown in a dock, that
dock joins the tabs of the plugin's other docks on the same side of the window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow

if TYPE_CHECKING:  # pragma: no cover
    import napari

PACKAGE = "napari_brainorg"


def dock_of(widget) -> QDockWidget | None:
    """The dock widget holding ``widget``, or ``None`` when it is not docked."""
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def _inner(dock: QDockWidget):
    inner = getattr(dock, "inner_widget", None)
    return inner() if callable(inner) else dock.widget()


def _is_plugin_dock(dock: QDockWidget) -> bool:
    inner = _inner(dock)
    return inner is not None and type(inner).__module__.startswith(PACKAGE)


def plugin_docks(window: QMainWindow, area=None) -> list[QDockWidget]:
    """The plugin's docks in ``window`` (in ``area`` when given), in the order they were added."""
    docks = [d for d in window.findChildren(QDockWidget) if _is_plugin_dock(d) and not d.isFloating()]
    if area is not None:
        docks = [d for d in docks if window.dockWidgetArea(d) == area]
    return docks


def _short_title(dock: QDockWidget) -> None:
    """The panel's own name on its tab: napari's Plugins menu titles it
    "Atom explorer (Brain organization in language models)", cut to "Atom expl…" in a tab."""
    title = dock.windowTitle()
    if title.endswith(")") and " (" in title:
        dock.setWindowTitle(title[: title.index(" (")])


def tab_with_plugin_docks(dock: QDockWidget) -> bool:
    """Make ``dock`` a tab of the plugin's other docks on its side; True when it joined some."""
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return False
    area = window.dockWidgetArea(dock)
    # closed ones too: a dock napari has just added is not visible yet, and a tab group
    # keeps its place while one of its tabs is closed
    others = [d for d in plugin_docks(window, area) if d is not dock]
    if not others or any(d in window.tabifiedDockWidgets(dock) for d in others):
        return False
    # the largest tab group so far: joining a lone dock would pull one out of the group
    anchor = max(others, key=lambda d: len(window.tabifiedDockWidgets(d)))
    window.tabifyDockWidget(anchor, dock)
    for each in (*others, dock):
        _short_title(each)
    dock.show()
    dock.raise_()
    return True


class _JoinWhenShown(QObject):
    """Event filter: on the panel's first Show inside a dock, tab that dock with the others."""

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.Show:
            dock = dock_of(obj)
            if dock is not None:
                obj.removeEventFilter(self)
                # after the Show: the dock's area is settled when the event loop turns
                QTimer.singleShot(0, lambda dock=dock: _safe_tab(dock))
        return False


def _safe_tab(dock) -> None:
    from ._tasks import _deleted

    if not _deleted(dock):
        tab_with_plugin_docks(dock)


def join_plugin_tabs(widget) -> None:
    """Have ``widget``'s dock join the plugin's tabs as soon as it is docked and shown."""
    widget.installEventFilter(_JoinWhenShown(widget))


def dock_tabbed(viewer: napari.Viewer, widget, name: str, raise_: bool = False):
    """Dock ``widget`` on the right, as a tab beside the plugin's other panels."""
    window = viewer.window
    docked = window.dock_widgets
    if name in docked:
        return docked[name]
    dock = window.add_dock_widget(widget, name=name, area="right", tabify=False)
    tab_with_plugin_docks(dock)
    if raise_:
        raise_dock(widget)
    return dock


def docked_widgets_with(viewer: napari.Viewer, method: str) -> list:
    """The widgets docked in ``viewer``'s window that have a method named ``method``.

    A panel reaches the atom explorer this way (``show_voxel``, ``show_region_note``)
    without importing it: the explorer sits above the panels it docks.
    """
    return [widget for widget in list(viewer.window.dock_widgets.values())
            if callable(getattr(widget, method, None))]


def raise_dock(widget) -> None:
    """Bring the dock (tab) holding ``widget`` to the front."""
    dock = dock_of(widget)
    if dock is not None:
        dock.raise_()
