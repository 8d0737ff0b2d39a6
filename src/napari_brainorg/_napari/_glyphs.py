"""The canvas text's characters, drawn into napari's font a few per turn of the event loop.

napari draws a character the first time a text shows it, at 256 pt into a signed distance
field: the corner text, A/P/L/R and the colour bars' ticks, all new in the first paint,
would freeze the window for a second or more. :func:`warm_glyphs` draws them beforehand,
one per turn; :func:`glyphs_ready` tells the corner text (:mod:`.display`) and the layer
feed (:mod:`._loading`) when the first paint can come.
"""

from __future__ import annotations

from typing import Callable

#: every character of the texts the plugin draws on the canvas: the corner (slice, convention,
#: cursor in MNI mm), A/P/L/R, the colour bars' ticks
CANVAS_TEXT = ("axial z = +0123456789 mm  ·  neurological (R on right) radiological (R on left) neuro. radio. "
               "MNI x, y, z = (-.) −e APLR"
               # vispy's text visual measures every text's ascent and descent with these
               "ÅÉÑŐjgpqy")
#: glyphs drawn per turn of the event loop (napari renders each at 256 pt into a distance field)
GLYPHS_PER_PIECE = 1
#: milliseconds between two glyphs: a timer (not a zero-delay call, which Qt may run back to
#: back) lets a repaint or the user's input come between them
GLYPH_GAP_MS = 5


def _canvas_font(viewer):
    """The font napari's canvas draws text with (shared by its text visuals), or ``None``."""
    try:
        info = viewer.window._qt_viewer.canvas._font_info
        return info.font_manager.get_font(info.face, False, False)
    except Exception:  # noqa: BLE001 - another napari: its text is drawn as before
        return None


def glyphs_ready(viewer) -> bool:
    """True once :func:`warm_glyphs` has drawn the canvas text's characters (or cannot)."""
    return viewer.__dict__.get("_brainorg_glyphs") in (None, "ready")


def warm_glyphs(viewer, then: Callable[[], None] | None = None) -> None:
    """Draw the glyphs of :data:`CANVAS_TEXT` into the canvas's font, a few per turn.

    napari draws a character the first time a text shows it, at 256 pt into a signed
    distance field: the corner text, A/P/L/R and the colour bars' ticks, all new in the
    first paint, would freeze it for a second or more. ``then()`` runs when done.
    """
    from qtpy.QtCore import QTimer

    from ._tasks import viewer_alive

    font = _canvas_font(viewer)
    if font is None or viewer.__dict__.get("_brainorg_glyphs") is not None:
        if then is not None:
            then()
        return
    viewer.__dict__["_brainorg_glyphs"] = "warming"
    todo = sorted(set(CANVAS_TEXT) - set(getattr(font, "_glyphs", {})))

    def piece():
        try:
            if viewer_alive(viewer):
                for char in todo[:GLYPHS_PER_PIECE]:
                    font[char]
                del todo[:GLYPHS_PER_PIECE]
                if todo:
                    QTimer.singleShot(GLYPH_GAP_MS, piece)
                    return
        except Exception:  # noqa: BLE001 - a glyph napari cannot draw is drawn (or not) as before
            pass
        viewer.__dict__["_brainorg_glyphs"] = "ready"
        if then is not None and viewer_alive(viewer):
            then()

    QTimer.singleShot(0, piece)
