"""How a viewer shows brains: one place for orientation, labels, coordinates and framing.

Every route into the plugin (the reader behind File ▸ Open, drag and drop and
``viewer.open(DIR, plugin=...)``, a plain NIfTI, Open Sample, ``brainorg view``, the
pipeline widget) ends in :func:`install`, which makes the viewer:

- show axial slices seen from above, anterior up, in the **neurological**
  convention (the subject's right on the screen's right) or, with
  :func:`set_convention` (``'radiological'``, or ``$NAPARI_BRAINORG_CONVENTION``),
  the subject's right on the left;
- write ``A``, ``P``, ``R`` and ``L`` at the brain's edges (a small Points layer
  of text, anchored in world space so that the labels follow any flip);
- print the cursor position as **MNI x, y, z in mm** in the status bar of every
  layer this plugin made, with the value under the mouse of every map shown (the
  atom's map, R², the network), not only the selected layer's; the slice position
  (``axial z = 18 mm``) and the cursor in the canvas's corner;
- fit the canvas to the brain when the first brain layer arrives;
- leave a map, not an atlas, as the active layer: napari activates each layer it adds,
  and an editable Labels layer active is paint and erase one key away.

The layers' world axes are ``(z, y, x)`` in mm (see :mod:`.layers`); napari's 2D
view shows the last two, ``y`` (posterior -> anterior) and ``x`` (left -> right).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layer_style import finish_layer

if TYPE_CHECKING:  # pragma: no cover
    import napari

CONVENTIONS = ("neurological", "radiological")
CONVENTION_ENV = "NAPARI_BRAINORG_CONVENTION"
#: metadata key marking a layer as one this plugin styled (its status shows MNI mm)
BRAIN = "brainorg_brain"
ORIENTATION_NAME = "orientation (A/P/L/R)"
ORIENTATION_ROLE = "orientation"
#: MNI152 brain extent (mm) used to place the labels and frame the view
BRAIN_BOX = {"x": (-78.0, 78.0), "y": (-112.0, 76.0), "z": (-72.0, 86.0)}

_state: dict[str, Any] = {"convention": None}
_installed: weakref.WeakSet = weakref.WeakSet()
#: layers whose finishing touches (colour bar, outlines) come in a later turn of the event loop
#: (:func:`finish_later`): making napari's colour-bar visual costs as much as the layer's own
_deferred: weakref.WeakSet = weakref.WeakSet()


def finish_later(layer) -> None:
    """Mark ``layer`` (before it is added) to be finished by :func:`finish_inserted` later."""
    _deferred.add(layer)


def finish_inserted(viewer, layer) -> None:
    """The finishing touches of a brain layer: outlines or a colour bar (and its labels)."""
    _deferred.discard(layer)
    finish_layer(layer)
    if getattr(getattr(layer, "colorbar", None), "visible", False):
        _label_colorbar_later(viewer, layer)


def convention() -> str:
    """The display convention in force: ``'neurological'`` (default) or ``'radiological'``."""
    if _state["convention"] is None:
        value = os.environ.get(CONVENTION_ENV, "neurological").strip().lower() or "neurological"
        if value not in CONVENTIONS:
            from ..errors import check_choice

            check_choice(CONVENTION_ENV, value, CONVENTIONS)
        _state["convention"] = value
    return _state["convention"]


def set_convention(value: str, viewer: napari.Viewer | None = None) -> None:
    """Choose the left/right convention (for every viewer; ``viewer`` is re-oriented now)."""
    from ..errors import check_choice

    check_choice("convention", value, CONVENTIONS)
    _state["convention"] = value
    viewers = [viewer] if viewer is not None else list(_installed)
    for v in viewers:
        orient(v)
        _update_corner(v)  # the corner names the convention: now, not when the slice next moves


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _text_overlay(viewer):
    canvas = getattr(viewer, "canvas", None)
    overlays = getattr(canvas, "overlays", None) if canvas is not None else None
    text = getattr(overlays, "text", None) if overlays is not None else None
    return text if text is not None else viewer.text_overlay


def orient(viewer: napari.Viewer) -> None:
    """Axial view, anterior up, left/right as :func:`convention` says."""
    if viewer.dims.ndim < 2:
        return
    camera = _camera(viewer)
    horizontal = "right" if convention() == "neurological" else "left"
    if tuple(camera.orientation2d) != ("up", horizontal):
        camera.orientation2d = ("up", horizontal)


def _fit_to_brain(viewer: napari.Viewer) -> None:
    """Centre on the brain and zoom so that it fills the canvas (with a small margin)."""
    viewer.reset_view()
    try:
        size = np.asarray(viewer._canvas_size, float)  # (height, width) in px
    except AttributeError:  # pragma: no cover - older napari
        return
    if not np.all(size > 10):
        return
    (y0, y1), (x0, x1) = BRAIN_BOX["y"], BRAIN_BOX["x"]
    zoom = 0.95 * min(size[0] / (y1 - y0), size[1] / (x1 - x0))
    camera = _camera(viewer)
    center = list(camera.center)
    center[-2:] = [(y0 + y1) / 2, (x0 + x1) / 2]
    camera.center = tuple(center)
    camera.zoom = zoom


def go_to_origin(viewer: napari.Viewer) -> None:
    """Show the axial slice through z = 0 mm (MNI: the anterior commissure) when in range."""
    if viewer.dims.ndim < 3:
        return
    axis = viewer.dims.ndim - 3
    lo, hi = viewer.dims.range[axis][:2]
    if lo <= 0.0 <= hi:
        viewer.dims.set_point(axis, 0.0)


# -- status in MNI mm ----------------------------------------------------------------------


def mni_text(world) -> str:
    """``'MNI x, y, z = (+12, -40, +18) mm'`` of a world position ``(..., z, y, x)``."""
    world = np.asarray(world, float)
    z, y, x = world[-3:] if world.size >= 3 else (np.nan, *world[-2:])
    return f"MNI x, y, z = ({x:+.0f}, {y:+.0f}, {z:+.0f}) mm"


def mni_status(layer, position=None, viewer_ref=None, **kwargs) -> dict:
    """``layer.get_status`` with the coordinates given as MNI x, y, z in mm, followed by the
    value under the mouse of the viewer's other shown maps (:func:`values_under`)."""
    status = type(layer).get_status(layer, position, **kwargs)
    if position is None:
        return status
    world = np.asarray(position, float)
    if not kwargs.get("world", False):
        world = np.asarray(layer.data_to_world(world), float)
    coords = mni_text(world)
    value = status.get("value", "")
    status["coords"] = coords
    text = f"{coords}: {value}" if value != "" else coords
    viewer = viewer_ref() if viewer_ref is not None else None
    others = values_under(viewer, world, skip=layer) if viewer is not None else []
    status["coordinates"] = " · ".join([text, *others])
    return status


