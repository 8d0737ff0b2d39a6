"""Two models side by side: the selected atom and its best match in another model.

For the atom selected in the :class:`~.explorer.AtomExplorer`, this dock widget finds the
atom of a second model of the same result whose time course correlates best with it
(Pearson r over the story's volumes; the largest ``|r|``, its sign shown: a dictionary
atom and its negative are the same direction), and shows both maps on the current
axial slice (same template, threshold and colour scale rules as the main view) with
both time courses, r printed. The next best matches are listed; a click on one shows it.

The second model's maps and time courses are read once in a worker thread; a new atom
only picks a row of a precomputed correlation matrix and draws two small images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from . import layers as _layers
from ._plots import _FG, TimecourseCanvas
from .orthoviews import SlicePanel, VolumeSource, on_screen, render_layers

if TYPE_CHECKING:  # pragma: no cover
    import napari

PANEL_NAME = "Compare models"
N_LISTED = 5


def timecourse_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between every column of ``a`` and every column of ``b``.

    Parameters
    ----------
    a : ndarray of shape (n_volumes, k_a)
    b : ndarray of shape (n_volumes, k_b)

    Returns
    -------
    ndarray of shape (k_a, k_b)
        ``nan`` where a column is constant.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"The two models' atom time courses have {a.shape[0]} and {b.shape[0]} volumes; "
                         "expected the same story, hence the same number of volumes.")
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a.T @ b) / np.outer(na, nb)


def best_matches(r: np.ndarray, n: int = N_LISTED) -> np.ndarray:
    """Indices of the ``n`` atoms with the largest ``|r|`` (``r`` of shape (k_b,)), best first."""
    score = np.nan_to_num(np.abs(np.asarray(r, float)), nan=-1.0)
    return np.argsort(-score, kind="stable")[:n]


class _CompareCanvas(TimecourseCanvas):
    """Both atoms' time courses (the match's sign flipped when r < 0, so they overlay)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.ax.set_title("time courses (hover for the words)", fontsize=9, color=_FG, loc="left")
        (self.other_line,) = self.ax.plot([], [], color="#7fd3ff", lw=1.0, animated=True)

    def _animated(self) -> list:
        return [self.line, self.other_line, self.cursor, self.words_text]

    def set_pair(self, selected: np.ndarray, match: np.ndarray) -> None:
        self.timecourse = np.asarray(selected, float)
        times = np.arange(self.timecourse.size) * self.tr
        self.line.set_data(times, self.timecourse)
        self.other_line.set_data(times, np.asarray(match, float))
        self.fit_axes(np.column_stack([self.timecourse, np.asarray(match, float)]))
        self.full_redraw()


