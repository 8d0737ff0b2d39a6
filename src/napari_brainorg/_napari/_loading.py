"""Opening things in the viewer without freezing it: read in a thread, add in small pieces.

Every route that shows a result or a NIfTI (``brainorg view``, the reader behind File ▸
Open, Open Sample, the end of a pipeline run, the explorer's Open… button and its model
switch) goes through :func:`show_result_async` or :func:`show_layers_async`:

1. a worker thread (:func:`._tasks.run_in_thread`) reads the files and builds the
   layer-data tuples (resampling, colormaps, label tables), after :func:`warm_up`;
2. the GUI thread adds them one layer per turn of the event loop (:class:`LayerFeed`),
   so the window repaints and answers the mouse between two layers; a result's layers
   replace those of an earlier result in place (:func:`.layers.place_result_item`);
3. meanwhile napari's status bar says what is loading (``loading … (2/4)``).

Adding a napari layer must happen on the GUI thread and cannot be split further; what
made it slow the first time in a process is paid by :func:`warm_up` in a thread instead:
the imports of napari's layer and visual modules and of matplotlib, and numba's
compilation of napari's label colormap (3.8 s of a profiled open). It starts as soon as
the plugin meets a viewer (:func:`start_warm_up`, from :func:`.display.install`).

A load that a newer one for the same viewer supersedes stops adding; so does one whose
viewer was closed. An error in the thread or in a piece reaches the caller's
``on_error`` or, without one, a napari notification; the viewer stays usable.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ._tasks import Task

#: milliseconds between two pieces: room for a repaint and the user's input
PIECE_GAP_MS = 10

_WARM_LOCK = threading.Lock()
_WARMED = threading.Event()
_WARM_STARTED: list[bool] = []


def _units_unused() -> bool:
    """True while napari's unit registry (pint's application registry) was never used."""
    import pint
    from pint.registry import LazyRegistry

    return type(pint.get_application_registry().get()) is LazyRegistry


def _build_units():
    """A unit registry like pint's default one, filled (a second or two: its definitions are
    parsed): built on its own, it shares nothing with the registry other threads may use."""
    from pint.registry import LazyRegistry

    fresh = LazyRegistry()
    fresh.pixel  # noqa: B018 - the first access fills it
    return fresh


def _adopt_units(fresh) -> None:
    """Make ``fresh`` napari's unit registry if the default one was never used (then no unit
    of it exists anywhere); on the GUI thread, where napari makes its layers."""
    import pint

    if _units_unused():
        pint.get_application_registry().set(fresh)


def _warm_layers() -> None:
    """The tiny layers, imports and compilations of :func:`warm_up` (units already filled)."""
    try:
        import numpy as np
        from napari.layers import Image, Labels, Layer

        from . import display
        from . import layers as _layers

        Image(np.zeros((2, 2, 2), np.float32), colormap=_layers.sequential_threshold_colormap())
        Labels(np.zeros((2, 2, 2), np.int32))
        labels = np.array([1, 2])
        colors = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
        Labels(np.ones((2, 2, 2), np.int32), colormap=_layers.network_colormap(labels, colors))
        Layer.create(*display.orientation_layer_data())
        import napari._qt.layer_controls.qt_layer_controls_container  # noqa: F401
        import napari._vispy.utils.visual  # noqa: F401 - the layers' and overlays' visuals

        from . import _plots  # noqa: F401 - matplotlib and its Qt canvas
    except Exception:  # noqa: BLE001 - warming is an optimisation, never an error
        pass
    finally:
        _WARMED.set()


def warm_up() -> None:
    """Pay napari's first-use costs now, in this thread (where no other thread makes layers).

    Fills napari's unit registry (pint parses its definitions on first use), builds tiny
    layers (not added to any viewer): an image, labels with napari's default and with a
    direct colormap (int32, as every label layer here: numba compiles the label-to-texture
    kernels for that type), and the points layer with text that writes A/P/L/R; imports the
    modules napari loads when it first draws a layer, and matplotlib's Qt canvas (the
    explorer's plots). Idempotent; never raises (a failure only means a slower first layer).
    """
    with _WARM_LOCK:
        if _WARMED.is_set():
            return
        try:
            if _units_unused():
                _adopt_units(_build_units())
        except Exception:  # noqa: BLE001
            pass
        _warm_layers()


def start_warm_up() -> None:
    """Start the warm-up in threads, once per process (on the GUI thread).

    pint's registry is not safe to fill from two threads at once, and every napari layer
    needs it: a fresh registry is filled in a thread and handed to napari on the GUI thread
    (if napari has not filled its own meanwhile); then the rest of :func:`warm_up` runs in
    a thread.
    """
    from ._tasks import run_in_thread

    with _WARM_LOCK:
        if _WARM_STARTED or _WARMED.is_set():
            return
        _WARM_STARTED.append(True)

    def rest(*_):
        threading.Thread(target=_warm_layers, name="napari-brainorg warm-up", daemon=True).start()

    try:
        unused = _units_unused()
    except Exception:  # noqa: BLE001 - another pint: napari fills its registry itself
        unused = False
    if not unused:
        rest()
        return
    run_in_thread(_build_units, name="warm-up", on_done=lambda fresh: (_adopt_units(fresh), rest()),
                  on_error=rest)


def wait_warm(timeout: float = 30.0) -> None:
    """Wait (in a worker thread) until the warm-up started by :func:`start_warm_up` is over."""
    if _WARM_STARTED:
        _WARMED.wait(timeout)


#: every character of the texts the plugin draws on the canvas: the corner (slice, convention,
#: cursor in MNI mm), A/P/L/R, the colour bars' ticks
CANVAS_TEXT = ("axial z = +0123456789 mm  ·  neurological (R on right) radiological (R on left) neuro. radio. "
               "MNI x, y, z = (-.) −e")
#: glyphs drawn per turn of the event loop (napari renders each at 256 pt into a distance field)
GLYPHS_PER_PIECE = 1


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
                    QTimer.singleShot(0, piece)
                    return
        except Exception:  # noqa: BLE001 - a glyph napari cannot draw is drawn (or not) as before
            pass
        viewer.__dict__["_brainorg_glyphs"] = "ready"
        if then is not None and viewer_alive(viewer):
            then()

    QTimer.singleShot(0, piece)


def viewer_alive(viewer) -> bool:
    """False once the viewer's window was closed (a viewer without a window is alive)."""
    from ._tasks import _deleted

    window = getattr(viewer, "window", None)
    if window is None:
        return True
    qt_window = getattr(window, "_qt_window", None)
    return qt_window is not None and not _deleted(qt_window)