def _voxel_value(layer, world):
    """The layer's value at ``world`` (nearest voxel), or ``None`` outside its data."""
    data = layer.data
    if not isinstance(data, np.ndarray) or data.ndim != layer.ndim or world.size < layer.ndim:
        return None
    index = np.rint(np.asarray(layer.world_to_data(tuple(world[-layer.ndim:])), float)).astype(int)
    if np.any(index < 0) or np.any(index >= np.asarray(data.shape)):
        return None
    return data[tuple(index)]


def values_under(viewer, world, skip=None) -> list[str]:
    """``['atom 5 z = +3.21', 'R² = 0.012', 'network Visual']``: the value at world
    ``(z, y, x)`` mm of each visible map of ``viewer`` (top first) other than ``skip``.

    The maps are this plugin's image layers that show values (an atom's map, R², a
    statistical NIfTI; not the template) and its network/atlas layers (by name).
    """
    out = []
    for layer in reversed(list(viewer.layers)):
        meta = layer.metadata
        role = meta.get("brainorg_role")
        if layer is skip or not layer.visible or not is_brain_layer(layer) or role in (
                "template", ORIENTATION_ROLE, "crosshair"):
            continue
        kind = layer._type_string
        if kind == "image" and (role or meta.get("brainorg_stat_map")):
            value = _voxel_value(layer, np.asarray(world, float))
            if value is None or not np.isfinite(value):
                continue
            if role == "atom_map":
                out.append(f"atom {meta.get('atom', '')} {meta.get('stat', 'map')} = {float(value):+.2f}")
            elif role == "r2":
                out.append(f"R² = {float(value):.3f}")
            else:
                out.append(f"{layer.name} = {float(value):.3g}")
        elif kind == "labels":
            value = _voxel_value(layer, np.asarray(world, float))
            if not value:
                continue
            names = dict(zip(meta.get("labels", []), meta.get("names", [])))
            out.append(f"{'network' if role == 'networks' else layer.name} {names.get(int(value), int(value))}")
    return out


