"""One workspace on every route: the orthogonal views beside the canvas, the other panels in tabs.

``brainorg view`` and the pipeline widget dock their panels with :func:`dock_tabbed`;
napari's Plugins menu docks each widget on its own (``add_dock_widget`` without
``tabify``), so four panels opened from the menu would stack one above the other and
push the window's minimum height past a laptop screen. Every panel of the plugin calls
:func:`join_plugin_tabs` when it is built: the first time it is shown in a dock, that
dock joins the tabs of the plugin's other docks on the same side of the window.

The orthogonal views are not a tab: they call :func:`keep_beside_canvas` instead, and
their dock takes a column of its own on the left, between napari's layer docks and the
canvas (FSLeyes' ortho layout: three views at once, the explorer's tabs on the other
side), so the crosshair can be moved while the atom table and plots are in sight.
The tabs of a tab group stand on the window's edge (vertical), so that every panel's
name is whole at the default width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QTabWidget

if TYPE_CHECKING:  # pragma: no cover
    import napari

PACKAGE = "napari_brainorg"
#: dynamic property of a dock kept in a column of its own beside the canvas (not a tab)
BESIDE_CANVAS = "brainorg_beside_canvas"
#: width (px) of the column beside the canvas, and of the tabbed panels (tab bar included),
#: at first docking, for a 1366 px window; a wider window gives them the same share of it.
#: napari's layer docks take 320 px at least, so at 1366 px the canvas keeps about 510 px
BESIDE_CANVAS_WIDTH = 178
TABS_WIDTH = 320
#: napari's layer controls and layer list: no wider than they need
NAPARI_LEFT_WIDTH = 255


def _scaled(width: int, window: QMainWindow) -> int:
    """``width`` (px, for a 1366 px window) in proportion to ``window``'s width, never less."""
    return max(width, int(width * window.width() / 1366))


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
    return (inner is not None and type(inner).__module__.startswith(PACKAGE)
            and not inner.property(BESIDE_CANVAS))


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
        short = title[: title.index(" (")]
        dock.setWindowTitle(short)
        # napari draws its own title bar, a label set once from the name
        label = getattr(dock.titleBarWidget(), "title", None)
        if label is not None and hasattr(label, "setText"):
            label.setText(short)


def tab_with_plugin_docks(dock: QDockWidget) -> bool:
    """Make ``dock`` a tab of the plugin's other docks on its side; True when it joined some."""
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return False
    area = window.dockWidgetArea(dock)
    # closed ones too: a dock napari has just added is not visible yet, and a tab group
    # keeps its place while one of its tabs is closed
    others = [d for d in plugin_docks(window, area) if d is not dock]
    if not others:  # the first panel on its side sets the tabs' width
        _short_title(dock)
        window.resizeDocks([dock], [_scaled(TABS_WIDTH, window)], Qt.Horizontal)
        return False
    if any(d in window.tabifiedDockWidgets(dock) for d in others):
        return False
    # the largest tab group so far: joining a lone dock would pull one out of the group
    anchor = max(others, key=lambda d: len(window.tabifiedDockWidgets(d)))
    window.tabifyDockWidget(anchor, dock)
    for each in (*others, dock):
        _short_title(each)
    _tabs_on_the_edge(window, area)
    dock.show()
    dock.raise_()
    # napari stacked the new dock under the others first, and Qt widened the column for it
    window.resizeDocks([dock], [_scaled(TABS_WIDTH, window)], Qt.Horizontal)
    return True


def _tabs_on_the_edge(window: QMainWindow, area) -> None:
    """Tabs of ``area`` stand vertically on the window's edge: five names fit whole in
    the window's height, where at the bottom of a 400 px dock they were cut to "Ru…"."""
    edge = {Qt.RightDockWidgetArea: QTabWidget.East, Qt.LeftDockWidgetArea: QTabWidget.West}.get(area)
    if edge is not None and window.tabPosition(area) != edge:
        window.setTabPosition(area, edge)


def _deleted_or(widget, fn) -> None:
    from ._tasks import _deleted

    if not _deleted(widget):
        fn()


