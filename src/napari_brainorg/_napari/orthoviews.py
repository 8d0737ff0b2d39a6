"""Orthogonal views: coronal and sagittal slices beside napari's axial canvas, at one crosshair.

napari has one canvas; it shows the axial slice. This dock widget draws the coronal
and sagittal planes through the same point (the **crosshair**, world ``(z, y, x)`` in
MNI mm), as FSLeyes and nilearn's ``view_img`` do. A click anywhere moves the crosshair
in all three: in the axial canvas it sets ``y`` and ``x`` (the axial slice keeps its
``z``), in the coronal panel ``x`` and ``z``, in the sagittal panel ``y`` and ``z``;
``z`` is napari's slice position, so the axial canvas follows a click in the panels.
On the axial canvas the crosshair is a small Shapes layer (four line segments with a gap
at the centre, so the voxel under it stays visible).

The panels are not extra OpenGL canvases: they are drawn here from the viewer's own
layers, bottom to top, the way napari draws them (each visible 3D image through its
contrast limits, gamma, colormap and opacity; labels through their colormap, as outlines
when the layer draws contours), sampled at the nearest voxel on a 1 mm grid of the MNI
brain box. So they show exactly the selected atom, its threshold (which lives in the
map's colormap), the R² and network layers as shown, and follow the left/right
convention of :mod:`.display`. A panel redraws only when something it shows changed and
only while it is visible; a change of the axial slice only moves a line.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from . import display
from . import layers as _layers
from ._docking import keep_beside_canvas

if TYPE_CHECKING:  # pragma: no cover
    import napari

CROSSHAIR_ROLE = "crosshair"
CROSSHAIR_NAME = "crosshair"
#: crosshair colour: white, the one hue-free colour that no map value (red-yellow, blue-cyan,
#: dark red-yellow R²) and no network outline (saturated, never grey or white) takes, so
#: the line is never read as a network or a value; thin, with a gap at the crosshair's centre
CROSSHAIR_COLOR = (1.0, 1.0, 1.0, 0.9)
#: half-width (mm) of the gap left at the crosshair's centre
CROSSHAIR_GAP_MM = 4.0
#: sampling step of the panels (mm)
GRID_MM = 1.0
_MARGIN_MM = 8.0
_BACKGROUND = (0, 0, 0)

#: the two planes drawn here: (name, axis held fixed, horizontal axis, vertical axis);
#: world axes are (z, y, x) = (0, 1, 2)
PLANES = {
    "coronal": (1, 2, 0),
    "sagittal": (2, 1, 0),
    "axial": (0, 2, 1),
}
#: the planes this dock widget draws (napari's canvas shows the axial one)
ORTHO_PLANES = ("coronal", "sagittal")
_AXIS_NAME = {0: "z", 1: "y", 2: "x"}
_BOX = (display.BRAIN_BOX["z"], display.BRAIN_BOX["y"], display.BRAIN_BOX["x"])


def _axis_values(axis: int, step: float = GRID_MM) -> np.ndarray:
    lo, hi = _BOX[axis]
    return np.arange(lo - _MARGIN_MM, hi + _MARGIN_MM + 1e-9, step)


def on_screen(widget) -> bool:
    """Whether any part of ``widget`` is on screen (a dock in a tab behind another is not,
    though Qt calls it visible)."""
    return widget.isVisible() and not widget.visibleRegion().isEmpty()


def horizontal_flipped(plane: str) -> bool:
    """Whether the plane's horizontal world axis runs right-to-left on screen.

    Coronal and axial: ``x`` (the subject's right) increases to the right in the neurological
    convention, to the left in the radiological one. Sagittal: anterior (``y``
    increasing) on the left, as FSLeyes draws it.
    """
    if plane in ("coronal", "axial"):
        return display.convention() == "radiological"
    return True


class VolumeSource:
    """A 3D volume drawn like a napari image layer without being one (a map of another model).

    Parameters
    ----------
    data : ndarray of shape (nz, ny, nx)
    affine : ndarray of shape (4, 4)
        Layer affine: data index ``(k, j, i)`` to world ``(z, y, x)`` mm.
    colormap : napari Colormap
    contrast_limits : (float, float)
    """

    _type_string = "image"
    rgb = False
    visible = True
    blending = "translucent"
    gamma = 1.0

    def __init__(self, data, affine, colormap, contrast_limits, opacity: float = 1.0):
        self.data = np.asarray(data)
        self.ndim = self.data.ndim
        self.affine_matrix = np.asarray(affine, float)
        self.colormap = colormap
        self.contrast_limits = tuple(contrast_limits)
        self.opacity = float(opacity)


def _world_to_data(layer) -> tuple[np.ndarray, np.ndarray] | None:
    """``(A, b)`` with ``data = A @ world + b`` for a layer's last three axes (public API only)."""
    if isinstance(layer, VolumeSource):
        inverse = np.linalg.inv(layer.affine_matrix)
        return inverse[:3, :3], inverse[:3, 3]
    ndim = layer.ndim
    if ndim < 3:
        return None
    world0 = np.zeros(ndim)
    b = np.asarray(layer.world_to_data(world0), float)
    A = np.empty((ndim, ndim))
    for i in range(ndim):
        e = world0.copy()
        e[i] = 1.0
        A[:, i] = np.asarray(layer.world_to_data(e), float) - b
    return A, b


def _transform_key(layer) -> tuple:
    if isinstance(layer, VolumeSource):
        return (layer.affine_matrix.tobytes(),)
    return (layer.affine.affine_matrix.tobytes(), tuple(np.asarray(layer.scale, float)),
            tuple(np.asarray(layer.translate, float)))


def _layer_slice(layer, axis: int, position: float, h: np.ndarray, v: np.ndarray, leading: tuple):
    """Nearest-voxel values of ``layer`` on the plane ``world[axis] = position``.

    Returns ``(values, inside)`` of shape (len(v), len(h)), or ``None`` when the layer
    cannot be sampled (not a 3D/4D numpy volume)."""
    data = layer.data
    if not isinstance(data, np.ndarray) or data.ndim not in (3, 4) or data.ndim != layer.ndim:
        return None
    key = _transform_key(layer) + (data.ndim,)
    cache = layer.__dict__.setdefault("_brainorg_w2d", {})
    if cache.get("key") != key:
        cache["key"], cache["value"] = key, _world_to_data(layer)
    A, b = cache["value"]
    _, haxis, vaxis = next(p for p in PLANES.values() if p[0] == axis)
    n = data.ndim
    off = n - 3
    fixed = np.zeros(n)
    if off:
        fixed[:off] = leading[-off:] if len(leading) >= off else 0.0
    fixed[off + axis] = position
    base = A @ fixed + b
    # an axis-aligned plane: each data index is an outer sum of the two in-plane terms
    inside = np.ones((v.size, h.size), bool)
    index = []
    for d in range(n):
        col = np.rint(base[d] + A[d, off + vaxis] * v[:, None] + A[d, off + haxis] * h[None, :])
        idx = col.astype(np.int64)
        inside &= (idx >= 0) & (idx < data.shape[d])
        index.append(idx)
    index = [np.where(inside, idx, 0) for idx in index]
    values = data[tuple(index)]
    return values, inside


def _image_rgba(layer, values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    lo, hi = (float(c) for c in layer.contrast_limits)
    norm = (np.asarray(values, float) - lo) / (hi - lo if hi != lo else 1.0)
    norm = np.clip(norm, 0.0, 1.0)
    gamma = float(getattr(layer, "gamma", 1.0))
    if gamma != 1.0:
        norm = norm ** gamma
    finite = np.isfinite(values)
    rgba = layer.colormap.map(np.where(finite, norm, 0.0).ravel()).reshape(values.shape + (4,))
    rgba[..., 3] *= (inside & finite)
    return rgba


def _labels_rgba(layer, values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    labels = np.where(inside, values, 0).astype(np.int64)
    # a labels colormap maps value by value in Python: map the few distinct labels only
    distinct, where = np.unique(labels, return_inverse=True)
    color_dict = getattr(layer.colormap, "color_dict", None)
    if color_dict is not None:  # DirectLabelColormap: its colours by value
        default = np.asarray(getattr(layer.colormap, "default_color", (0, 0, 0, 0)), float)
        colors = np.array([np.asarray(color_dict.get(int(d), default), float) for d in distinct]).reshape(-1, 4)
    else:
        colors = np.asarray(layer.colormap.map(distinct.astype(layer.data.dtype)), float).reshape(-1, 4)
    rgba = colors[where.reshape(labels.shape)]
    if getattr(layer, "contour", 0):
        edge = np.zeros(labels.shape, bool)
        edge[1:, :] |= labels[1:, :] != labels[:-1, :]
        edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
        edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
        edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        rgba[..., 3] *= edge & (labels != 0)
    rgba[..., 3] *= labels != 0
    return rgba


def _layer_rgba(layer, kind, axis, position, h, v, leading, cache):
    """RGBA of shape (len(v), len(h), 4) and the inside mask of one layer on one plane."""
    where = (id(layer), axis, h.size, v.size)
    sample_key = (id(layer.data), float(position), *_transform_key(layer), tuple(leading))
    if kind == "image":
        style_key = (id(layer.colormap), tuple(float(c) for c in layer.contrast_limits),
                     float(getattr(layer, "gamma", 1.0)))
    else:
        style_key = (id(layer.colormap), int(getattr(layer, "contour", 0)))
    hit = cache.get(where) if cache is not None else None
    if hit is not None and hit[0] == sample_key and hit[1] == style_key:
        return hit[2], hit[3]
    if hit is not None and hit[0] == sample_key:
        values, inside = hit[4]
    else:
        sampled = _layer_slice(layer, axis, position, h, v, leading)
        if sampled is None:
            return None, None
        values, inside = sampled
    rgba = _image_rgba(layer, values, inside) if kind == "image" else _labels_rgba(layer, values, inside)
    if cache is not None:
        cache[where] = (sample_key, style_key, rgba, inside, (values, inside))
    return rgba, inside


def render_plane(viewer: napari.Viewer, plane: str, position: float, step: float = GRID_MM,
                 cache: dict | None = None) -> np.ndarray:
    """The plane through ``position`` mm as the viewer's visible layers draw it.

    Parameters
    ----------
    viewer : napari.Viewer
    plane : {'coronal', 'sagittal', 'axial'}
    position : float
        ``y`` (coronal), ``x`` (sagittal) or ``z`` (axial) in mm.
    step : float
        Sampling step in mm.
    cache : dict, optional
        Kept between calls: each layer's sampled plane and its colours are reused while
        its data (object), transform, colormap, contrast limits and gamma are the same,
        so a threshold move or an atom click recomputes one layer only.

    Returns
    -------
    ndarray of shape (n_vertical, n_horizontal, 3), uint8
        Row 0 is the top of the panel (superior; anterior for axial), columns left to
        right on screen (:func:`horizontal_flipped`).
    """
    leading = tuple(viewer.dims.point[:-3]) if viewer.dims.ndim > 3 else ()
    return render_layers(list(viewer.layers), plane, position, step, cache, leading)


def render_layers(layers, plane: str, position: float, step: float = GRID_MM, cache: dict | None = None,
                  leading: tuple = ()) -> np.ndarray:
    """:func:`render_plane` of a list of layers (napari layers or :class:`VolumeSource`), bottom first."""
    axis, haxis, vaxis = PLANES[plane]
    h, v = _axis_values(haxis, step), _axis_values(vaxis, step)[::-1]
    out = np.zeros((v.size, h.size, 3), float)
    out[:] = np.asarray(_BACKGROUND, float) / 255.0
    for layer in layers:
        if not layer.visible or layer.opacity <= 0:
            continue
        kind = layer._type_string
        if kind not in ("image", "labels") or getattr(layer, "rgb", False):
            continue
        try:
            rgba, inside = _layer_rgba(layer, kind, axis, position, h, v, leading, cache)
        except (ValueError, IndexError, TypeError, np.linalg.LinAlgError):
            continue
        if rgba is None:
            continue
        alpha = rgba[..., 3:4] * float(layer.opacity)
        blending = str(getattr(layer.blending, "value", layer.blending))
        if blending == "additive":
            out += rgba[..., :3] * alpha
        elif blending == "opaque":
            out = np.where(inside[..., None], rgba[..., :3], out)
        else:
            out = out * (1.0 - alpha) + rgba[..., :3] * alpha
    if horizontal_flipped(plane):
        out = out[:, ::-1]
    return np.ascontiguousarray((np.clip(out, 0.0, 1.0) * 255).astype(np.uint8))


class SlicePanel(QWidget):
    """One plane: its image, the crosshair, orientation letters and the position in mm.

    Signals
    -------
    clicked(float, float)
        World coordinates (mm) of the clicked point along the plane's horizontal and
        vertical axes.
    """

    clicked = Signal(float, float)

    def __init__(self, plane: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.plane = plane
        self.axis, self.haxis, self.vaxis = PLANES[plane]
        self.h = _axis_values(self.haxis)
        self.v = _axis_values(self.vaxis)
        self.image: QImage | None = None
        self._buffer = None
        self.cross = (0.0, 0.0)  # (horizontal, vertical) world mm
        self.position = 0.0
        #: a line of text at the panel's bottom (what it shows), besides the plane's position
        self.title = ""
        self.show_cross = True
        self.show_position = True
        #: called before each paint: the owner draws what changed while the panel was hidden
        self.on_paint = None
        self.setMinimumSize(160, 140)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setCursor(Qt.CrossCursor)
        self.setToolTip(f"{plane} slice: click to move the crosshair")

    # geometry: the image keeps 1 mm = 1 mm on both axes, centred in the widget
    def image_rect(self) -> QRectF:
        w_mm = self.h[-1] - self.h[0] + GRID_MM
        h_mm = self.v[-1] - self.v[0] + GRID_MM
        scale = min(self.width() / w_mm, (self.height() - 2) / h_mm)
        pw, ph = w_mm * scale, h_mm * scale
        return QRectF((self.width() - pw) / 2, (self.height() - ph) / 2, pw, ph)

    def world_to_pixel(self, hval: float, vval: float) -> tuple[float, float]:
        """Widget pixel of the world point ``(hval, vval)`` on this plane."""
        rect = self.image_rect()
        w_mm = self.h[-1] - self.h[0] + GRID_MM
        h_mm = self.v[-1] - self.v[0] + GRID_MM
        fx = (hval - self.h[0] + GRID_MM / 2) / w_mm
        if horizontal_flipped(self.plane):
            fx = 1.0 - fx
        fy = 1.0 - (vval - self.v[0] + GRID_MM / 2) / h_mm
        return rect.left() + fx * rect.width(), rect.top() + fy * rect.height()

    def pixel_to_world(self, px: float, py: float) -> tuple[float, float]:
        """World ``(horizontal, vertical)`` mm at widget pixel ``(px, py)``."""
        rect = self.image_rect()
        w_mm = self.h[-1] - self.h[0] + GRID_MM
        h_mm = self.v[-1] - self.v[0] + GRID_MM
        fx = (px - rect.left()) / max(rect.width(), 1e-9)
        fy = (py - rect.top()) / max(rect.height(), 1e-9)
        if horizontal_flipped(self.plane):
            fx = 1.0 - fx
        return self.h[0] - GRID_MM / 2 + fx * w_mm, self.v[0] - GRID_MM / 2 + (1.0 - fy) * h_mm

    def set_rgb(self, rgb: np.ndarray) -> None:
        """Show an image of shape (n_vertical, n_horizontal, 3), uint8."""
        self._buffer = np.ascontiguousarray(rgb)
        h, w, _ = self._buffer.shape
        self.image = QImage(self._buffer.data, w, h, 3 * w, QImage.Format_RGB888)
        self.update()

    def set_cross(self, hval: float, vval: float, position: float) -> None:
        self.cross = (float(hval), float(vval))
        self.position = float(position)
        self.update()

    def _letters(self) -> tuple[str, str]:
        """Letters at the left and right edges."""
        if self.plane in ("coronal", "axial"):
            return ("L", "R") if not horizontal_flipped(self.plane) else ("R", "L")
        return ("A", "P") if horizontal_flipped(self.plane) else ("P", "A")

    def _vertical_letters(self) -> tuple[str, str]:
        """Letters at the top and bottom edges."""
        return ("A", "P") if self.vaxis == 1 else ("S", "I")

    def paintEvent(self, event):  # noqa: N802 - Qt's name
        if self.on_paint is not None:
            self.on_paint()
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(*_BACKGROUND))
        rect = self.image_rect()
        if self.image is not None:
            painter.drawImage(rect, self.image)
        if self.show_cross:
            color = QColor.fromRgbF(*CROSSHAIR_COLOR)
            pen = QPen(color)
            pen.setWidthF(1.0)
            painter.setPen(pen)
            x, y = self.world_to_pixel(*self.cross)
            gap = CROSSHAIR_GAP_MM * rect.width() / (self.h[-1] - self.h[0] + GRID_MM)
            painter.drawLine(QPointF(rect.left(), y), QPointF(x - gap, y))
            painter.drawLine(QPointF(x + gap, y), QPointF(rect.right(), y))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, y - gap))
            painter.drawLine(QPointF(x, y + gap), QPointF(x, rect.bottom()))
        font = QFont(painter.font())
        font.setPointSizeF(10.0)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor("#f0f0f0"))
        left, right = self._letters()
        mid = rect.top() + rect.height() / 2
        painter.drawText(QRectF(rect.left() + 2, mid - 10, 20, 20), Qt.AlignLeft | Qt.AlignVCenter, left)
        painter.drawText(QRectF(rect.right() - 22, mid - 10, 20, 20), Qt.AlignRight | Qt.AlignVCenter, right)
        cx = rect.left() + rect.width() / 2
        top, bottom = self._vertical_letters()
        painter.drawText(QRectF(cx - 10, rect.top() + 1, 20, 18), Qt.AlignCenter, top)
        painter.drawText(QRectF(cx - 10, rect.bottom() - 19, 20, 18), Qt.AlignCenter, bottom)
        font.setBold(False)
        font.setPointSizeF(9.0)
        painter.setFont(font)
        painter.setPen(QColor("#d0d0d0"))
        if self.show_position:  # short: it shares the top edge with the centred letter
            painter.drawText(QRectF(rect.left() + 4, rect.top() + 2, rect.width(), 18), Qt.AlignLeft | Qt.AlignTop,
                             f"{_AXIS_NAME[self.axis]} {self.position:+.0f}")
        if self.title:
            painter.drawText(QRectF(rect.left() + 4, rect.bottom() - 20, rect.width() - 8, 18),
                             Qt.AlignLeft | Qt.AlignBottom, self.title)
        painter.end()

    def mousePressEvent(self, event):  # noqa: N802 - Qt's name
        if event.button() != Qt.LeftButton:
            return
        pos = event.position() if hasattr(event, "position") else event.pos()
        hval, vval = self.pixel_to_world(pos.x(), pos.y())
        self.clicked.emit(float(hval), float(vval))