def mark_brain_layer(layer, viewer=None) -> None:
    """Give ``layer`` the MNI status (its status bar text; with ``viewer``, the other maps'
    values under the mouse too) and mark it as styled here."""
    import functools

    layer.metadata[BRAIN] = True
    if getattr(layer.get_status, "_brainorg", False):
        return
    ref = weakref.ref(viewer) if viewer is not None else None
    status = functools.partial(mni_status, layer, viewer_ref=ref)
    status._brainorg = True  # type: ignore[attr-defined]
    layer.get_status = status


def _activate_a_map(viewer, labels) -> None:
    """Make the top visible map (an image layer of this plugin, not the template; else any
    image) the active layer when ``labels`` (a Labels layer just added) still is."""
    if viewer.layers.selection.active is not labels or labels not in viewer.layers:
        return
    choice = _top_map(viewer)
    if choice is not None:
        viewer.layers.selection.active = choice


def _top_map(viewer):
    """The top visible map (an image layer of this plugin, not the template; else any image), or ``None``."""
    images = [layer for layer in reversed(list(viewer.layers)) if layer._type_string == "image"]
    maps = [layer for layer in images if layer.visible and is_brain_layer(layer)
            and layer.metadata.get("brainorg_role") != "template"]
    return (maps or images or [None])[0]


# -- A/P/L/R labels --------------------------------------------------------------------------


def orientation_layer_data() -> tuple:
    """Points layer-data tuple: A, P, R, L just outside the MNI brain, on every axial slice.

    2D points (``y``, ``x`` in mm): napari broadcasts a 2D layer over the leading axes,
    so the letters stay on every slice; anchored in world space, they follow a flip.
    """
    (y0, y1), (x0, x1) = BRAIN_BOX["y"], BRAIN_BOX["x"]
    ym, xm = (y0 + y1) / 2, (x0 + x1) / 2
    points = np.array([[y1 + 4, xm], [y0 - 4, xm], [ym, x1 + 6], [ym, x0 - 6]], float)
    kwargs = {
        "name": ORIENTATION_NAME,
        "axis_labels": ("y", "x"),
        "size": 0.01,
        "face_color": "transparent",
        "border_width": 0,
        "features": {"label": ["A", "P", "R", "L"]},
        "text": {"string": "{label}", "size": 14, "color": "#f0f0f0", "anchor": "center"},
        "opacity": 0.9,
        "blending": "translucent_no_depth",
        "metadata": {"brainorg_role": ORIENTATION_ROLE},
    }
    return (points, kwargs, "points")


#: milliseconds between making the A/P/L/R layer and adding it (room for a repaint and input)
ORIENTATION_GAP_MS = 10


def _has_orientation_labels(viewer: napari.Viewer) -> bool:
    return any(layer.metadata.get("brainorg_role") == ORIENTATION_ROLE for layer in viewer.layers)


