"""Atom explorer: a sortable table of atoms; clicking one shows its map, time course and layers.

The explorer follows the viewer: when a result's layers appear (opened with the
reader, ``brainorg view`` or the pipeline widget) it loads that result's atom maps
in a worker thread, keeps them in memory (:class:`~.layers.AtomMaps`), and from
then on a click or a threshold move only swaps data or a colormap in place.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from . import layers as _layers
from ._atom_table import COLUMNS, FORMATS, HEADER_TIPS, atom_rows
from ._docking import join_plugin_tabs
from ._explorer_pages import TopWordsPage, VoxelPage, course_text, r2_source
from ._plots import LayerHistogramCanvas, TimecourseCanvas
from ._table_items import SortableItem

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import pandas

    from ..io.results import ResultFolder


@dataclass
class ExplorerState:
    """Everything the explorer shows for one model of one result, loaded once."""

    result: ResultFolder
    model: str
    maps: _layers.AtomMaps
    timecourses: np.ndarray  # (n_volumes, k)
    layer_hist: pandas.DataFrame | None  # k rows x layer columns
    rows: pandas.DataFrame
    words: list[str]
    top_words: pandas.DataFrame | None = None
    #: the run's stories (:meth:`ResultFolder.stories`), read when the top words are first shown
    stories: list[dict] | None = None


def load_state(path: str | Path, model: str | None = None, stat: str = "z") -> ExplorerState:
    """Read what the explorer needs from a result folder (runs in a worker thread)."""
    from ..io.results import ResultFolder

    result = ResultFolder(path)
    if model is None:
        if not result.models:
            raise ValueError(f"{str(result.path)!r} holds no model results.")
        model = result.models[0]
    maps = _layers.AtomMaps.from_result(result, model, stat=stat)
    timecourses = result.atom_timecourses(model)
    rows = atom_rows(result, model, n_atoms=maps.n_atoms)
    top = result.top_words(model) if hasattr(result, "top_words") else None
    return ExplorerState(result=result, model=model, maps=maps, timecourses=timecourses,
                         layer_hist=result.layer_histogram(model), rows=rows,
                         words=result.words_per_volume(), top_words=top)


_SortableItem = SortableItem  # the name tests and older code use
#: colour of a warning (amber: no map colour, readable on the dark theme)
_WARN = "#ffb000"
_LINK = "#8ab4f8"  # a link readable on the dark theme


class AtomExplorer(QWidget):
    """Dock widget: the atoms of a result, their maps, time courses and layer histograms.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Signals
    -------
    loaded(object)
        A result's atoms are ready (argument: :class:`ExplorerState`).
    atom_shown(int)
        An atom's map is in the map layer.
    """

    loaded = Signal(object)
    atom_shown = Signal(int)
    failed = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        join_plugin_tabs(self)  # from the Plugins menu too: a tab beside the plugin's other panels
        self.viewer = napari_viewer
        self.state: ExplorerState | None = None
        #: the state whose table, plots and map are all on screen
        self.shown_state: ExplorerState | None = None
        self.atom: int | None = None
        self._worker = None
        self._loading: tuple[str, str | None, str] | None = None
        self._own_layer = False

        self._build_controls()
        self._build_table()
        self._build_plots()
        self._lay_out()
        self._set_enabled(False)
        self._follow_viewer()

    # -- construction ---------------------------------------------------------------------
    def _build_controls(self) -> None:
        """The header, the Open button and the controls of what the map shows: model, statistic,
        map and R² thresholds (the left/right convention is in the Ortho views)."""
        self.header = QLabel("Open a result folder (File ▸ Open Folder…) or run the pipeline.")
        self.header.setWordWrap(True)
        self.atom_label = QLabel("")
        self.atom_label.setWordWrap(True)
        # a fixed height: new text for each atom must not re-lay-out the whole panel
        self.atom_label.setFixedHeight(2 * self.atom_label.fontMetrics().lineSpacing() + 8)
        self.atom_label.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Open a napari-brainorg result folder")
        self.open_button.clicked.connect(self._choose_folder)
        self.model_combo = QComboBox()
        self.model_combo.activated.connect(self._on_model_chosen)
        self.stat_combo = QComboBox()
        self.stat_combo.addItems(["z", "coef"])
        self.stat_combo.setToolTip("Map values: z, the group statistic of each atom's map; coef, its mean coefficient")
        self.stat_combo.activated.connect(self._on_stat_chosen)
        self.threshold_slider = QLabeledDoubleSlider(Qt.Horizontal)
        self.threshold_slider.setToolTip("Voxels with |map| under this value are transparent")
        self.threshold_slider.setDecimals(2)
        self.threshold_slider.valueChanged.connect(self.set_threshold)
        self.peak_button = QPushButton("Go to peak")
        self.peak_button.setToolTip("Move the slices to the peak of the atom's largest cluster above the "
                                    "threshold (done on every atom chosen)")
        self.peak_button.clicked.connect(lambda: self.go_to_peak())
        self.peak_label = QLabel("")
        self.peak_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        #: world position (z, y, x) mm of the shown atom's peak, once found
        self.peak: np.ndarray | None = None
        self.r2_slider = QLabeledDoubleSlider(Qt.Horizontal)
        self.r2_slider.setToolTip("R² at or under this value is transparent (the R² layer's lower contrast limit)")
        self.r2_slider.setDecimals(3)
        self.r2_slider.valueChanged.connect(self.set_r2_threshold)


    def _build_table(self) -> None:
        """The sortable table of atoms, one row each (columns of :data:`._atom_table.COLUMNS`)."""
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([h for _, h in COLUMNS])
        for c, (column, _) in enumerate(COLUMNS):
            self.table.horizontalHeaderItem(c).setToolTip(HEADER_TIPS.get(column, ""))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSortIndicator(0, Qt.AscendingOrder)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.table.setWordWrap(False)
        self.table.setSortingEnabled(True)
        self.table.itemSelectionChanged.connect(self._on_row_selected)

    def _build_plots(self) -> None:
        """Four tabs under the table: the selected atom (its time course above its histogram
        over the model's layers), its top words, what explains a clicked voxel, the verdict.
        Each tab gets the height under the table: at 1366 x 768 a voxel's plots or the top
        words could not be read in what one plot below another leaves."""
        self.timecourse = TimecourseCanvas(self)
        self.histogram = LayerHistogramCanvas(self)
        self.timecourse.setMinimumHeight(90)
        self.histogram.setMinimumHeight(90)
        atom_page = QWidget()
        atom_layout = QVBoxLayout(atom_page)
        atom_layout.setContentsMargins(0, 0, 0, 0)
        atom_layout.setSpacing(2)
        atom_layout.addWidget(self.timecourse, 1)
        atom_layout.addWidget(self.histogram, 1)
        self.words_page = TopWordsPage()
        self.top_up, self.top_down = self.words_page.up, self.words_page.down
        self.lower_tabs = QTabWidget()
        self.lower_tabs.addTab(atom_page, "atom")
        self.lower_tabs.addTab(self.words_page, "top words")
        self.lower_tabs.addTab(self._voxel_page(), "voxel")
        self.lower_tabs.addTab(self._verdict_page(), "verdict")
        self.lower_tabs.setTabToolTip(0, "The selected atom's time course and how its ANs spread over the model's layers")
        self.voxel = None
        self.voxel_column = None
        self._voxel_lookup = None
        self._voxel_courses = None  # (state, courses dict or None, file-order column lookup)
        self.lower_tabs.currentChanged.connect(
            lambda i: self._show_top_words(self.atom) if i == 1 and self.atom is not None else None)

    def _verdict_page(self) -> QWidget:
        """The run's verdict on the shown model (``summary['verdict']``), one finding a paragraph;
        a line above the table says how many there are and marks warnings."""
        self.verdict_view = QTextBrowser()
        self.verdict_view.setOpenLinks(False)
        self.verdict_view.setToolTip("The run's findings on this model: against each baseline, beyond the "
                                     "nuisance regressors, layers against atoms, links against a story-free baseline")
        self.verdict_line = QLabel("")
        self.verdict_line.setTextFormat(Qt.RichText)
        self.verdict_line.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.verdict_line.linkActivated.connect(lambda _link: self.lower_tabs.setCurrentWidget(self.verdict_view))
        self.verdict_line.setVisible(False)
        return self.verdict_view

    def _voxel_page(self) -> QWidget:
        """A clicked voxel (:class:`._explorer_pages.VoxelPage`): every atom's map value there,
        and its measured and predicted time course (the mean over subjects or one subject's)."""
        page = self.voxel_page = VoxelPage()
        self.voxel_label, self.voxel_plot, self.voxel_timecourse = page.label, page.atoms_plot, page.timecourse
        self.voxel_subject_combo, self.voxel_course_label = page.subject_combo, page.course_label
        self.voxel_subject_combo.currentIndexChanged.connect(lambda _i: self._show_voxel_timecourse())
        page.heldout_check.toggled.connect(lambda _on: self._show_voxel_timecourse())
        return page

    def _lay_out(self) -> None:
        """The header and controls above a splitter of the table, the time course and the tabs."""
        form = self._control_form()
        self.splitter = self._build_splitter()
        self.header.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        buttons = QHBoxLayout()
        buttons.addWidget(self.header, 1)
        buttons.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(3)
        layout.addLayout(buttons)
        layout.addWidget(self.verdict_line)
        layout.addLayout(form)
        layout.addWidget(self.splitter, 1)

    def _control_form(self) -> QFormLayout:
        """Model and statistic on one row, then the two thresholds and the convention."""
        for combo, chars in ((self.model_combo, 6),):
            # the dock keeps its width: long model names are cut (the list shows them whole)
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(chars)
        top_row = QHBoxLayout()
        top_row.addWidget(QLabel("model"))
        top_row.addWidget(self.model_combo, 1)
        top_row.addWidget(QLabel("map"))
        top_row.addWidget(self.stat_combo)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setVerticalSpacing(2)
        form.addRow(top_row)
        form.addRow("|map| ≥", self.threshold_slider)
        peak_row = QHBoxLayout()
        peak_row.addWidget(self.peak_button)
        peak_row.addWidget(self.peak_label, 1)
        form.addRow(peak_row)
        form.addRow("R² >", self.r2_slider)
        return form

    def _build_splitter(self) -> QSplitter:
        """Table above the selected atom's line and tabs; the table keeps a fixed height."""
        splitter = QSplitter(Qt.Vertical)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.table)
        plots = QWidget()
        plots_layout = QVBoxLayout(plots)
        plots_layout.setContentsMargins(0, 0, 0, 0)
        plots_layout.setSpacing(2)
        plots_layout.addWidget(self.atom_label)
        plots_layout.addWidget(self.lower_tabs, 1)
        splitter.addWidget(plots)
        # the table keeps about 8.5 rows (it scrolls, the row shown is scrolled to); the
        # two plots share what is left, so they grow with the window
        row_h = self.table.verticalHeader().defaultSectionSize()
        chrome = self.table.horizontalHeader().sizeHint().height() \
            + self.table.horizontalScrollBar().sizeHint().height() + 2 * self.table.frameWidth()
        self.table.setMinimumHeight(int(8.3 * row_h + chrome))
        self.table.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Minimum)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)  # the tabs take what is left, and grow with the window
        return splitter

    def _follow_viewer(self) -> None:
        """Follow the viewer: a result's atom-map layer arriving or replaced, a click on the canvas."""
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.mouse_drag_callbacks.append(self._on_canvas_press)
        _layers.on_result_updated(self.viewer, self._on_result_updated)
        existing = _layers.find_layer(self.viewer, "atom_map")
        if existing is not None:
            self._follow_layer(existing)

    # -- loading ----------------------------------------------------------------------
    def _set_enabled(self, on: bool) -> None:
        for widget in (self.model_combo, self.stat_combo, self.threshold_slider, self.table, self.peak_button):
            widget.setEnabled(on)
        self.r2_slider.setEnabled(on and self._r2_layer() is not None)

    def show_region_note(self, result) -> None:
        """Say that ``result`` is a region result, shown in the Regions tab (no atom maps here)."""
        if self.state is not None and self.state.result.path == result.path:
            return
        self.header.setText(f"<b>{result.path.name}</b> is a region result (fMRI given as region time series): "
                            "no voxel maps to explore. Its regions (r, noise ceiling, baselines) and each atom's "
                            "coefficient per region are in the <b>Regions</b> tab.")

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a napari-brainorg result folder")
        if folder:
            self.open_result(folder)

    def open_result(self, path: str | Path, model: str | None = None) -> None:
        """Show a result folder's layers in the viewer (read in a thread, added in pieces);
        the explorer follows them."""
        from ._loading import show_result_async

        def not_opened(exc):
            from napari.utils.notifications import show_error

            self.header.setText(f"Cannot open {str(path)!r}: {exc}")
            show_error(f"Cannot open {str(path)!r}: {exc}")
            self.failed.emit(str(exc))

        self.header.setText(f"Loading {Path(path).name} …")
        show_result_async(self.viewer, str(path), model, owner=self, on_error=not_opened)

    def set_result(self, path: str | Path, model: str | None = None, stat: str | None = None) -> None:
        """Load a result's atoms in a worker thread; :attr:`loaded` fires when ready.

        What is shown stays usable until the new state is ready.
        """
        from ._tasks import run_in_thread

        stat = stat or self.stat_combo.currentText()
        key = (str(path), model, stat)
        if self._loading == key:
            return
        self._loading = key
        self.header.setText(f"Loading {Path(path).name} …")
        if self.state is None:
            self._set_enabled(False)
        self._worker = run_in_thread(load_state, str(path), model, stat, owner=self, name="atom explorer",
                                     on_done=lambda state, key=key: self._on_loaded(state, key),
                                     on_error=lambda exc, key=key: self._on_load_error(exc, key))

    def switch_model(self, model: str) -> None:
        """Show another model of the same result: its atoms and layers are read in a thread,
        and swapped in together (the current view stays until then)."""
        from ._loading import show_layers_async

        if self.state is None:
            return
        path = str(self.state.result.path)
        stat = self.stat_combo.currentText()
        key = (path, model, stat)
        self._loading = key
        self.header.setText(f"Loading {model} …")
        read: dict[str, ExplorerState] = {}

        def build():
            read["state"] = load_state(path, model, stat)
            return _layers.result_layer_data(path, model, stat=stat)

        def shown(_added, key=key):
            if self._loading != key:
                return
            layer = _layers.find_layer(self.viewer, "atom_map")
            if layer is not None:
                layer.metadata["atom"] = 0
            self._later(lambda: self._on_loaded(read["state"], key))  # the layers repaint first

        # a result load of the viewer's queue: a newer switch or result stops this one; one
        # layer per turn of the event loop; the explorer's own change is not followed
        self._worker = show_layers_async(self.viewer, build, name=f"{Path(path).name}: {model}", owner=self,
                                         wrap=self._owning, on_shown=shown,
                                         on_error=lambda exc, key=key: self._on_load_error(exc, key))

    @contextlib.contextmanager
    def _owning(self):
        """Layer changes made inside are the explorer's own (it does not reload on them)."""
        self._own_layer = True
        try:
            yield
        finally:
            self._own_layer = False

    def _on_load_error(self, exc: Exception, key) -> None:
        from napari.utils.notifications import show_error

        if self._loading == key:
            self._loading = None
        self.header.setText(f"Could not load {key[0]!r}: {exc}")
        show_error(f"Atom explorer: could not load {key[0]!r}: {exc}")
        self.failed.emit(str(exc))

    def _on_loaded(self, state: ExplorerState, key) -> None:
        """Show a loaded state in three turns of the event loop (table; plots; map), so that
        no single turn keeps the GUI busy long; :attr:`loaded` fires after the last."""
        if self._loading != key:  # a newer request superseded this one
            return
        self._loading = None
        self.state = state
        maps = state.maps
        simulated = "  —  SIMULATED DATA" if state.result.simulated else ""
        self.header.setText(f"<b>{state.result.path.name}</b>: {state.model}, {maps.n_atoms} atoms{simulated}")
        self.model_combo.clear()
        self.model_combo.addItems(state.result.models)
        self.model_combo.setCurrentText(state.model)
        self.stat_combo.setCurrentText(maps.stat)
        self._fill_table(state.rows)
        self.show_verdict(state)
        self._later(lambda: self._show_plots(state))

    def _later(self, fn) -> None:
        from qtpy.QtCore import QTimer

        from ._tasks import _deleted, _report

        def call():
            if _deleted(self):  # the panel was closed meanwhile
                return
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - never raise into Qt
                _report(exc, "atom explorer")

        QTimer.singleShot(0, call)

    def _show_plots(self, state: ExplorerState) -> None:
        if self.state is not state:
            return
        self.timecourse.set_story(state.result.tr, state.words, state.timecourses)
        if state.layer_hist is not None:
            self.histogram.set_layers(list(state.layer_hist.columns), state.layer_hist.to_numpy())
        self._later(lambda: self._show_first_atom(state))

    def _show_first_atom(self, state: ExplorerState) -> None:
        if self.state is not state:
            return
        maps = state.maps
        layer = _layers.find_layer(self.viewer, "atom_map")
        threshold = maps.default_threshold()
        if layer is not None and layer.metadata.get("stat") == maps.stat and "threshold" in layer.metadata:
            threshold = float(layer.metadata["threshold"])
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setRange(0.0, float(max(maps.vmax.max(), maps.color_limit, threshold, 1e-6)))
        self.threshold_slider.setValue(threshold)
        self.threshold_slider.blockSignals(False)
        self._sync_r2_slider()
        self._set_enabled(True)
        atom = 0
        if layer is not None and layer.metadata.get("atom") is not None:
            atom = int(layer.metadata["atom"])
        self.select_atom(min(atom, maps.n_atoms - 1))
        self.shown_state = state
        self.loaded.emit(state)
        if len(state.result.models) > 1:  # two models side by side: a tab of its own, docked
            self._later(self._dock_comparison)  # in a turn of its own (a dock relayouts the window)

    def _dock_comparison(self) -> None:
        window = getattr(self.viewer, "window", None)
        if window is None or not hasattr(window, "dock_widgets"):
            return
        from .compare import PANEL_NAME, dock_comparison

        if PANEL_NAME in window.dock_widgets:
            return
        shown = self.isVisible()
        dock_comparison(self.viewer, self)
        if shown:  # a new tab comes to the front: the explorer stays there
            _layers.raise_dock(self)

    def _fill_table(self, rows) -> None:
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)
        self.table.clearContents()
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows.itertuples(index=False)):
            for c, (column, _) in enumerate(COLUMNS):
                value = getattr(row, column)
                if isinstance(value, (int, np.integer)):
                    item = _SortableItem(str(int(value)))
                    item.setData(Qt.UserRole + 1, int(value))
                elif isinstance(value, (float, np.floating)):
                    item = _SortableItem("" if np.isnan(value) else FORMATS.get(column, "{:.2f}").format(value))
                    item.setData(Qt.UserRole + 1, float(value) if not np.isnan(value) else -np.inf)
                    tip = getattr(row, f"{column}_tip", "") if column == "statistic" else ""
                    if tip:
                        item.setToolTip(f"strongest test: {tip}")
                else:
                    item = _SortableItem(str(value))
                    tip = getattr(row, f"{column}_tip", "") if column in ("activated", "deactivated") else ""
                    item.setToolTip(tip or str(value))
                item.setData(Qt.UserRole, int(row.atom))
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        for c in range(self.table.columnCount()):  # long network lists: cut, full text in the tooltip
            self.table.setColumnWidth(c, min(self.table.columnWidth(c), 220))
        self.table.blockSignals(False)

    # -- following the viewer's layers ---------------------------------------------------
    def _on_layer_inserted(self, event) -> None:
        layer = event.value
        if layer.metadata.get(_layers.ROLE) == "atom_map" and not self._own_layer:
            self._follow_layer(layer)

    def _on_result_updated(self, layer) -> None:
        from ._tasks import _deleted

        if not self._own_layer and not _deleted(self):
            self._follow_layer(layer)

    def _follow_layer(self, layer) -> None:
        path = layer.metadata.get(_layers.RESULT)
        if not path:
            return
        stat = layer.metadata.get("stat", self.stat_combo.currentText())
        self._loading = None  # a new layer of a result: reload even if it is the same folder
        self.set_result(path, layer.metadata.get(_layers.MODEL), stat)

    def _atom_layer(self):
        state = self.state
        self._own_layer = True
        try:
            return _layers.ensure_atom_map_layer(self.viewer, state.maps, state.result.path, state.model,
                                                 threshold=self.threshold_slider.value())
        finally:
            self._own_layer = False

    def _r2_layer(self):
        return _layers.find_layer(self.viewer, "r2")

    def _sync_r2_slider(self) -> None:
        layer = self._r2_layer()
        self.r2_slider.blockSignals(True)
        if layer is not None:
            top = float(np.max(layer.data)) if layer.data.size else 1.0
            self.r2_slider.setRange(0.0, max(top, 1e-6))
            self.r2_slider.setValue(float(layer.contrast_limits[0]))
        self.r2_slider.blockSignals(False)

    # -- user actions ---------------------------------------------------------------------
    def select_atom(self, atom: int) -> None:
        """Show ``atom``: its map in the map layer, its time course and layer histogram."""
        if self.state is None:
            return
        state = self.state
        layer = self._atom_layer()
        _layers.show_atom(layer, state.maps, int(atom), self.threshold_slider.value())
        self.atom = int(atom)
        self.go_to_peak(layer.data)
        if 0 <= atom < state.timecourses.shape[1]:
            self.timecourse.set_timecourse(state.timecourses[:, atom], atom)
        if state.layer_hist is not None and atom in state.layer_hist.index:
            self.histogram.set_counts(state.layer_hist.loc[atom].to_numpy(), atom)
        self.atom_label.setText(self._describe(atom))
        if self.lower_tabs.currentIndex() == 1:  # filled when its tab is shown (a click stays cheap)
            self._show_top_words(atom)
        self._select_row_of(atom)
        self.atom_shown.emit(int(atom))

    def go_to_peak(self, volume: np.ndarray | None = None) -> np.ndarray | None:
        """Move the slices (and the orthogonal views' crosshair) to the shown atom's peak.

        The peak of the largest cluster of ``|map| >= threshold`` (:func:`._peak.cluster_peak`)
        of ``volume`` (the shown atom's map, shape ``maps.shape``; read again when ``None``).
        Returns its world position ``(z, y, x)`` mm, or ``None`` when no voxel is above the
        threshold (the slices stay).
        """
        from . import display
        from ._peak import peak_world

        if self.state is None or self.atom is None:
            return None
        maps = self.state.maps
        if volume is None:
            volume = maps.volume(self.atom)
        found = peak_world(volume, maps.affine, self.threshold_slider.value())
        if found is None:
            self.peak = None
            self.peak_label.setText("no voxel above the threshold")
            return None
        world, value = found
        self.peak = world
        where = display.mni_text(world).replace("MNI x, y, z = ", "")
        self.peak_label.setText(f"{where} · {maps.stat} {value:+.2f}")
        self.peak_label.setToolTip(f"The peak of atom {self.atom}'s largest cluster above the threshold: "
                                   f"MNI x, y, z = {where}, {maps.stat} = {value:+.2f}")
        movers = _layers.docked_widgets_with(self.viewer, "set_position")  # the orthogonal views
        for widget in movers:
            widget.set_position(world)
        if not movers and self.viewer.dims.ndim >= 3:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, float(world[0]))
        return world

    # -- what explains this voxel ------------------------------------------------------------
    def _on_canvas_press(self, viewer, event):
        from ._tasks import _deleted

        if _deleted(self) or self.state is None or event.type != "mouse_press" or event.button != 1:
            return
        try:
            self.show_voxel(np.asarray(event.position, float))
        except Exception as exc:  # noqa: BLE001 - a click never takes napari down
            from ._tasks import _report

            _report(exc, "voxel panel")

    def show_voxel(self, world) -> int | None:
        """Show what explains the voxel at world position ``(z, y, x)`` mm: its R² (named by its
        model: held-out ridge or in-sample sparse fit), every atom's map value there
        (associated atoms in green). Returns the mask-voxel index or ``None``."""
        from . import display

        state = self.state
        maps = state.maps
        if self._voxel_lookup is None or self._voxel_lookup[0] is not maps:
            lookup = np.full(int(np.prod(maps.shape)), -1, np.int64)
            lookup[maps.flat_index] = np.arange(maps.flat_index.size)
            self._voxel_lookup = (maps, lookup)
        lookup = self._voxel_lookup[1]
        world = np.asarray(world, float)[-3:]
        ijk = np.rint(np.linalg.solve(maps.nifti_affine, np.r_[world[::-1], 1.0])[:3]).astype(int)
        nx, ny, nz = maps.shape[2], maps.shape[1], maps.shape[0]
        where = display.mni_text(world)
        if not (0 <= ijk[0] < nx and 0 <= ijk[1] < ny and 0 <= ijk[2] < nz):
            self.voxel_label.setText(f"{where}: outside the maps")
            return None
        index = int(lookup[np.ravel_multi_index((ijk[2], ijk[1], ijk[0]), maps.shape)])
        if index < 0:
            self.voxel_label.setText(f"{where}: outside the brain mask")
            return None
        values = maps.values[:, index]
        parts = [where]
        r2_layer = self._r2_layer()
        if r2_layer is not None:
            r2 = _layers.value_at(r2_layer, world)
            if r2 is not None:
                parts.append(f"{r2_source(r2_layer.metadata.get('kind'))}: R² = {float(r2):.3f}")
        network = None
        networks = _layers.find_layer(self.viewer, "networks")
        if networks is not None:
            label = _layers.value_at(networks, world)
            meta = networks.metadata
            if label:
                names = dict(zip(meta.get("labels", []), meta.get("names", [])))
                network = names.get(int(label))
        marked = np.zeros(values.size, bool)
        if network:
            rows = state.rows
            for part in ("activated", "deactivated"):
                hit = rows[part].astype(str).str.contains(f":{network} (", regex=False)
                marked[rows.loc[hit, "atom"].to_numpy(int)] = True
            parts.insert(1, f"{network} (its associated atoms green)")
        self.voxel_label.setText(" · ".join(parts))
        if self.voxel_plot.bars is None or len(self.voxel_plot.bars) != values.size \
                or getattr(self.voxel_plot, "_limit", None) != maps.color_limit:
            self.voxel_plot.set_atoms(values.size, float(maps.color_limit))
            self.voxel_plot._limit = maps.color_limit
        self.voxel_plot.set_values(values, marked)
        self.voxel = index
        self.voxel_column = self._encoding_column(ijk)
        self._show_voxel_timecourse()
        return index

    # -- measured vs predicted ------------------------------------------------------------
    def _courses(self):
        """The result's saved time courses and a lookup from file voxel (i, j, k) to their
        column, read once per shown model (memory maps: a click reads one voxel)."""
        state = self.state
        if self._voxel_courses is None or self._voxel_courses[0] is not state:
            courses = state.result.voxel_timecourses(state.model)
            lookup = None
            if courses is not None:
                mask = np.asarray(state.result.mask_img(state.model).dataobj) > 0
                lookup = np.full(mask.shape, -1, np.int64)
                lookup[mask] = np.arange(int(mask.sum()))
                if int(mask.sum()) != courses["measured"].shape[1]:
                    courses, lookup = None, None
            self._voxel_courses = (state, courses, lookup)
            combo = self.voxel_subject_combo
            combo.blockSignals(True)
            combo.clear()
            if courses is not None:
                combo.addItem("mean over subjects")
                combo.addItems([str(s) for s in courses["subjects"]])
                self.voxel_timecourse.set_story(state.result.tr, state.words)
            combo.blockSignals(False)
        return self._voxel_courses[1], self._voxel_courses[2]

    def _encoding_column(self, ijk) -> int | None:
        courses, lookup = self._courses()
        if courses is None:
            return None
        column = int(lookup[tuple(int(v) for v in ijk)])
        return column if column >= 0 else None

    def voxel_courses(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(measured, predicted)`` of shape (n_volumes,) shown for the clicked voxel and the
        chosen subject (or the mean over subjects), or ``None``."""
        if self.state is None or self.voxel_column is None:
            return None
        courses, _ = self._courses()
        if courses is None:
            return None
        return self._course("measured", courses), self._course("predicted", courses)

    def _course(self, key: str, courses) -> np.ndarray:
        """``courses[key]`` at the clicked voxel, for the chosen subject or their mean, (n_volumes,)."""
        choice = self.voxel_subject_combo.currentIndex()
        picked = slice(None) if choice <= 0 else slice(choice - 1, choice)
        return np.asarray(courses[key][picked, self.voxel_column, :], np.float64).mean(0)

    def _show_voxel_timecourse(self) -> None:
        if self.state is None:
            return
        shown = self.voxel_courses()
        courses, _ = self._courses()
        if courses is None:
            self.voxel_course_label.setText("This result saved no time courses (encoding.save_timecourses).")
            self.voxel_timecourse.set_voxel(np.zeros(0), np.zeros(0))
            return
        if shown is None:
            self.voxel_course_label.setText("")
            self.voxel_timecourse.set_voxel(np.zeros(0), np.zeros(0))
            return
        measured, predicted = shown
        check = self.voxel_page.heldout_check
        check.setVisible(courses.get("heldout") is not None)
        heldout = self._course("heldout", courses) if not check.isHidden() and check.isChecked() else None

        def r_of(a, b):
            return np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else np.nan

        label = courses["predicted_label"].split(":")[0]
        self.voxel_course_label.setText(course_text(
            label, r_of(measured, predicted), None if heldout is None else r_of(measured, heldout),
            courses.get("heldout_label", "").split(":")[0]))
        self.voxel_course_label.setToolTip(" ".join(
            t for t in (courses["predicted_label"], courses.get("heldout_label", "") if heldout is not None else "") if t))
        self.voxel_timecourse.set_voxel(measured, predicted, heldout)

    def _show_top_words(self, atom: int) -> None:
        """Fill the top-words tab for ``atom``: grouped by passage, repeats merged."""
        state = self.state
        if state is None:
            return
        if state.stories is None:  # read once per state (config.yaml)
            try:
                state.stories = state.result.stories()
            except (OSError, ValueError, KeyError):
                state.stories = []
        self.words_page.show_atom(state.top_words, atom, state.stories)

    def show_verdict(self, state: ExplorerState) -> list[dict]:
        """Show the run's findings on ``state.model`` (``summary['verdict']``); returns them.

        Warnings come first, marked ⚠ (in the line above the controls and on the verdict tab,
        which the line's "read" link brings to the front; the tab shown stays as it was).
        """
        from html import escape

        findings = [f for f in (state.result.summary.get("verdict") or [])
                    if isinstance(f, dict) and f.get("model", state.model) == state.model]
        findings.sort(key=lambda f: f.get("severity") != "warning")
        warnings = sum(f.get("severity") == "warning" for f in findings)
        index = self.lower_tabs.indexOf(self.verdict_view)
        if not findings:
            self.verdict_line.setVisible(False)
            self.verdict_view.setHtml("<p>This result states no verdict (summary.json has none: an older run).</p>")
            self.lower_tabs.setTabText(index, "verdict")
            return findings
        paragraphs = []
        for f in findings:
            topic = escape(str(f.get("topic", "")))
            text = escape(str(f.get("text", "")))
            if f.get("severity") == "warning":
                paragraphs.append(f'<p style="color:{_WARN}"><b>⚠ {topic}</b>: {text}</p>')
            else:
                paragraphs.append(f"<p><b>{topic}</b>: {text}</p>")
        self.verdict_view.setHtml(f"<p><b>Verdict on {escape(state.model)}</b></p>" + "".join(paragraphs))
        counted = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}"
        if warnings:
            mark = f'<span style="color:{_WARN}"><b>⚠ {warnings} warning{"s" if warnings != 1 else ""}</b></span>'
            self.verdict_line.setText(f"<b>Verdict</b>: {mark} · {counted} · <a href='verdict' style='color:{_LINK}'>read</a>")
            self.lower_tabs.setTabText(index, "verdict ⚠")
        else:
            self.verdict_line.setText(f"<b>Verdict</b>: {counted}, no warning · <a href='verdict' style='color:{_LINK}'>read</a>")
            self.lower_tabs.setTabText(index, "verdict")
        self.verdict_line.setToolTip(" ".join(str(f.get("text", "")) for f in findings[:2]))
        self.verdict_line.setVisible(True)
        return findings

    def _describe(self, atom: int) -> str:
        rows = self.state.rows
        match = rows[rows["atom"] == atom]
        if not len(match):
            return f"<b>atom {atom}</b>"
        row = match.iloc[0]
        parts = [f"<b>atom {atom}</b>: {int(row['n_ans'])} ANs"]
        if row["main_layers"]:
            parts.append(f"main layers {row['main_layers']}")
        for part, sign in (("activated", "+"), ("deactivated", "−")):
            if row[part]:
                parts.append(f"{sign} {row[part]}")
        return "; ".join(parts)

    def row_of_atom(self, atom: int) -> int | None:
        """Table row (after sorting) that holds ``atom``."""
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            if item is not None and item.data(Qt.UserRole) == atom:
                return r
        return None

    def _select_row_of(self, atom: int) -> None:
        row = self.row_of_atom(atom)
        if row is None or self.table.currentRow() == row:
            return
        self.table.blockSignals(True)
        self.table.selectRow(row)
        self.table.scrollToItem(self.table.item(row, 0))
        self.table.blockSignals(False)

    def _on_row_selected(self) -> None:
        items = self.table.selectedItems()
        if not items:
            return
        atom = items[0].data(Qt.UserRole)
        if atom is not None and atom != self.atom:
            self.select_atom(int(atom))

    def set_threshold(self, value: float) -> None:
        """Hide atom-map voxels with ``|value|`` under ``value`` (live)."""
        if self.state is None:
            return
        layer = _layers.find_layer(self.viewer, "atom_map")
        if layer is not None:
            _layers.set_map_threshold(layer, float(value))
        if abs(self.threshold_slider.value() - value) > 1e-9:
            self.threshold_slider.blockSignals(True)
            self.threshold_slider.setValue(value)
            self.threshold_slider.blockSignals(False)

    def set_r2_threshold(self, value: float) -> None:
        """Hide R² at or under ``value`` in the R² layer (live); moving it shows the layer."""
        layer = self._r2_layer()
        if layer is not None:
            _layers.set_r2_threshold(layer, float(value))
            if not layer.visible:
                layer.visible = True

    def _on_model_chosen(self, index: int) -> None:
        if self.state is None:
            return
        model = self.model_combo.itemText(index)
        if model and model != self.state.model:
            self.switch_model(model)

    def _on_stat_chosen(self, index: int) -> None:
        if self.state is None:
            return
        stat = self.stat_combo.itemText(index)
        if stat != self.state.maps.stat:
            layer = _layers.find_layer(self.viewer, "atom_map")
            if layer is not None:
                layer.metadata.pop("threshold", None)
            self.set_result(self.state.result.path, self.state.model, stat)