def crosshair_layer_data(position) -> tuple:
    """Shapes layer-data tuple: the crosshair on the axial canvas at world ``(z, y, x)``."""
    return (_cross_lines(position), {
        "name": CROSSHAIR_NAME, "shape_type": "line", "edge_color": [CROSSHAIR_COLOR],
        "edge_width": 0.6, "opacity": 1.0, "axis_labels": ("y", "x"),
        "blending": "translucent_no_depth", "metadata": {_layers.ROLE: CROSSHAIR_ROLE},
    }, "shapes")


def _cross_lines(position) -> list[np.ndarray]:
    """Four segments (y, x) from the brain box's edges to the gap around ``position``.

    They never leave the box: the layer's extent stays inside the template's, so moving
    the crosshair never changes napari's world range (which would reset the view)."""
    _, y, x = (float(v) for v in np.asarray(position, float)[-3:])
    (y0, y1), (x0, x1) = display.BRAIN_BOX["y"], display.BRAIN_BOX["x"]
    y0, y1, x0, x1 = y0 - _MARGIN_MM, y1 + _MARGIN_MM, x0 - _MARGIN_MM, x1 + _MARGIN_MM
    y, x = min(max(y, y0), y1), min(max(x, x0), x1)
    g = CROSSHAIR_GAP_MM
    return [np.array([[y, x0], [y, max(x - g, x0)]]), np.array([[y, min(x + g, x1)], [y, x1]]),
            np.array([[y0, x], [max(y - g, y0), x]]), np.array([[min(y + g, y1), x], [y1, x]])]


