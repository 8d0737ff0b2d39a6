"""Opening things in the viewer without freezing it: read in a thread, add in small pieces.

Every route that shows a result or a NIfTI (``brainorg view``, the reader behind File ▸
Open, Open Sample, the end of a pipeline run, the explorer's Open… button and its model
switch) goes through :func:`show_result_async` or :func:`show_layers_async`:

1. a worker thread (:func:`._tasks.run_in_thread`) reads the files and builds the
   layer-data tuples (resampling, colormaps, label tables), after the warm-up of
   napari's first-use costs (:mod:`._warm`), and makes the napari layers that will be
   new in the viewer (their slices, thumbnails and label textures: up to a quarter of a
   second each on the GUI thread);
2. the GUI thread adds them one layer per turn of the event loop (:class:`LayerFeed`),
   so the window repaints and answers the mouse between two layers; a result's layers
   replace those of an earlier result in place (:func:`.layers.place_result_item`). A
   new layer takes three turns: it is added hidden (napari makes its controls and its
   visual), shown in the next (its slice, its first draw), finished in the third (its
   colour bar or outlines): each is a fraction of the freeze that adding it at once was;
3. meanwhile napari's status bar says what is loading (``loading … (2/4)``).

Each viewer has one queue of loads, in the order they were asked: a load's layers are
added once the load before it has added all of its own (its file may be read sooner, in
its thread), so files opened one after another all arrive, in order. No load
supersedes another, except that a result load (``supersede=True``: a result, a model
switch) drops the result loads before it that have not finished adding: the viewer ends
on the newest result. A closed viewer's loads stop. An error in the thread or in a piece
reaches the caller's ``on_error`` or, without one, a napari notification; the queue goes
on and the viewer stays usable.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any, Callable

from ._glyphs import glyphs_ready
from ._warm import start_warm_up, wait_warm

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ._tasks import Task

#: milliseconds between two pieces: room for a repaint and the user's input
PIECE_GAP_MS = 10

#: each viewer's queue of loads (:class:`LayerFeed`), the one adding layers first
_QUEUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _set_status(viewer, text: str) -> None:
    with contextlib.suppress(Exception):  # the status bar of a closing window
        viewer.status = text


class LayerFeed:
    """Add layer-data tuples to a viewer one per turn of the event loop, in the viewer's queue.

    Parameters
    ----------
    viewer : napari.Viewer
    items : list of tuple, optional
        ``(data, kwargs, kind)``. Those whose metadata names a result role replace the
        viewer's layer of that role (:func:`.layers.place_result_item`); the others are
        added as new layers. ``None`` while they are being read: :meth:`supply` gives them.
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
    supersede : bool
        A result load (its layers replace those of the result shown): starting it stops
        the viewer's result loads that have not finished. False: it only adds.
    """

    def __init__(self, viewer: napari.Viewer, items: list | None, *, name: str,
                 on_done: Callable | None = None, on_error: Callable | None = None,
                 source: dict | None = None, wrap: Callable[[], Any] | None = None,
                 supersede: bool = True):
        self.viewer = viewer
        self.items = None if items is None else list(items)
        self.name = name
        self.on_done, self.on_error = on_done, on_error
        self.source = source
        self.wrap = wrap or contextlib.nullcontext
        self.supersede = supersede
        self.swap: dict | None = None
        self.shown: dict[str, Any] = {}
        self.position = 0
        self.running = False  # its pieces have begun
        self.stopped = False
        self.unfinished = None  # a layer added in the last piece, finished in the next
        self.hidden = None  # a layer added hidden in the last piece, shown in the next
        self.made: list | None = None  # per item, its layer made in the worker (or None)
        self.new_layers: list = []  # the layers this load added (not updated in place), in order
        self.selected = False  # the active layer chosen (a piece of its own, after the last layer)
        self.order: list[int] | None = None  # the items' indices in the order they are added
        self.placed: dict[int, Any] = {}  # item index -> its layer, once added

    def start(self) -> LayerFeed:
        """Take a place at the end of the viewer's queue; the pieces begin once the loads
        before it have added their layers and the items are here. A result load first
        stops the unfinished result loads before it."""
        queue = _QUEUES.setdefault(self.viewer, [])
        if self.supersede:
            for older in [feed for feed in queue if feed.supersede]:
                older.stop()
        queue.append(self)
        _advance(self.viewer)
        return self

    def supply(self, items: list, made: list | None = None) -> None:
        """The layer-data tuples, read (on the GUI thread); the pieces begin at the head of the queue.

        ``made``: per item, its napari layer made in the worker (:func:`make_layers`) or ``None``."""
        self.items = list(items)
        self.made = None if made is None else list(made)
        _advance(self.viewer)

    def stop(self) -> None:
        """Add nothing more (a layer added in the last piece is still finished); the next load goes on."""
        self.stopped = True
        self._leave()

    def _leave(self) -> None:
        queue = _QUEUES.get(self.viewer)
        if queue is not None and self in queue:
            queue.remove(self)
        _advance(self.viewer)

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
        from ._tasks import _report, viewer_alive

        alive = viewer_alive(self.viewer)
        if self.stopped or not alive:
            if alive:  # superseded: its last layer shown and styled all the same
                self._show_hidden()
                if self.unfinished is not None:
                    display.finish_inserted(self.viewer, self.unfinished)
            self.unfinished = None
            if not self.stopped:
                self.stop()
            return
        if self.viewer not in display._installed:  # its corner text's visual: a piece of its own
            display.install(self.viewer)  # (and its glyphs are drawn before the first layer)
            self._schedule()
            return
        if not glyphs_ready(self.viewer):  # the first layer's paint would draw them all at once
            self._schedule()
            return
        try:
            with self.wrap():
                finished = self._piece()
        except Exception as exc:  # noqa: BLE001 - a piece never raises into Qt
            self.stop()
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
        self.stopped = True
        self._leave()  # the next load's pieces begin
        _set_status(self.viewer, f"napari-brainorg: {self.name} shown")
        if self.on_done is not None:
            try:
                self.on_done(self.shown)
            except Exception as exc:  # noqa: BLE001 - a slot must not raise into Qt
                _report(exc, f"showing {self.name}")

    def _piece(self) -> bool:
        """One layer (or the closing step); True once everything is shown."""
        from . import display
        from . import layers as _layers

        if self.hidden is not None:  # its slice and first draw: a piece of their own
            self._show_hidden()
            return False
        if self.unfinished is not None:  # its colour bar or outlines: a piece of their own
            layer, self.unfinished = self.unfinished, None
            if layer in self.viewer.layers:
                display.finish_inserted(self.viewer, layer)
            return False
        if self.position >= len(self.items):
            if not self.selected:  # the controls panel's first show of a layer: a piece of its own
                self.selected = True
                if self.new_layers:  # in the load's order (the order in the layer list)
                    shown = [layer for layer in self.new_layers if layer in self.viewer.layers]
                    display.activate_added(self.viewer, sorted(shown, key=self.viewer.layers.index))
                    return False
            if self.swap is not None:
                self.shown.update(_layers.end_replace(self.viewer, self.swap))
            return True
        if self.order is None:
            self.order = _adding_order(self.viewer, self.made, len(self.items))
        index = self.order[self.position]
        data, kwargs, kind = self.items[index]
        made = self.made[index] if self.made else None
        # where it goes in the layer list: under the layers of this load that come after it
        over = [self.viewer.layers.index(layer) for i, layer in self.placed.items()
                if i > index and layer in self.viewer.layers]
        at = min(over) if over else None
        if made is not None and not len(self.viewer.layers) and self.viewer.dims.ndim < made.ndim:
            # an empty viewer's slice sliders (napari makes them when the first layer adds axes): a piece
            # of their own (with layers shown, napari fits the dimensions to them itself)
            self.viewer.dims.ndim = made.ndim
            return False
        self.position += 1
        _set_status(self.viewer, f"napari-brainorg: loading {self.name}… "
                                 f"({self.position}/{len(self.items)} layers)")
        if kwargs.get("metadata", {}).get(_layers.ROLE):
            if self.swap is None:
                self.swap = _layers.begin_replace(self.viewer)
            with display.adding_unselected(self.viewer):
                layer = _layers.place_result_item(self.viewer, (data, kwargs, kind), self.swap,
                                                  source=self._layer_source(), finish_later=True,
                                                  hidden=_add_hidden(kind, kwargs), made=made, at=at)
            if layer in display._deferred:  # a new layer (one updated in place is finished)
                self.new_layers.append(layer)
                self.unfinished = layer
                if _add_hidden(kind, kwargs):
                    self.hidden = layer
            self.shown[kwargs["metadata"][_layers.ROLE]] = layer
            self.placed[index] = layer
        else:
            from napari.layers import Layer

            display.install(self.viewer)
            layer = made
            if layer is None:
                with self._layer_source() or contextlib.nullcontext():
                    layer = Layer.create(data, _creation_kwargs(kind, kwargs), kind)
            display.finish_later(layer)
            with display.adding_unselected(self.viewer):
                if at is None:
                    self.viewer.add_layer(layer)
                else:
                    self.viewer.layers.insert(at, layer)
            self.new_layers.append(layer)
            self.unfinished = layer
            if _add_hidden(kind, kwargs):
                self.hidden = layer
            self.shown[layer.name] = layer
            self.placed[index] = layer
        if self.position == 1 and index != 0:
            # added before the items given first (:func:`_adding_order`): its extra axes start at
            # their first step, as when it comes after them (napari centres a first layer's sliders)
            for axis in range(layer.ndim - min(m.ndim for m in self.made)):
                self.viewer.dims.set_current_step(axis, 0)
        return False

    def _show_hidden(self) -> None:
        layer, self.hidden = self.hidden, None
        if layer is not None and layer in self.viewer.layers:
            layer.visible = True


def _adding_order(viewer, made: list | None, n: int) -> list[int]:
    """The order a load adds its ``n`` items in: as given, except into an empty viewer whose
    first item has fewer axes than a later one (the MNI template under a 4D atom map). The
    item with the most axes comes first then, and the others are put below or above it in
    their places: napari makes every slice slider anew whenever the number of axes changes
    (a fifth of a second with the layer's own visual and controls in one turn), and on an
    empty viewer the sliders get a piece of their own before the first layer (:meth:`LayerFeed._piece`)."""
    order = list(range(n))
    if not made or len(viewer.layers) or any(m is None for m in made):
        return order
    ndims = [m.ndim for m in made]
    top = ndims.index(max(ndims))
    return [top, *order[:top], *order[top + 1:]] if ndims[top] > ndims[0] else order


def _add_hidden(kind: str, kwargs: dict) -> bool:
    """True when a new layer of ``kind`` is added hidden and shown in the next piece: an image
    meant to be seen. Not labels: a hidden labels layer's visual is made from an empty slice
    of another type, and numba compiles napari's label-texture kernel anew for it (seconds)."""
    return kind == "image" and kwargs.get("visible", True)


def _creation_kwargs(kind: str, kwargs: dict) -> dict:
    """``kwargs`` to make a new layer with: hidden when :func:`_add_hidden`."""
    return {**kwargs, "visible": False} if _add_hidden(kind, kwargs) else kwargs


def make_layers(viewer, items: list, source: Callable[[], Any] | None = None) -> list:
    """The napari layers of ``items`` that will be new in ``viewer``, made in this (worker) thread.

    Making a layer slices it, makes its thumbnail and, for labels, its texture: a tenth to a
    quarter of a second each that the GUI thread would spend. An item whose role ``viewer``
    shows already is most likely updated in place (:func:`.layers.place_result_item`): ``None``
    for it, as for one that could not be made here (it is made on the GUI thread then).
    ``source()``: the context napari's layer source is set in, or ``None``. Returns one entry per item.
    """
    from napari.layers import Layer

    from . import layers as _layers

    out = []
    for data, kwargs, kind in items:
        role = kwargs.get("metadata", {}).get(_layers.ROLE)
        try:
            if role and _layers.find_layer(viewer, role) is not None:
                out.append(None)
                continue
            with (source() if source is not None else None) or contextlib.nullcontext():
                out.append(Layer.create(data, _creation_kwargs(kind, kwargs), kind))
        except Exception:  # noqa: BLE001 - the GUI thread makes it (and reports what is wrong)
            out.append(None)
    return out


def _advance(viewer) -> None:
    """Begin the pieces of the load at the head of ``viewer``'s queue, once its items are read."""
    queue = _QUEUES.get(viewer)
    if queue and queue[0].items is not None and not queue[0].running:
        queue[0].running = True
        queue[0]._schedule()


def show_layers_async(viewer: napari.Viewer, build: Callable[[], list], *, name: str, owner=None,
                      on_shown: Callable | None = None, on_error: Callable | None = None,
                      source: dict | None = None, wrap: Callable[[], Any] | None = None,
                      supersede: bool = True) -> Task:
    """Run ``build()`` (layer-data tuples) in a thread, then add them in pieces, in turn.

    The load takes its place in the viewer's queue now (:class:`LayerFeed`): its layers
    come after those of every load asked before it. The viewer shows what it showed until
    each piece arrives; ``on_shown({key: layer})`` runs in the GUI thread after the last.
    ``supersede`` (a result, whose layers replace the shown ones): this load stops the
    viewer's unfinished result loads; False (files opened one after another): it only adds.
    Once ``owner`` (a widget) is deleted, the load adds nothing and calls nothing back.
    Returns the :class:`._tasks.Task` of the thread; its ``feed`` is the load's
    :class:`LayerFeed` (``feed.stopped`` once its layers are shown, or it was stopped).
    """
    from ._tasks import _deleted, _report, run_in_thread, viewer_alive

    start_warm_up()

    def shown(added):
        if on_shown is not None and not _deleted(owner):
            on_shown(added)

    feed = LayerFeed(viewer, None, name=name, on_done=shown, on_error=on_error, source=source,
                     wrap=wrap, supersede=supersede).start()
    _set_status(viewer, f"napari-brainorg: reading {name}…")

    def work():
        wait_warm()
        items = build()
        return items, make_layers(viewer, items, feed._layer_source)

    # no owner for the thread: the queue must hear of the end of the read even without one
    def done(read):
        if _deleted(owner):
            feed.stop()
        else:
            feed.supply(*read)

    def failed(exc):
        feed.stop()
        if _deleted(owner):
            return
        if viewer_alive(viewer):
            _set_status(viewer, f"napari-brainorg: could not read {name}")
        if on_error is not None:
            on_error(exc)
        else:
            _report(exc, f"reading {name}")

    task = run_in_thread(work, on_done=done, on_error=failed, name=f"loading {name}")
    task.feed = feed
    return task


#: seconds :func:`wait_shown` waits at most (a slow disk): the layers still come afterwards
WAIT_SHOWN_S = 120.0


def wait_shown(feed: LayerFeed, timeout: float = WAIT_SHOWN_S) -> None:
    """Run Qt's event loop until ``feed`` has shown its layers (or stopped), its viewer is
    closed, or ``timeout`` seconds have passed: the window repaints and answers meanwhile.

    For a caller that napari itself waits on (a sample: napari adds what it returns at
    once, on the GUI thread), so that the layers arrive in pieces before it returns.
    """
    import time

    from qtpy.QtCore import QEventLoop, QTimer

    from ._tasks import viewer_alive

    loop = QEventLoop()
    end = time.monotonic() + timeout

    def check():
        if feed.stopped or not viewer_alive(feed.viewer) or time.monotonic() > end:
            timer.stop()
            loop.quit()

    timer = QTimer()
    timer.setInterval(PIECE_GAP_MS)
    timer.timeout.connect(check)
    timer.start()
    loop.exec()


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
    from ._tasks import viewer_alive

    if viewer is None or not viewer_alive(viewer) or getattr(viewer, "window", None) is None:
        return None
    return viewer
