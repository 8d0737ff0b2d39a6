"""The panel of a region result: fMRI given as region time series (``fmri.regions``).

Such a result has no maps: per region it holds r with its CI over subjects, the noise
ceiling and every baseline's r (``encoding/<model>/regions.tsv``), and each atom's
coefficient per region (``encoding/<model>/atom_maps.tsv``). The panel draws both as
bar charts; a click on an atom in its table shows that atom's coefficients. With an ROI
atlas (a label NIfTI whose label names match the region names) the values are painted
on the template.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ._label_tables import label_table
from ._plots import _FACE, _FG, _style
from ._table_items import SortableItem, number_item

if TYPE_CHECKING:  # pragma: no cover
    import napari

PANEL_NAME = "Regions"
ROI_LAYER = "regions on template"
_BASELINE_COLORS = ("#8c8c8c", "#b07aa1", "#9c755f", "#bab0ab")
#: (column of :meth:`ResultFolder.associations`, header) of the associations table
LINK_COLUMNS = (("atom", "atom"), ("network", "region"), ("part", "part"), ("statistic", "statistic"),
                ("q", "q"), ("associated", "associated"))
LINK_TIPS = {
    "network": "The region whose mean time course was tested against the atom",
    "part": "activated: the region follows the atom; deactivated: it follows the atom's opposite",
    "statistic": "The association statistic of the atom's time course with the region's (signed)",
    "q": "FDR q-value over atoms x regions x both parts (the test's family)",
    "associated": "Declared a link: q under the FDR level and the effect large enough",
}


def association_rows(result, model: str):
    """Both parts of the region association test of ``model`` in one table, declared links
    first, then by q; ``None`` when the result holds no association tables."""
    import pandas as pd

    parts = []
    for part in ("activated", "deactivated"):
        table = result.associations(model, part)
        if table is not None and len(table):
            table = table.copy()
            table["part"] = part
            parts.append(table)
    if not parts:
        return None
    rows = pd.concat(parts, ignore_index=True)
    for column, default in (("statistic", np.nan), ("q", np.nan), ("associated", False)):
        if column not in rows.columns:
            rows[column] = default
    rows["associated"] = rows["associated"].astype(str).str.lower().isin(("true", "1"))
    return rows.sort_values(["associated", "q"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _canvas(parent, height: float) -> tuple[FigureCanvasQTAgg, object]:
    fig = Figure(figsize=(4.2, height), dpi=90, facecolor=_FACE)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setParent(parent)
    ax = fig.add_subplot(111)
    _style(ax)
    return canvas, ax


class RegionsPanel(QWidget):
    """Per-region fit (r, CI, noise ceiling, baselines) and the selected atom's coefficients.

    Attributes
    ----------
    regions : list of str
        Region names, in the order of ``regions.tsv`` (the bars' order).
    fit_bars : dict
        ``{'r_cv': BarContainer, <baseline column>: BarContainer}`` of the fit chart.
    coef_bars : BarContainer or None
        The selected atom's coefficient per region.
    atom : int or None
        The atom shown.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result = None
        self.model: str | None = None
        self.table = None        # regions.tsv
        self.coefs = None        # regions x atoms
        self.regions: list[str] = []
        self.fit_bars: dict = {}
        self.ceiling = None
        self.coef_bars = None
        self.atom: int | None = None
        self._atlas = None       # (label array, affine, {region: label value})

        layout = QVBoxLayout(self)
        self.header = QLabel("Open a region result (fMRI given as region time series).")
        self.header.setWordWrap(True)
        layout.addWidget(self.header)
        self.fit_canvas, self.fit_ax = _canvas(self, 2.6)
        self.fit_canvas.setMinimumHeight(190)
        layout.addWidget(self.fit_canvas, 3)
        self.atoms = QTableWidget(0, 2, self)
        self.atoms.setHorizontalHeaderLabels(["atom", "max |coef|"])
        self.atoms.horizontalHeaderItem(1).setToolTip("Largest absolute coefficient over the regions")
        self.atoms.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.atoms.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.atoms.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.atoms.verticalHeader().setVisible(False)
        self.atoms.horizontalHeader().setStretchLastSection(True)
        self.atoms.itemSelectionChanged.connect(self._on_row_selected)
        self.links = self._links_table()
        self.lists = QTabWidget(self)
        self.lists.addTab(self.atoms, "atoms")
        self.lists.addTab(self.links, "associations")
        layout.addWidget(self.lists, 2)
        self.coef_canvas, self.coef_ax = _canvas(self, 2.2)
        self.coef_canvas.setMinimumHeight(160)
        layout.addWidget(self.coef_canvas, 3)
        row = QHBoxLayout()
        self.atlas_button = QPushButton("ROI atlas…", self)
        self.atlas_button.setToolTip("A label NIfTI whose label names (sidecar table) match the region names")
        self.atlas_button.clicked.connect(self._choose_atlas)
        row.addWidget(self.atlas_button)
        row.addWidget(QLabel("paint:"))
        self.paint_combo = QComboBox(self)
        self.paint_combo.addItems(["r (cross-validated)", "selected atom's coefficient"])
        self.paint_combo.currentIndexChanged.connect(lambda _i: self._paint())
        row.addWidget(self.paint_combo)
        layout.addLayout(row)

    def _links_table(self) -> QTableWidget:
        """The association tests of atoms with regions (statistic, q, declared or not), sortable."""
        table = QTableWidget(0, len(LINK_COLUMNS), self)
        table.setHorizontalHeaderLabels([h for _, h in LINK_COLUMNS])
        for c, (column, _) in enumerate(LINK_COLUMNS):
            table.horizontalHeaderItem(c).setToolTip(LINK_TIPS.get(column, ""))
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 6)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        table.horizontalHeader().setStretchLastSection(True)
        table.setSortingEnabled(True)
        table.itemSelectionChanged.connect(self._on_link_selected)
        return table

    # -- loading ------------------------------------------------------------------
    def set_result(self, result, model: str | None = None) -> bool:
        """Show ``result`` (a :class:`ResultFolder` or path); False (and a notification) on error."""
        from napari.utils.notifications import show_error

        from ..io.results import ResultFolder

        try:
            if not isinstance(result, ResultFolder):
                result = ResultFolder(result)
            model = model or (result.models[0] if result.models else None)
            if model is None:
                raise ValueError(f"{str(result.path)!r} holds no model results.")
            table = result.region_table(model)
            if table is None:
                raise ValueError(f"{str(result.file(f'encoding/{model}/regions.tsv'))!r} is missing: "
                                 "not a region result.")
            for col in ("region", "r_cv"):
                if col not in table.columns:
                    raise ValueError(f"{str(result.table_path(f'encoding/{model}/regions.tsv'))!r} has no "
                                     f"column {col!r}; expected region, r_cv, r_cv_ci_low, r_cv_ci_high, "
                                     "noise_ceiling, r_cv_<baseline>.")
            coefs = result.region_atom_table(model, "coef")
        except (OSError, ValueError, KeyError) as exc:
            show_error(f"Cannot show the regions of {str(getattr(result, 'path', result))!r}: {exc}")
            self.header.setText(f"Cannot show this result: {exc}")
            return False
        self.result, self.model, self.table, self.coefs = result, model, table, coefs
        self.regions = table["region"].tolist()
        self.header.setText(f"{model}: {len(self.regions)} regions, r over subjects (95% CI), "
                            "noise ceiling and baselines" + (" (SIMULATED data)" if result.simulated else ""))
        self._draw_fit()
        self._fill_atoms()
        self._fill_links(association_rows(result, model))
        if self.coefs is not None and self.coefs.shape[1]:
            self.select_atom(0)
        else:
            self.coef_ax.clear()
            _style(self.coef_ax)
            self.coef_ax.set_title("no atom coefficients (atom_maps.tsv missing)", color=_FG, fontsize=9)
            self.coef_canvas.draw_idle()
        return True

    @property
    def baseline_columns(self) -> list[str]:
        """The ``r_cv_<baseline>`` columns of regions.tsv (CI columns excluded)."""
        if self.table is None:
            return []
        return [c for c in self.table.columns
                if c.startswith("r_cv_") and c not in ("r_cv_ci_low", "r_cv_ci_high")]

    # -- drawing ------------------------------------------------------------------
    def _draw_fit(self) -> None:
        t, ax = self.table, self.fit_ax
        ax.clear()
        _style(ax)
        n = len(self.regions)
        x = np.arange(n)
        series = ["r_cv", *self.baseline_columns]
        width = 0.8 / len(series)
        self.fit_bars = {}
        r = t["r_cv"].to_numpy(float)
        yerr = None
        if {"r_cv_ci_low", "r_cv_ci_high"} <= set(t.columns):
            lo, hi = t["r_cv_ci_low"].to_numpy(float), t["r_cv_ci_high"].to_numpy(float)
            yerr = np.vstack([r - lo, hi - r])
        for i, col in enumerate(series):
            pos = x - 0.4 + width * (i + 0.5)
            if col == "r_cv":
                bars = ax.bar(pos, r, width, color="#e15759", label="r (95% CI over subjects)",
                              yerr=yerr, ecolor=_FG, capsize=2, error_kw={"linewidth": 0.8})
            else:
                bars = ax.bar(pos, t[col].to_numpy(float), width, label=f"baseline {col[5:]}",
                              color=_BASELINE_COLORS[(i - 1) % len(_BASELINE_COLORS)])
            self.fit_bars[col] = bars
        self.ceiling = None
        if "noise_ceiling" in t.columns:
            (self.ceiling,) = ax.plot(x, t["noise_ceiling"].to_numpy(float), linestyle="none", marker="_",
                                      markersize=16, markeredgewidth=2, color="#f1ce63", label="noise ceiling")
        ax.axhline(0, color=_FG, linewidth=0.6)
        ax.set_xticks(x, self.regions, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("r", fontsize=9)
        # the legend above the axes, so that it never hides a bar
        fig = self.fit_canvas.figure
        for old in list(fig.legends):
            old.remove()
        fig.legend(*ax.get_legend_handles_labels(), loc="upper center", ncol=2, fontsize=7, frameon=False,
                   labelcolor=_FG)
        top = np.nanmax(np.r_[0.0, t["noise_ceiling"].to_numpy(float) if "noise_ceiling" in t.columns else [],
                              t["r_cv_ci_high"].to_numpy(float) if "r_cv_ci_high" in t.columns else r])
        low = min(0.0, float(np.nanmin(ax.get_ylim())))
        ax.set_ylim(low, max(top, 0.05) * 1.08)
        fig.subplots_adjust(left=0.12, right=0.98, bottom=0.38, top=0.8)
        self.fit_canvas.draw_idle()

    def _fill_atoms(self) -> None:
        self.atoms.blockSignals(True)
        self.atoms.setRowCount(0)
        if self.coefs is not None:
            biggest = np.nanmax(np.abs(self.coefs.to_numpy(float)), axis=0) if len(self.coefs) else []
            self.atoms.setRowCount(self.coefs.shape[1])
            for i, (col, value) in enumerate(zip(self.coefs.columns, biggest)):
                self.atoms.setItem(i, 0, QTableWidgetItem(str(col)))
                self.atoms.setItem(i, 1, QTableWidgetItem(f"{value:.3g}"))
        self.atoms.blockSignals(False)

    def _fill_links(self, rows) -> None:
        """List the association tests; the tab's name counts the declared links."""
        table = self.links
        table.blockSignals(True)
        table.setSortingEnabled(False)
        table.clearContents()
        table.setRowCount(0 if rows is None else len(rows))
        self.link_rows = rows
        for r, row in enumerate([] if rows is None else rows.to_dict("records")):
            for c, (column, _) in enumerate(LINK_COLUMNS):
                value = row.get(column)
                if column == "atom":
                    item = number_item(int(value), str(int(value)))
                elif column in ("statistic", "q"):
                    item = number_item(value, f"{float(value):+.2f}" if column == "statistic" else f"{float(value):.3g}")
                elif column == "associated":
                    item = SortableItem("yes" if value else "no")
                    if value:
                        item.setForeground(Qt.green)
                else:
                    item = SortableItem(str(value))
                item.setData(Qt.UserRole, int(row["atom"]))
                table.setItem(r, c, item)
        table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # keep declared first
        table.setSortingEnabled(True)
        table.resizeColumnsToContents()
        table.blockSignals(False)
        n = 0 if rows is None else int(rows["associated"].sum())
        self.lists.setTabText(1, "associations" if rows is None else f"associations ({n} declared)")
        self.lists.setTabToolTip(1, "No association tables in this result" if rows is None else
                                 f"{len(rows)} tests of atoms x regions x both parts; {n} declared links first")

    def _on_link_selected(self) -> None:
        items = self.links.selectedItems()
        if items and items[0].data(Qt.UserRole) is not None:
            self.select_atom(int(items[0].data(Qt.UserRole)))

    def select_atom(self, atom: int) -> None:
        """Show atom ``atom``'s coefficient per region (and paint it, if chosen)."""
        if self.coefs is None or not 0 <= atom < self.coefs.shape[1]:
            return
        self.atom = int(atom)
        if self.atoms.currentRow() != atom:
            self.atoms.blockSignals(True)
            self.atoms.selectRow(atom)
            self.atoms.blockSignals(False)
        values = self.coefs.reindex(self.regions)[self.coefs.columns[atom]].to_numpy(float)
        ax = self.coef_ax
        ax.clear()
        _style(ax)
        x = np.arange(len(self.regions))
        colors = np.where(values >= 0, "#e15759", "#4e79a7")
        self.coef_bars = ax.bar(x, values, 0.7, color=colors)
        ax.axhline(0, color=_FG, linewidth=0.6)
        ax.set_xticks(x, self.regions, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("coefficient", fontsize=9)
        ax.set_title(f"{self.coefs.columns[atom]} of {self.model}: coefficient per region", color=_FG, fontsize=10)
        self.coef_canvas.figure.subplots_adjust(left=0.12, right=0.98, bottom=0.42, top=0.88)
        self.coef_canvas.draw_idle()
        if self.paint_combo.currentIndex() == 1:
            self._paint()

    def _on_row_selected(self) -> None:
        rows = self.atoms.selectionModel().selectedRows()
        if rows:
            self.select_atom(rows[0].row())

    # -- ROI atlas ----------------------------------------------------------------
    def _choose_atlas(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "ROI atlas (label NIfTI)", "", "NIfTI (*.nii *.nii.gz)")
        if path:
            self.set_atlas(path)

    def set_atlas(self, path: str | Path) -> bool:
        """Paint the regions' values on the template through the label image at ``path``.

        Its label names (a sidecar table such as ``<stem>.tsv`` with ``index`` and ``name``)
        must match the region names (case-insensitive); regions without a label stay unpainted.
        Returns False (and a notification) on error.
        """
        from napari.utils.notifications import show_error, show_warning

        from . import layers as _layers

        try:
            import nibabel as nib

            if not self.regions:
                raise ValueError("no region result is shown yet")
            img = nib.load(str(path))
            if len(img.shape) != 3:
                raise ValueError(f"shape {img.shape}; expected a 3D label image")
            names = label_table(path)
            if names is None:
                raise ValueError("no label names found (expected a sidecar table such as "
                                 f"{Path(path).name.split('.')[0]}.tsv with columns index, name)")
            lookup = {str(n).strip().lower(): int(i) for i, n in zip(names["index"], names["name"])}
            matched = {reg: lookup[reg.strip().lower()] for reg in self.regions if reg.strip().lower() in lookup}
            if not matched:
                raise ValueError(f"none of its label names ({', '.join(map(str, names['name'][:5]))}, …) "
                                 f"match a region ({', '.join(self.regions[:5])}, …)")
            labels, affine = _layers.nifti_layer_arrays(img, dtype=None)
        except (OSError, ValueError, KeyError) as exc:
            show_error(f"Cannot use ROI atlas {str(path)!r}: {exc}")
            return False
        missing = [r for r in self.regions if r not in matched]
        if missing:
            show_warning(f"ROI atlas {Path(path).name}: no label for {', '.join(missing)}")
        self._atlas = (np.rint(np.asarray(labels)).astype(np.int32), affine, matched)
        self._paint()
        return True

    def painted_values(self) -> dict[str, float]:
        """The value painted per region (what the ROI layer shows)."""
        if self.paint_combo.currentIndex() == 1 and self.coefs is not None and self.atom is not None:
            col = self.coefs.reindex(self.regions)[self.coefs.columns[self.atom]]
            return dict(zip(self.regions, col.to_numpy(float)))
        return dict(zip(self.regions, self.table["r_cv"].to_numpy(float)))

    def _paint(self) -> None:
        if self._atlas is None or self.table is None:
            return
        from . import layers as _layers
        from .display import BRAIN

        labels, affine, matched = self._atlas
        values = self.painted_values()
        lut = np.full(int(labels.max()) + 1, np.nan, np.float32)
        for region, label in matched.items():
            if 0 <= label < lut.size:
                lut[label] = values[region]
        image = lut[np.clip(labels, 0, lut.size - 1)]
        image[labels <= 0] = np.nan
        what = ("r" if self.paint_combo.currentIndex() == 0 or self.atom is None
                else f"atom {self.atom} coefficient")
        name = f"{what} per region ({self.model})"
        bound = float(np.nanmax(np.abs(image))) if np.isfinite(image).any() else 1.0
        bound = bound or 1.0
        # signed values (coefficients) on the maps' diverging colormap, r >= 0 on the R² one:
        # both clear at zero, so a region near zero leaves the template as it is
        signed = bool(np.nanmin(image) < 0) if np.isfinite(image).any() else False
        colormap, limits = ((_layers.diverging_threshold_colormap(0.0, bound), (-bound, bound)) if signed
                            else (_layers.sequential_threshold_colormap(), (0.0, bound)))
        layer = _layers.find_layer(self.viewer, ROI_LAYER)
        if layer is not None:
            layer.data = image
            layer.name = name
            layer.colormap = colormap
            layer.contrast_limits = limits
            return
        self.viewer.add_image(image, affine=affine, name=name, colormap=colormap, opacity=0.8,
                              contrast_limits=limits, blending="translucent",
                              metadata={_layers.ROLE: ROI_LAYER, BRAIN: True, "brainorg_stat_map": True})


def dock_regions_panel(viewer: napari.Viewer, result, model: str | None = None, *,
                       roi_atlas: str | None = None, raise_: bool = True) -> RegionsPanel | None:
    """Dock the :class:`RegionsPanel` for ``result`` when it is a region result; else ``None``."""
    from ..io.results import ResultFolder
    from . import layers as _layers

    if not isinstance(result, ResultFolder):
        result = ResultFolder(result)
    if not result.is_region_result:
        return None
    docked = viewer.window.dock_widgets
    panel = docked[PANEL_NAME] if PANEL_NAME in docked else None
    if not isinstance(panel, RegionsPanel):
        panel = RegionsPanel(viewer)
        _layers.dock_tabbed(viewer, panel, PANEL_NAME)
    if panel.set_result(result, model) and roi_atlas:
        panel.set_atlas(roi_atlas)
    for widget in _layers.docked_widgets_with(viewer, "show_region_note"):
        widget.show_region_note(result)  # the atom explorer has no maps to show: it says where to look
    if raise_:
        _layers.raise_dock(panel)
    return panel