def _ensure_orientation_labels(viewer: napari.Viewer) -> None:
    """Add the A/P/L/R labels in three later turns of the event loop: the layer is made in one,
    added (hidden) in the next, shown (its first draw) in the third.

    Made with the first brain layer, in the same turn, they froze the window for a
    quarter to half a second more (a points layer with text: its features table, its
    visual and its controls); they appear a few tens of milliseconds after it instead.
    """
    from qtpy.QtCore import QTimer

    if viewer.__dict__.get("_brainorg_orientation_pending") or _has_orientation_labels(viewer):
        return
    viewer.__dict__["_brainorg_orientation_pending"] = True
    ref = weakref.ref(viewer)

    def show(viewer_, layer):
        if layer in viewer_.layers:
            layer.visible = True

    def add(viewer_, layer):
        from ._tasks import viewer_alive

        viewer_.__dict__.pop("_brainorg_orientation_pending", None)
        if viewer_alive(viewer_) and not _has_orientation_labels(viewer_):
            # the letters never take the selection (the status bar follows the active layer)
            append_unselected(viewer_, layer)
            QTimer.singleShot(ORIENTATION_GAP_MS, lambda: _alive(ref, lambda v: show(v, layer)))

    def make(viewer_):
        from napari.layers import Layer

        from ._tasks import viewer_alive

        if not viewer_alive(viewer_):
            return
        data, kwargs, kind = orientation_layer_data()
        layer = Layer.create(data, {**kwargs, "visible": False}, kind)
        layer.editable = False
        QTimer.singleShot(ORIENTATION_GAP_MS, lambda: _alive(ref, lambda v: add(v, layer)))

    QTimer.singleShot(ORIENTATION_GAP_MS, lambda: _alive(ref, make))


@contextlib.contextmanager
def adding_unselected(viewer: napari.Viewer):
    """Inside, a layer added to ``viewer`` leaves the selection as it is (napari selects the
    layer it adds, and the controls panel makes and shows its controls at once: the first
    time for a kind of layer, a tenth to a third of a second more in the turn that adds
    it). :func:`activate_added` chooses the active layer afterwards."""
    layers = viewer.layers
    activate = getattr(layers, "_activate_on_insert", None)
    if activate is None:  # another napari: the added layer is selected, as before
        yield
        return
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = activate


def activate_added(viewer: napari.Viewer, added: list) -> None:
    """Make active the layer napari would have left active after adding ``added`` one by one:
    the last one, or, when that is a Labels layer, the top visible map (:func:`_activate_a_map`)."""
    added = [layer for layer in added if layer in viewer.layers]
    if not added:
        return
    last = added[-1]
    choice = _top_map(viewer) if last._type_string == "labels" else None
    viewer.layers.selection.active = choice if choice is not None else last


@contextlib.contextmanager
def letters_held(viewer: napari.Viewer):
    """Inside, the brain layers added to ``viewer`` do not bring the A/P/L/R labels (the
    sample returns them itself: :func:`letters_for_sample`); letters already on their way stay."""
    held = not viewer.__dict__.get("_brainorg_orientation_pending")
    if held:
        viewer.__dict__["_brainorg_orientation_pending"] = True
    try:
        yield
    finally:
        if held:
            viewer.__dict__.pop("_brainorg_orientation_pending", None)


def letters_for_sample(viewer: napari.Viewer) -> tuple:
    """The A/P/L/R labels' layer-data tuple, for napari to add to ``viewer`` as a sample's layer.

    Letters ``viewer`` shows already are taken out (the new ones take their place, on top).
    napari would select the layer it adds (and show its controls): it is added unselected
    instead, as :func:`append_unselected` adds them, and not editable; hidden, and shown in
    a later turn of the event loop (their first draw apart from napari's adding them).
    """
    from qtpy.QtCore import QTimer

    for layer in [layer for layer in viewer.layers if layer.metadata.get("brainorg_role") == ORIENTATION_ROLE]:
        viewer.layers.remove(layer)
    layers = viewer.layers
    activate = getattr(layers, "_activate_on_insert", None)
    if activate is not None:
        layers._activate_on_insert = False
    ref = weakref.ref(viewer)

    def show():  # once napari has added the letters: their first draw in a turn of its own
        if activate is not None:
            layers._activate_on_insert = activate
        _alive(ref, lambda v: [setattr(layer, "visible", True) for layer in v.layers
                               if layer.metadata.get("brainorg_role") == ORIENTATION_ROLE])

    QTimer.singleShot(ORIENTATION_GAP_MS, show)
    data, kwargs, kind = orientation_layer_data()
    return (data, {**kwargs, "visible": False}, kind)