#: the feed adding layers to each viewer, and the latest load asked of it (older ones give way)
_FEEDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LATEST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _set_status(viewer, text: str) -> None:
    with contextlib.suppress(Exception):  # the status bar of a closing window
        viewer.status = text


class LayerFeed:
    """Add layer-data tuples to a viewer one per turn of the event loop.

    Parameters
    ----------
    viewer : napari.Viewer
    items : list of tuple
        ``(data, kwargs, kind)``. Those whose metadata names a result role replace the
        viewer's layer of that role (:func:`.layers.place_result_item`); the others are
        added as new layers.
    name : str
        What is loading, for the status bar.
    on_done : callable, optional
        ``on_done({role or name: layer})``, after the last piece.
    on_error : callable, optional
        ``on_error(exception)``; without one, a napari notification.
    source : dict, optional
        napari's layer source of the new layers (``path``, ``reader_plugin``).
    wrap : callable, optional
        A context manager factory each piece runs inside (the explorer marks its own
        layer changes with it).
    """

    def __init__(self, viewer: napari.Viewer, items: list, *, name: str, on_done: Callable | None = None,
                 on_error: Callable | None = None, source: dict | None = None,
                 wrap: Callable[[], Any] | None = None):
        self.viewer = viewer
        self.items = list(items)
        self.name = name
        self.on_done, self.on_error = on_done, on_error
        self.source = source
        self.wrap = wrap or contextlib.nullcontext
        self.swap: dict | None = None
        self.shown: dict[str, Any] = {}
        self.position = 0
        self.stopped = False
        self.unfinished = None  # a layer added in the last piece, finished in the next

    def start(self) -> LayerFeed:
        """Supersede the viewer's running feed and schedule the first piece."""
        previous = _FEEDS.get(self.viewer)
        if previous is not None:
            previous.stopped = True
        _FEEDS[self.viewer] = self
        self._schedule()
        return self

    def _schedule(self) -> None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(PIECE_GAP_MS, self._step)

    def _layer_source(self):
        if not self.source:
            return None
        try:
            from napari.layers._source import layer_source
        except ImportError:  # pragma: no cover - a napari without it
            return None
        return layer_source(**self.source)

    def _step(self) -> None:
        from . import display
        from ._tasks import _report

        if self.stopped or not viewer_alive(self.viewer):
            if self.unfinished is not None and viewer_alive(self.viewer):
                display.finish_inserted(self.viewer, self.unfinished)  # superseded: styled all the same
            self.stopped = True
            return
        if not glyphs_ready(self.viewer):  # the first layer's paint would draw them all at once
            self._schedule()
            return
        try:
            with self.wrap():
                finished = self._piece()
        except Exception as exc:  # noqa: BLE001 - a piece never raises into Qt
            self.stopped = True
            _set_status(self.viewer, f"napari-brainorg: could not show {self.name}")
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception as inner:  # noqa: BLE001
                    _report(inner, f"loading {self.name}")
            else:
                _report(exc, f"loading {self.name}")
            return
        if not finished:
            self._schedule()
            return
        if _FEEDS.get(self.viewer) is self:
            del _FEEDS[self.viewer]
        _set_status(self.viewer, f"napari-brainorg: {self.name} shown")
        if self.on_done is not None:
            self.on_done(self.shown)

    def _piece(self) -> bool:
        """One layer (or the closing step); True once everything is shown."""
        from . import display
        from . import layers as _layers

        if self.unfinished is not None:  # its colour bar or outlines: a piece of their own
            layer, self.unfinished = self.unfinished, None
            if layer in self.viewer.layers:
                display.finish_inserted(self.viewer, layer)
            return False
        if self.position >= len(self.items):
            if self.swap is not None:
                self.shown.update(_layers.end_replace(self.viewer, self.swap))
            return True
        data, kwargs, kind = self.items[self.position]
        self.position += 1
        _set_status(self.viewer, f"napari-brainorg: loading {self.name}… "
                                 f"({self.position}/{len(self.items)} layers)")
        if kwargs.get("metadata", {}).get(_layers.ROLE):
            if self.swap is None:
                self.swap = _layers.begin_replace(self.viewer)
            layer = _layers.place_result_item(self.viewer, (data, kwargs, kind), self.swap,
                                              source=self._layer_source(), finish_later=True)
            if layer in display._deferred:  # a new layer (one updated in place is finished)
                self.unfinished = layer
            self.shown[kwargs["metadata"][_layers.ROLE]] = layer
        else:
            from napari.layers import Layer

            display.install(self.viewer)
            with self._layer_source() or contextlib.nullcontext():
                layer = Layer.create(data, kwargs, kind)
            display.finish_later(layer)
            self.viewer.add_layer(layer)
            self.unfinished = layer
            self.shown[layer.name] = layer
        return False