#: milliseconds between two dock placements: a timer, so the window paints and answers between
PLACE_GAP_MS = 1
_PLACEMENTS: list = []


def _one_per_turn(fn) -> None:
    """Call ``fn()`` in a later turn of the event loop, after the placements asked before it,
    one per turn: ``brainorg view`` shows four panels at once, and their tabbing and resizing
    (30 to 60 ms each, a relayout of the window) in one turn froze it for a third of a second."""
    _PLACEMENTS.append(fn)
    if len(_PLACEMENTS) == 1:
        QTimer.singleShot(PLACE_GAP_MS, _place_next)


def _place_next() -> None:
    fn = _PLACEMENTS[0]
    try:
        fn()
    finally:
        _PLACEMENTS.pop(0)
        if _PLACEMENTS:
            QTimer.singleShot(PLACE_GAP_MS, _place_next)


def place_beside_canvas(dock: QDockWidget, width: int = BESIDE_CANVAS_WIDTH) -> bool:
    """Give ``dock`` a column of its own on the left, next to the canvas (once); True when moved.

    Qt's ``addDockWidget(area, dock, Qt.Horizontal)`` on the left area puts the area's
    docks so far (napari's layer controls and layer list) in one column and ``dock``
    after it, i.e. between them and the canvas.
    """
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow) or dock.isFloating() or dock.property(BESIDE_CANVAS):
        return False
    dock.setProperty(BESIDE_CANVAS, True)
    window.addDockWidget(Qt.LeftDockWidgetArea, dock, Qt.Horizontal)
    _short_title(dock)
    dock.show()
    _widths_beside_canvas(window, dock, width)
    # again once the window has laid the new column out (Qt keeps the sizes it can)
    _one_per_turn(lambda: _deleted_or(dock, lambda: _widths_beside_canvas(window, dock, width)))
    return True


def _widths_beside_canvas(window: QMainWindow, dock: QDockWidget, width: int) -> None:
    """``dock`` ``width`` px wide, napari's layer docks beside it :data:`NAPARI_LEFT_WIDTH`."""
    left = [d for d in window.findChildren(QDockWidget) if d is not dock and not d.isFloating()
            and d.isVisible() and window.dockWidgetArea(d) == Qt.LeftDockWidgetArea]
    sizes = [NAPARI_LEFT_WIDTH, _scaled(width, window)][-(len(left[:1]) + 1):]
    window.resizeDocks([*left[:1], dock], sizes, Qt.Horizontal)


class _WhenShown(QObject):
    """Event filter: on the panel's first Show inside a dock, call ``place(dock)``.

    Until then the panel asks for no height: napari's Plugins menu docks it under the
    plugin's other docks first (not as a tab), and four panels' minimum heights stacked
    would make Qt grow the window past the screen (1,459 px) before they become tabs.
    """

    def __init__(self, parent, place):
        super().__init__(parent)
        self._place = place
        parent.setMinimumHeight(1)  # an explicit minimum: the layout's is not asked for

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.Show:
            dock = dock_of(obj)
            if dock is not None:
                obj.removeEventFilter(self)
                # after the Show: the dock's area is settled when the event loop turns
                _one_per_turn(lambda dock=dock: _deleted_or(dock, lambda: self._placed(obj, dock)))
        return False

    def _placed(self, panel, dock) -> None:
        self._place(dock)
        panel.setMinimumHeight(0)  # its layout's minimum again, now that it is a tab or a column


def join_plugin_tabs(widget) -> None:
    """Have ``widget``'s dock join the plugin's tabs as soon as it is docked and shown."""
    widget.installEventFilter(_WhenShown(widget, tab_with_plugin_docks))


def keep_beside_canvas(widget) -> None:
    """Have ``widget``'s dock take a column beside the canvas as soon as it is docked and shown
    (:func:`place_beside_canvas`); it never joins the plugin's tabs."""
    widget.setProperty(BESIDE_CANVAS, True)
    widget.installEventFilter(_WhenShown(widget, place_beside_canvas))


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
