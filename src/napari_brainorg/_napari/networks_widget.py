"""Networks: functional-brain-network templates over the brain, as outlines.

The networks are one Labels layer (``networks (<atlas>)``) drawn as outlines in colours
no map value takes (:data:`.layers.OUTLINE_PALETTE`); hovering shows the network's name
in the status bar (the layer's ``features`` table). Each network can be switched off and on (only
the colormap changes), and the whole overlay drawn filled or as outlines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import layers as _layers
from ._docking import join_plugin_tabs

if TYPE_CHECKING:  # pragma: no cover
    import napari


def _swatch(rgba) -> QIcon:
    pix = QPixmap(14, 14)
    r, g, b, a = (int(round(255 * float(c))) for c in rgba)
    pix.fill(QColor(r, g, b, max(a, 255)))
    return QIcon(pix)


class NetworksWidget(QWidget):
    """Dock widget: choose an atlas of the result, toggle its networks, outlines or fill.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    networks_changed = Signal()

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        join_plugin_tabs(self)  # from the Plugins menu too: a tab beside the plugin's other panels
        self.viewer = napari_viewer
        self.layer = None
        self._result = None
        self.info = QLabel("No networks layer yet: open a result folder.")
        self.info.setWordWrap(True)
        self.atlas_combo = QComboBox()
        self.atlas_combo.activated.connect(self._on_atlas_chosen)
        self.outline = QCheckBox("outlines only")
        self.outline.toggled.connect(self.set_outline)
        self.list = QListWidget()
        self.list.itemChanged.connect(self._on_item_changed)
        self.all_on = QPushButton("all on")
        self.all_off = QPushButton("all off")
        self.all_on.clicked.connect(lambda: self.set_all(True))
        self.all_off.clicked.connect(lambda: self.set_all(False))

        form = QFormLayout()
        form.addRow("atlas", self.atlas_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.all_on)
        buttons.addWidget(self.all_off)
        buttons.addWidget(self.outline)
        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.list, 1)

        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        existing = _layers.find_layer(self.viewer, "networks")
        if existing is not None:
            self.attach(existing)

    # -- following the viewer ----------------------------------------------------------------
    def _on_layer_inserted(self, event) -> None:
        if event.value.metadata.get(_layers.ROLE) == "networks":
            self.attach(event.value)

    def _on_layer_removed(self, event) -> None:
        if event.value is self.layer:
            self.layer = None
            self.list.clear()
            self.info.setText("The networks layer was removed.")

    def attach(self, layer) -> None:
        """Control ``layer`` (a networks Labels layer made by :mod:`.layers`)."""
        from ..io.results import ResultFolder

        self.layer = layer
        meta = layer.metadata
        path = meta.get(_layers.RESULT)
        try:
            self._result = ResultFolder(path) if path else None
        except (OSError, ValueError):
            self._result = None
        self.atlas_combo.blockSignals(True)
        self.atlas_combo.clear()
        atlases = self._result.atlas_names() if self._result is not None else []
        self.atlas_combo.addItems(atlases or [meta.get("atlas", "")])
        self.atlas_combo.setCurrentText(meta.get("atlas", ""))
        self.atlas_combo.blockSignals(False)
        self.info.setText(f"{len(meta['labels'])} networks of {meta.get('atlas')}; hover to see a name.")
        self.list.blockSignals(True)
        self.list.clear()
        for label, name, color, on in zip(meta["labels"], meta["names"], meta["colors"], meta["visible"]):
            item = QListWidgetItem(_swatch(color), f"{label}  {name}")
            item.setData(Qt.UserRole, int(label))
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if on else Qt.Unchecked)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.outline.blockSignals(True)
        self.outline.setChecked(bool(meta.get("outline", layer.contour)))
        self.outline.blockSignals(False)

    # -- user actions ------------------------------------------------------------------------
    def set_network_visible(self, label: int, visible: bool) -> None:
        """Show or hide the network with label value ``label``."""
        if self.layer is None:
            return
        _layers.set_network_visible(self.layer, label, visible)
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.UserRole) == int(label):
                self.list.blockSignals(True)
                item.setCheckState(Qt.Checked if visible else Qt.Unchecked)
                self.list.blockSignals(False)
        self.networks_changed.emit()

    def set_all(self, visible: bool) -> None:
        if self.layer is None:
            return
        for label in self.layer.metadata["labels"]:
            _layers.set_network_visible(self.layer, label, visible)
        self.attach(self.layer)
        self.networks_changed.emit()

    def set_outline(self, on: bool) -> None:
        """Draw the networks as outlines (``True``) or filled."""
        if self.layer is not None:
            _layers.outline_networks(self.layer, on)

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        self.set_network_visible(int(item.data(Qt.UserRole)), item.checkState() == Qt.Checked)

    def _on_atlas_chosen(self, index: int) -> None:
        atlas = self.atlas_combo.itemText(index)
        if self._result is None or self.layer is None or atlas == self.layer.metadata.get("atlas"):
            return
        from napari.layers import Layer
        from napari.utils.notifications import show_error

        try:
            item = _layers.network_layer_data(self._result, atlas, self.layer.metadata.get(_layers.MODEL))
        except (OSError, ValueError) as exc:
            show_error(f"Cannot show atlas {atlas!r}: {exc}")
            return
        if item is None:
            show_error(f"The result has no label image for atlas {atlas!r}.")
            return
        old = self.layer
        position = list(self.viewer.layers).index(old)
        new = Layer.create(*item)
        _layers.outline_networks(new, bool(old.contour))
        self.viewer.layers.remove(old)
        self.viewer.layers.insert(position, new)  # attach() runs through the inserted event


def visible_labels(layer) -> np.ndarray:
    """Label values of the networks currently shown in ``layer``."""
    labels = np.asarray(layer.metadata["labels"])
    return labels[np.asarray(layer.metadata["visible"], bool)]