def show_layers_async(viewer: napari.Viewer, build: Callable[[], list], *, name: str, owner=None,
                      on_shown: Callable | None = None, on_error: Callable | None = None,
                      source: dict | None = None, wrap: Callable[[], Any] | None = None,
                      supersede: bool = True) -> Task:
    """Run ``build()`` (layer-data tuples) in a thread, then add them in pieces.

    The viewer shows what it showed until each piece arrives; ``on_shown({key: layer})``
    runs in the GUI thread after the last. Returns the :class:`._tasks.Task` of the thread.
    ``supersede`` (a result, whose layers replace the shown ones): a newer such load of the
    viewer stops this one; False (files opened one after another): every load adds its layers.
    """
    from ._tasks import run_in_thread

    start_warm_up()
    ticket = object()
    if supersede:
        _LATEST[viewer] = ticket
    _set_status(viewer, f"napari-brainorg: reading {name}…")

    def work():
        wait_warm()
        return build()

    def done(items):
        if (supersede and _LATEST.get(viewer) is not ticket) or not viewer_alive(viewer):
            return  # a newer load of this viewer, or the viewer was closed
        LayerFeed(viewer, items, name=name, on_done=on_shown, on_error=on_error, source=source,
                  wrap=wrap).start()

    def failed(exc):
        if viewer_alive(viewer):
            _set_status(viewer, f"napari-brainorg: could not read {name}")
        if on_error is not None:
            on_error(exc)
        else:
            from ._tasks import _report

            _report(exc, f"reading {name}")

    return run_in_thread(work, owner=owner, on_done=done, on_error=failed, name=f"loading {name}")



def show_result_async(viewer: napari.Viewer, result, model: str | None = None, *, owner=None,
                      on_shown: Callable | None = None, on_error: Callable | None = None,
                      source: dict | None = None, wrap: Callable[[], Any] | None = None, **kwargs) -> Task:
    """Read a result's layers in a thread (:func:`.layers.result_layer_data`), then show them
    in pieces, each replacing the layer of its role (the old view stays meanwhile).

    Returns the :class:`._tasks.Task`; ``on_shown({role: layer})`` runs in the GUI thread.
    """
    from pathlib import Path

    from . import layers as _layers

    path = str(getattr(result, "path", result))
    return show_layers_async(viewer, lambda: _layers.result_layer_data(path, model, **kwargs),
                             name=Path(path).name or path, owner=owner, on_shown=on_shown,
                             on_error=on_error, source=source, wrap=wrap)


def qt_viewer_of_reader():
    """The napari viewer (with a window) a reader is reading for, or ``None`` (no window:
    a script, a test calling the reader itself; the layer-data tuples are returned then)."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 - a reader must read even without a viewer
        return None
    if viewer is None or not viewer_alive(viewer) or getattr(viewer, "window", None) is None:
        return None
    return viewer