def append_unselected(viewer, layer) -> None:
    """Add ``layer`` to ``viewer`` keeping the selection and the active layer as they were.

    napari selects the layer it adds; the selection is put back with its events blocked, so
    that nothing listening sees a change (the selection ends as it began): the layer
    controls panel no longer shows the new layer's controls and then the old ones again
    (each first show of a controls widget: 50 to 100 ms with the window frozen).
    """
    selection = viewer.layers.selection
    selected, current = list(selection), selection._current
    with selection.events.blocker_all():
        viewer.layers.append(layer)
        selection.clear()
        selection.update(selected)  # the active layer follows: the one selected layer, if one
        selection._current = current


# -- canvas corner: slice and cursor in mm -------------------------------------------------


def corner_text(viewer: napari.Viewer) -> str:
    """``'axial z = +18 mm  ·  neurological (R on right)'``; with the mouse on the canvas,
    ``'z +18 mm · neuro. (R on right) · MNI (+12, -40, +18) mm'`` (short: the canvas may
    be 500 px wide)."""
    text = []
    if viewer.dims.ndim >= 3:
        z = float(viewer.dims.point[viewer.dims.ndim - 3])
        text.append(f"axial z = {z:+.0f} mm")
    side = "R on right" if convention() == "neurological" else "R on left"
    if getattr(viewer, "mouse_over_canvas", False):
        text[-1:] = [f"z {z:+.0f} mm"] if text else []
        text.append(f"{convention()[:5]}. ({side})")
        text.append(mni_text(viewer.cursor.position).replace("MNI x, y, z = ", "MNI "))
    else:
        text.append(f"{convention()} ({side})")
    return ("  ·  " if len(text) < 3 else " · ").join(text)


def _update_corner(viewer) -> None:
    from ._glyphs import glyphs_ready

    if not glyphs_ready(viewer):  # its text comes when its characters are drawn
        return
    try:
        _text_overlay(viewer).text = corner_text(viewer)
        _slider_in_mm(viewer)
    except RuntimeError:  # the window is being torn down
        pass


def _slider_in_mm(viewer) -> None:
    """The slice slider says where it is in mm (``z +18 mm``), not napari's voxel index.

    napari's slider shows the step index and the number of steps; for a brain in MNI mm
    the position is what a user reads and types into other tools. The index fields are
    hidden and a label after the slider shows the position, for each spatial axis."""
    qt_dims = getattr(getattr(getattr(viewer, "window", None), "_qt_viewer", None), "dims", None)
    sliders = getattr(qt_dims, "slider_widgets", None)
    if not sliders or viewer.dims.ndim < 3:
        return
    from qtpy.QtWidgets import QLabel

    first_spatial = viewer.dims.ndim - 3
    for axis, slider in enumerate(sliders):
        if axis < first_spatial or not hasattr(slider, "curslice_label"):
            continue
        label = getattr(slider, "_brainorg_mm", None)
        if label is None:
            label = slider._brainorg_mm = QLabel(slider)  # napari styles "slice_label" narrow
            label.setToolTip("Slice position in MNI mm")
            slider.layout().addWidget(label)
            label.setMinimumWidth(label.fontMetrics().horizontalAdvance("z -100 mm") + 4)
            for index_field in (slider.curslice_label, slider.totslice_label):
                index_field.hide()
            for n in range(slider.layout().count()):  # napari's bar between the two index fields
                widget = slider.layout().itemAt(n).widget()
                if widget is not None and widget.objectName() == "slice_label_sep":
                    widget.hide()
        name = "zyx"[axis - first_spatial]
        label.setText(f"{name} {float(viewer.dims.point[axis]):+.0f} mm")