class ModelComparison(QWidget):
    """Dock widget: the explorer's atom beside its best-matching atom of another model.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    explorer : AtomExplorer
        Followed: its result, model, selected atom and threshold (its ``state``, ``atom``
        and ``threshold_slider``, its ``loaded`` and ``atom_shown`` signals). The explorer
        docks this panel and passes itself in; this module does not import it.

    Signals
    -------
    ready(str)
        The second model's data are loaded (argument: its name).
    """

    ready = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, explorer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.explorer = explorer
        self.other: dict | None = None  # model, maps, timecourses, r (k_a, k_b), for (result, model)
        self.match: int | None = None
        self.r: float | None = None
        self._loading = None
        self._pending = False
        self._scheduled = False

        self.model_combo = QComboBox()
        self.model_combo.setToolTip("The second model of this result")
        self.model_combo.activated.connect(lambda _i: self._load_other())
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.left = SlicePanel("axial", self)
        self.right = SlicePanel("axial", self)
        for panel in (self.left, self.right):
            panel.setToolTip("The axial slice shown in napari; the same threshold as the atom map")
            panel.setMinimumSize(120, 140)
            panel.show_cross = False
            panel.on_paint = self._on_panel_paint
            panel.show_position = False
        self.left_title, self.right_title = QLabel(""), QLabel("")
        for label in (self.left_title, self.right_title):
            label.setWordWrap(True)
            label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.timecourse = _CompareCanvas(self)
        self.timecourse.setMinimumHeight(120)
        self.timecourse.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
        self.matches = QListWidget()
        self.matches.setToolTip("The atoms of the second model whose time courses correlate best; click to show one")
        self.matches.setMaximumHeight(6 * self.matches.fontMetrics().height() + 12)
        self.matches.currentRowChanged.connect(self._on_match_row)

        top = QHBoxLayout()
        top.addWidget(QLabel("compare with"))
        top.addWidget(self.model_combo, 1)
        maps = QHBoxLayout()
        for title, panel in ((self.left_title, self.left), (self.right_title, self.right)):
            column = QVBoxLayout()
            column.setSpacing(0)
            column.addWidget(title)
            column.addWidget(panel, 1)
            maps.addLayout(column, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(3)
        layout.addLayout(top)
        layout.addWidget(self.info)
        layout.addLayout(maps, 3)
        layout.addWidget(self.timecourse, 2)
        matches_title = QLabel("best matches (Pearson r of the time courses)")
        matches_title.setWordWrap(True)  # never what sets the dock's width
        matches_title.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        layout.addWidget(matches_title)
        layout.addWidget(self.matches)

        explorer.loaded.connect(lambda _state: self._on_explorer_loaded())
        explorer.atom_shown.connect(lambda _atom: self.update_match())
        explorer.threshold_slider.valueChanged.connect(lambda _v: self._draw_maps())
        self.viewer.dims.events.point.connect(self._on_dims)
        from . import display

        display._camera(self.viewer).events.orientation.connect(lambda _e=None: self._draw_maps())
        if explorer.state is not None:
            self._on_explorer_loaded()

    # -- loading the second model ----------------------------------------------------------
    def _on_explorer_loaded(self) -> None:
        from ._tasks import _deleted

        if _deleted(self):
            return
        state = self.explorer.state
        others = [m for m in state.result.models if m != state.model]
        current = self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(others)
        if current in others:
            self.model_combo.setCurrentText(current)
        self.model_combo.blockSignals(False)
        if not others:
            self.other, self.match, self.r = None, None, None
            self.matches.clear()
            for panel, title in ((self.left, self.left_title), (self.right, self.right_title)):
                panel.image = None
                panel.update()
                title.setText("")
            self.info.setText(f"{state.result.path.name} holds one model ({state.model}): nothing to compare. "
                              "A result with several models (features.models) shows each atom beside its "
                              "best match here.")
            return
        self._load_other()

    def _load_other(self) -> None:
        from ._tasks import run_in_thread

        state = self.explorer.state
        model = self.model_combo.currentText()
        if state is None or not model:
            return
        key = (str(state.result.path), state.model, model, state.maps.stat)
        if self.other is not None and self.other["key"] == key:
            self.update_match()
            return
        self._loading = key
        self.info.setText(f"Loading {model} …")
        result, stat, timecourses = state.result, state.maps.stat, state.timecourses

        def load():
            maps = _layers.AtomMaps.from_result(result, model, stat=stat)
            other_courses = result.atom_timecourses(model)
            return {"key": key, "model": model, "maps": maps, "timecourses": other_courses,
                    "r": timecourse_correlation(timecourses, other_courses)}

        def done(other):
            if self._loading != key:
                return
            self._loading = None
            self.other = other
            self.ready.emit(model)
            self.update_match()

        def failed(exc):
            from napari.utils.notifications import show_error

            if self._loading == key:
                self._loading = None
            self.info.setText(f"Could not compare with {model}: {exc}")
            show_error(f"Compare models: could not load {model!r}: {exc}")

        run_in_thread(load, owner=self, name="compare models", on_done=done, on_error=failed)

    # -- the match of the selected atom ------------------------------------------------------
    def update_match(self, match: int | None = None) -> None:
        """Show the explorer's atom beside ``match`` (its best match when ``None``)."""
        from ._tasks import _deleted

        if _deleted(self):
            return
        if not on_screen(self):  # a tab behind another: an atom click stays cheap; drawn when shown
            self._pending = True
            return
        self._pending = False
        state, other, atom = self.explorer.state, self.other, self.explorer.atom
        if state is None or other is None or atom is None or other["key"][:2] != (str(state.result.path), state.model):
            return
        if other["key"][3] != state.maps.stat:
            self._load_other()
            return
        row = other["r"][atom]
        order = best_matches(row)
        if match is None:
            match = int(order[0])
        self.match, self.r = int(match), float(row[match])
        self.matches.blockSignals(True)
        self.matches.clear()
        for j in order:
            self.matches.addItem(f"atom {int(j)} of {other['model']}: r = {row[j]:+.2f}")
        listed = list(map(int, order))
        self.matches.setCurrentRow(listed.index(self.match) if self.match in listed else -1)
        self.matches.blockSignals(False)
        best = " (best)" if self.match == int(order[0]) else ""
        self.info.setText(f"<b>atom {atom}</b> of {state.model} ↔ <b>atom {self.match}</b> of {other['model']}"
                          f"{best}: time-course r = <b>{self.r:+.2f}</b>"
                          + (" (sign flipped in the plot)" if self.r < 0 else "")
                          + "; maps on napari's axial slice")
        self.timecourse.set_story(state.result.tr, state.words)
        flip = -1.0 if self.r < 0 else 1.0
        self.timecourse.set_pair(state.timecourses[:, atom], flip * other["timecourses"][:, self.match])
        self.left_title.setText(f"atom {atom} of {state.model}")
        self.right_title.setText(f"atom {self.match} of {other['model']}, r = {self.r:+.2f}")
        self._draw_maps()

    def _on_match_row(self, row: int) -> None:
        if row < 0 or self.other is None or self.explorer.atom is None:
            return
        order = best_matches(self.other["r"][self.explorer.atom])
        if row < len(order):
            self.update_match(int(order[row]))

    def _on_dims(self, event=None) -> None:
        from ._tasks import _deleted

        if not _deleted(self):
            self._draw_maps()

    def _on_panel_paint(self) -> None:
        if self._pending and not self._scheduled:  # shown again: what changed meanwhile
            self._scheduled = True
            QTimer.singleShot(0, self._update_if_alive)

    def _update_if_alive(self) -> None:
        from ._tasks import _deleted, _report

        self._scheduled = False
        if _deleted(self):
            return
        try:
            self.update_match()
        except Exception as exc:  # noqa: BLE001 - never raise into Qt
            _report(exc, "compare models")

    def _z(self) -> float:
        dims = self.viewer.dims
        return float(dims.point[dims.ndim - 3]) if dims.ndim >= 3 else 0.0

    def _draw_maps(self, force: bool = False) -> None:
        """Both maps on napari's axial slice, over the viewer's template, with its threshold
        (only while the panel is on screen, unless ``force``)."""
        if not (force or on_screen(self)):
            self._pending = True
            return
        if self.other is None or self.match is None or self.explorer.state is None:
            return
        z = self._z()
        template = _layers.find_layer(self.viewer, "template")
        atom_layer = _layers.find_layer(self.viewer, "atom_map")
        base = [template] if template is not None else []
        left = base + ([atom_layer] if atom_layer is not None else [])
        maps = self.other["maps"]
        threshold = float(atom_layer.metadata.get("threshold", maps.default_threshold())) if atom_layer is not None \
            else maps.default_threshold()
        limit = float(maps.color_limit)
        source = VolumeSource(maps.volume(self.match), maps.affine,
                              _layers.diverging_threshold_colormap(threshold, limit), (-limit, limit))
        for panel, layers in ((self.left, left), (self.right, base + [source])):
            panel.set_rgb(render_layers(layers, "axial", z))
            panel.position = z
        self.z_label = z


def dock_comparison(viewer: napari.Viewer, explorer, raise_: bool = False) -> ModelComparison:
    """Dock the :class:`ModelComparison` of ``explorer`` (the atom explorer) as a tab on the right (once)."""
    docked = viewer.window.dock_widgets
    if PANEL_NAME in docked and isinstance(docked[PANEL_NAME], ModelComparison):
        return docked[PANEL_NAME]
    panel = ModelComparison(viewer, explorer)
    _layers.dock_tabbed(viewer, panel, PANEL_NAME, raise_=raise_)
    return panel
