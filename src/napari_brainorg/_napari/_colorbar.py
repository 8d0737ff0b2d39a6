"""Colour-bar ticks that say what a map layer shows: both ends, zero and the threshold.

napari's colour bar places "nice" ticks (vispy's Talbot ticker): a bar from -4.42 to
+4.42 gets one tick, "0", and the threshold below which voxels are transparent is
nowhere. :func:`label_colorbar` gives a layer's bar fixed ticks instead:

- an atom map (diverging, ``metadata['threshold']``): ``-V, -t, 0, +t, +V``
  (``t`` omitted when it is 0);
- the R² map or a region layer (a lower limit that is a threshold): its two ends;
- any other map: its two ends and zero when the range spans it.

The ticks follow the layer: a new threshold or contrast range relabels the bar.
"""

from __future__ import annotations

import numpy as np

from ._layer_style import ROLE


def colorbar_ticks(layer) -> list[float]:
    """The tick values of ``layer``'s colour bar (sorted, within its contrast limits)."""
    lo, hi = (float(v) for v in layer.contrast_limits)
    ticks = {lo, hi}
    role = layer.metadata.get(ROLE)
    threshold = layer.metadata.get("threshold")
    if role == "atom_map" and threshold is not None:
        t = float(threshold)
        if 0 < t < max(abs(lo), abs(hi)):
            ticks |= {-t, t}
    if lo < 0 < hi:
        ticks.add(0.0)
    return sorted(v for v in ticks if lo <= v <= hi)


def tick_text(value: float) -> str:
    """A tick's label: three significant digits, a sign on the negative side."""
    return "0" if value == 0 else f"{value:.3g}"


def _colorbar_visual(viewer, layer):
    canvas = getattr(getattr(viewer.window, "_qt_viewer", None), "canvas", None)
    visuals = getattr(canvas, "_layer_overlay_to_visual", {}).get(layer, {})
    return visuals.get(getattr(layer, "colorbar", None))


def label_colorbar(viewer, layer) -> bool:
    """Give ``layer``'s colour bar the ticks of :func:`colorbar_ticks` (True when it has one)."""
    visual = _colorbar_visual(viewer, layer)
    axis = getattr(getattr(visual, "node", None), "ticks", None)
    ticker = getattr(axis, "ticker", None)
    if ticker is None:
        return False

    def fixed(layer=layer, axis=axis):
        lo, hi = (float(v) for v in axis.domain)
        values = np.array([v for v in colorbar_ticks(layer)], float)
        span = hi - lo if hi != lo else 1.0
        frac = (values - lo) / span
        keep = (frac > -1e-4) & (frac < 1 + 1e-4)
        return frac[keep], np.zeros(0), [tick_text(v) for v in values[keep]]

    ticker._get_tick_frac_labels = fixed
    if not layer.metadata.get("_ticks_follow"):
        layer.metadata["_ticks_follow"] = True

        def relabel(event=None, viewer=viewer, layer=layer):
            visual = _colorbar_visual(viewer, layer)
            if visual is not None:
                visual._on_ticks_change()

        layer.events.colormap.connect(relabel)
        layer.events.contrast_limits.connect(relabel)
    visual._on_ticks_change()
    return True