def _alive(ref, fn) -> None:
    """``fn(viewer)`` when the weakly referenced viewer is still open."""
    viewer = ref()
    if viewer is None:
        return
    try:
        fn(viewer)
    except RuntimeError:  # the window is being torn down
        pass


def install(viewer: napari.Viewer | None) -> None:
    """Make ``viewer`` show brains the plugin's way (idempotent; see the module docstring).

    Layers this plugin adds afterwards (they carry ``metadata['brainorg_role']`` or
    :data:`BRAIN`) get the MNI status, and the first one frames the view.
    """
    if viewer is None:
        return
    if viewer in _installed:
        return
    from qtpy.QtCore import QTimer

    _installed.add(viewer)
    overlay = _text_overlay(viewer)
    overlay.visible = True
    overlay.position = "bottom_left"
    overlay.font_size = 9
    overlay.color = "#d0d0d0"
    ref = weakref.ref(viewer)
    from ._glyphs import warm_glyphs

    # the corner text appears once its characters are drawn, a few per turn of the event loop
    warm_glyphs(viewer, then=lambda: _update_corner(viewer))

    def on_inserted(event):
        layer = event.value
        viewer_ = ref()
        if viewer_ is None or not is_brain_layer(layer):
            return
        mark_brain_layer(layer, viewer_)
        if layer._type_string == "labels":
            # napari activates the new layer after this event: look once the adding is done
            QTimer.singleShot(0, lambda: _alive(ref, lambda v: _activate_a_map(v, layer)))
        if layer.metadata.get("brainorg_role") == ORIENTATION_ROLE:
            layer.editable = False  # letters, not points to move
            return
        if layer not in _deferred:
            finish_inserted(viewer_, layer)
        first = not viewer_.__dict__.get("_brainorg_framed", False)
        _ensure_orientation_labels(viewer_)
        orient(viewer_)
        if first:
            viewer_.__dict__["_brainorg_framed"] = True
            go_to_origin(viewer_)
            _fit_to_brain(viewer_)
        # the labels layer stays on top of whatever was added
        top = len(viewer_.layers) - 1
        for i, other in enumerate(viewer_.layers):
            if other.metadata.get("brainorg_role") == ORIENTATION_ROLE and i != top:
                viewer_.layers.move(i, top + 1)
                break
        _update_corner(viewer_)

    def on_change(event=None):
        viewer_ = ref()
        if viewer_ is not None:
            _update_corner(viewer_)

    viewer.layers.events.inserted.connect(on_inserted)
    viewer.dims.events.point.connect(on_change)
    viewer.cursor.events.position.connect(on_change)
    for layer in list(viewer.layers):
        if is_brain_layer(layer):
            on_inserted(type("E", (), {"value": layer})())


def _label_colorbar_later(viewer, layer) -> None:
    """Ends, zero and threshold on the layer's colour bar, once napari has drawn the bar."""
    from qtpy.QtCore import QTimer

    from ._colorbar import label_colorbar
    from ._tasks import _report

    ref = weakref.ref(viewer)

    def label():
        viewer_ = ref()
        if viewer_ is None or layer not in viewer_.layers:
            return
        try:
            label_colorbar(viewer_, layer)
        except Exception as exc:  # noqa: BLE001 - ticks are a nicety, never an error dialog
            _report(exc, "colour bar")

    QTimer.singleShot(0, label)


def is_brain_layer(layer) -> bool:
    """True for a layer this plugin made (a result's part, a NIfTI it read)."""
    meta = layer.metadata
    return bool(meta.get("brainorg_role") or meta.get(BRAIN))


def reframe(viewer: napari.Viewer) -> None:
    """Orient, go to z = 0 and fit the brain again (``brainorg view``, a new result)."""
    install(viewer)
    orient(viewer)
    go_to_origin(viewer)
    _fit_to_brain(viewer)
    _update_corner(viewer)