def crosshair_position(layer) -> tuple[float, float]:
    """``(y, x)`` mm of the crosshair a crosshair layer draws."""
    lines = layer.data
    return float(lines[0][0][0]), float(lines[2][0][1])


class OrthoViews(QWidget):
    """Dock widget: the coronal and sagittal planes through the crosshair (see the module).

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Signals
    -------
    moved(object)
        The crosshair moved; argument: world ``(z, y, x)`` in mm (ndarray of shape (3,)).
    """

    moved = Signal(object)

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        # from the Plugins menu too: a column beside the canvas, not a tab, so that the three
        # views and the explorer's table and plots are on screen together
        keep_beside_canvas(self)
        self.viewer = napari_viewer
        self.position = np.zeros(3)  # (z, y, x) mm
        self.panels = {name: SlicePanel(name, self) for name in ORTHO_PLANES}
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        hint = QLabel("Click in any view (the axial canvas too) to move the crosshair.")
        hint.setWordWrap(True)
        hint.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(3)
        layout.addWidget(self.label)
        for name, panel in self.panels.items():
            layout.addWidget(panel, 1)
            panel.clicked.connect(lambda h, v, name=name: self._on_panel_click(name, h, v))
            panel.on_paint = self._on_panel_paint
        layout.addWidget(hint)
        layout.addLayout(self._convention_row())
        self._dirty = {name: True for name in ORTHO_PLANES}
        self._shown_at = {name: None for name in ORTHO_PLANES}
        self._scheduled = False
        self._watched: weakref.WeakSet = weakref.WeakSet()
        self.render_ms: list[float] = []
        self._cache: dict = {}
        self._moving = False

        viewer = self.viewer
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.events.moved.connect(self._on_layers_changed)
        viewer.dims.events.point.connect(self._on_dims)
        display._camera(viewer).events.orientation.connect(self._on_layers_changed)
        display._camera(viewer).events.orientation.connect(self._sync_convention)
        viewer.mouse_drag_callbacks.append(self._on_canvas_drag)
        for layer in list(viewer.layers):
            self._watch(layer)
        z = self._axial_z()
        self.position = np.array([z if z is not None else 0.0, 0.0, 0.0])
        self._update_cross()

    def _convention_row(self) -> QHBoxLayout:
        """The left/right convention, beside the views it flips (all views and the canvas)."""
        self.convention_combo = QComboBox()
        self.convention_combo.addItems(list(display.CONVENTIONS))
        self.convention_combo.setToolTip("Which side of the screen shows the subject's right: "
                                         "neurological, R on the right; radiological, R on the left")
        self.convention_combo.setCurrentIndex(display.CONVENTIONS.index(display.convention()))
        self.convention_combo.activated.connect(
            lambda index: display.set_convention(display.CONVENTIONS[index], self.viewer))
        row = QHBoxLayout()  # the combo alone: its items say what they are, the column is narrow
        row.addWidget(self.convention_combo, 1)
        return row

    def _sync_convention(self, event=None) -> None:
        from ._tasks import _deleted

        if not _deleted(self):
            self.convention_combo.setCurrentIndex(display.CONVENTIONS.index(display.convention()))

    # -- following the viewer -------------------------------------------------------------
    _EVENTS = ("data", "colormap", "contrast_limits", "opacity", "visible", "gamma", "blending",
               "affine", "contour")

    def _watch(self, layer) -> None:
        if layer in self._watched or layer.metadata.get(_layers.ROLE) == CROSSHAIR_ROLE:
            return
        self._watched.add(layer)
        ref = weakref.ref(self)

        lid = id(layer)

        def changed(event=None):
            me = ref()
            if me is not None:
                # what this layer showed is recomputed (ids of replaced objects can recur)
                for key in [k for k in me._cache if k[0] == lid]:
                    del me._cache[key]
                me._on_layers_changed()

        for name in self._EVENTS:
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(changed)

    def _on_inserted(self, event) -> None:
        self._watch(event.value)
        if event.value.metadata.get(_layers.ROLE) != CROSSHAIR_ROLE:
            self._on_layers_changed()
            cross = self._crosshair_layer()
            if cross is None and self._has_volume():
                self._update_cross()
            elif cross is not None:  # the crosshair stays on top of the maps
                layers = self.viewer.layers
                index = layers.index(cross)
                if index != len(layers) - 1:
                    layers.move(index, len(layers))

    def _has_volume(self) -> bool:
        return any(layer.ndim >= 3 and layer._type_string in ("image", "labels") for layer in self.viewer.layers)

    def _on_layers_changed(self, event=None) -> None:
        from ._tasks import _deleted

        if _deleted(self):
            return
        if event is not None and getattr(event, "type", "") == "removed":
            gone = id(event.value)
            for key in [k for k in self._cache if k[0] == gone]:
                del self._cache[key]
        for name in self._dirty:
            self._dirty[name] = True
        self._schedule()

    def _axial_z(self) -> float | None:
        if self.viewer.dims.ndim < 3:
            return None
        return float(self.viewer.dims.point[self.viewer.dims.ndim - 3])

    def _on_dims(self, event=None) -> None:
        from ._tasks import _deleted

        if _deleted(self):
            return
        z = self._axial_z()
        if z is not None and z != self.position[0] and not self._moving:
            self.position[0] = z
            self._update_cross(move_dims=False)
        if self.viewer.dims.ndim > 3:  # a 4D layer: another volume shown
            self._on_layers_changed()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(0, self._render_pending)

    def _render_pending(self) -> None:
        from ._tasks import _deleted, _report

        self._scheduled = False
        if _deleted(self):
            return
        try:
            self.render_now()
        except Exception as exc:  # noqa: BLE001 - a panel never takes napari down
            _report(exc, "orthogonal views")

    def _stale(self) -> bool:
        return any(self._dirty[name] or self._shown_at[name] != float(self.position[panel.axis])
                   for name, panel in self.panels.items())

    def _on_panel_paint(self) -> None:
        if not self._scheduled and self._stale():  # shown again after changes while hidden
            self._schedule()

    def render_now(self, force: bool = False) -> None:
        """Redraw the panels whose content changed (only when on screen, unless ``force``)."""
        import time

        if not force and not on_screen(self):
            return
        t = time.perf_counter()
        for name, panel in self.panels.items():
            at = float(self.position[panel.axis])
            if self._dirty[name] or self._shown_at[name] != at:
                panel.set_rgb(render_plane(self.viewer, name, at, cache=self._cache))
                self._dirty[name] = False
                self._shown_at[name] = at
        self.render_ms.append(1e3 * (time.perf_counter() - t))
        del self.render_ms[:-200]

    # -- the crosshair ----------------------------------------------------------------------
    def _crosshair_layer(self):
        return _layers.find_layer(self.viewer, CROSSHAIR_ROLE)

    def set_position(self, world) -> None:
        """Move the crosshair to world ``(z, y, x)`` mm (the axial slice moves to its ``z``)."""
        world = np.asarray(world, float)[-3:]
        self.position = world.copy()
        self._update_cross(move_dims=True)

    def _update_cross(self, move_dims: bool = False) -> None:
        z, y, x = self.position
        if move_dims and self.viewer.dims.ndim >= 3:
            axis = self.viewer.dims.ndim - 3
            self._moving = True
            try:
                self.viewer.dims.set_point(axis, z)
            finally:
                self._moving = False
            z = self._axial_z()
            self.position[0] = z
        for panel in self.panels.values():
            panel.set_cross(self.position[panel.haxis], self.position[panel.vaxis], self.position[panel.axis])
        if self._has_volume():
            layer = self._crosshair_layer()
            if layer is None:
                # not now: this may run inside napari's adding of another layer (its dims
                # change), and a layer added there breaks the layer list's Qt model
                # ("QSortFilterProxyModel: invalid inserted rows")
                QTimer.singleShot(0, self._add_crosshair_layer)
            elif crosshair_position(layer) != (float(self.position[1]), float(self.position[2])):
                layer.data = _cross_lines(self.position)
        self.label.setText(self._describe())
        self._schedule()
        self.moved.emit(self.position.copy())

    def _add_crosshair_layer(self) -> None:
        from napari.layers import Layer

        from ._tasks import _deleted

        if _deleted(self) or self._crosshair_layer() is not None or not self._has_volume():
            return
        data, kwargs, kind = crosshair_layer_data(self.position)
        layer = Layer.create(data, kwargs, kind)
        layer.editable = False
        display.append_unselected(self.viewer, layer)
        layers = self.viewer.layers
        index = layers.index(layer)  # the A/P/L/R letters moved above it while it was added
        if index != len(layers) - 1:
            layers.move(index, len(layers))

    def _describe(self) -> str:
        text = display.mni_text(self.position)
        layer = _layers.find_layer(self.viewer, "atom_map")
        if layer is not None:
            value = _layers.value_at(layer, self.position)
            if value is not None:
                text += f" · {layer.metadata.get('stat', 'map')} = {float(value):+.2f}"
        return text

    def _on_panel_click(self, plane: str, hval: float, vval: float) -> None:
        panel = self.panels[plane]
        world = self.position.copy()
        world[panel.haxis], world[panel.vaxis] = hval, vval
        self.set_position(world)
        # the voxel panel of the atom explorer follows a click here as it follows the canvas
        from ._tasks import _report

        try:
            for widget in _layers.docked_widgets_with(self.viewer, "show_voxel"):
                if widget.state is not None:
                    widget.show_voxel(self.position)
        except Exception as exc:  # noqa: BLE001 - a click never takes napari down
            _report(exc, "orthogonal views")

    def _on_canvas_drag(self, viewer, event):
        """A click (press and release without a drag) on the axial canvas moves the crosshair."""
        from ._tasks import _deleted

        if _deleted(self) or event.type != "mouse_press" or event.button != 1 or viewer.dims.ndisplay != 2:
            return
        start = np.asarray(event.position, float)
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = dragged or np.linalg.norm(np.asarray(event.position, float) - start) > 2.0
            yield
        if dragged or _deleted(self) or len(start) < 3:
            return
        try:
            self.set_position(start[-3:])
        except Exception as exc:  # noqa: BLE001 - a click never takes napari down
            from ._tasks import _report

            _report(exc, "orthogonal views")


def dock_ortho_views(viewer: napari.Viewer, raise_: bool = False) -> OrthoViews:
    """Dock the :class:`OrthoViews` in a column of their own beside the canvas (once per viewer).

    ``raise_`` is accepted for the callers of the tabbed layout; the column is always shown.
    """
    from ._docking import place_beside_canvas

    docked = viewer.window.dock_widgets
    if PANEL_NAME in docked and isinstance(docked[PANEL_NAME], OrthoViews):
        return docked[PANEL_NAME]
    panel = OrthoViews(viewer)
    dock = viewer.window.add_dock_widget(panel, name=PANEL_NAME, area="left", tabify=False)
    place_beside_canvas(dock)
    return panel


#: the dock's name: short enough to stand whole in the title of a 170 px column
PANEL_NAME = "Ortho views"
