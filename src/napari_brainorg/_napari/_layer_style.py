"""What a layer's metadata says it shows, and the styling no layer-data tuple can carry.

A layer this plugin makes names its part of a result in its metadata (:data:`ROLE`,
with :data:`RESULT` and :data:`MODEL`). napari's layer-data tuples cannot ask for
outlines or colour bars, so every route into the viewer finishes each such layer with
:func:`finish_layer`: :mod:`.layers` when it updates a layer in place, :mod:`.display`
when one is inserted. Both import it from here, below them.
"""

from __future__ import annotations

#: key of the metadata entry that says which part of a result a layer shows
ROLE = "brainorg_role"
#: metadata key of the result folder a layer belongs to
RESULT = "brainorg_result"
#: metadata key of the model a layer belongs to
MODEL = "brainorg_model"


def outline_networks(layer, on: bool = True) -> None:
    """Draw a networks layer as outlines (``on``; colours of :data:`.layers.OUTLINE_PALETTE`) or filled."""
    layer.metadata["outline"] = bool(on)
    layer.contour = 1 if on else 0
    layer.opacity = 0.9 if on else 0.4


def style_map_layer(layer) -> None:
    """A colour bar for a map layer (atom map, R², a statistical NIfTI)."""
    try:
        bar = layer.colorbar
    except AttributeError:  # pragma: no cover - napari < 0.6
        return
    # styled before it is shown: napari makes the bar's visual when it becomes visible, and
    # each later change would redraw it
    bar.size = (14, 110)
    bar.font_size = 8
    bar.position = "top_right" if layer.metadata.get(ROLE) != "r2" else "bottom_right"
    bar.visible = True


def finish_layer(layer) -> None:
    """What layer-data tuples cannot say: outlines, colour bars (every route calls this)."""
    role = layer.metadata.get(ROLE)
    if role == "networks" and layer.metadata.get("outline", True) and not layer.contour:
        outline_networks(layer, True)
    elif role in ("atom_map", "r2") or layer.metadata.get("brainorg_stat_map"):
        style_map_layer(layer)
