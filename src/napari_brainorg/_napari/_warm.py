"""napari's first-use costs, paid in threads before the first layer arrives.

Adding a napari layer must happen on the GUI thread and cannot be split; what made it slow
the first time in a process is paid here instead: the fill of napari's unit registry (pint
parses its definitions on first use), the imports of napari's layer and visual modules and
of matplotlib, and numba's compilation of napari's label colormap (3.8 s of a profiled
open). :func:`._loading.show_layers_async` starts it (:func:`start_warm_up`) before its
thread reads, and waits for it there (:func:`wait_warm`); ``brainorg view`` starts it as
soon as it has a viewer.

This module sits above :mod:`.display` and :mod:`.layers` (its tiny layers are theirs);
neither imports it.
"""

from __future__ import annotations

import threading

_WARM_LOCK = threading.Lock()
_WARMED = threading.Event()
_WARM_STARTED: list[bool] = []


def _units_unused() -> bool:
    """True while napari's unit registry (pint's application registry) was never used."""
    import pint
    from pint.registry import LazyRegistry

    return type(pint.get_application_registry().get()) is LazyRegistry


def _build_units():
    """A unit registry like pint's default one, filled: built on its own, it shares nothing
    with the registry other threads may use.

    Its definitions come from pint's own disk cache (``cache_folder=":auto:"``, the user's
    cache folder): 15 ms instead of 0.2 to 0.4 s of parsing, after the first time; without
    a usable cache folder, parsed as pint's default registry is.
    """
    from pint.registry import LazyRegistry

    try:
        fresh = LazyRegistry(kwargs={"cache_folder": ":auto:"})
        fresh.pixel  # noqa: B018 - the first access fills it
    except Exception:  # noqa: BLE001 - no cache folder: parsed, as napari's own registry is
        fresh = LazyRegistry()
        fresh.pixel  # noqa: B018
    return fresh


def units_now() -> None:
    """Give napari a filled unit registry now, on the GUI thread, when it has none yet (from
    pint's disk cache: milliseconds): for a layer napari makes itself at once (a sample)."""
    with _WARM_LOCK:
        try:
            if _units_unused():
                _adopt_units(_build_units())
        except Exception:  # noqa: BLE001 - warming is an optimisation, never an error
            pass


def _adopt_units(fresh) -> None:
    """Make ``fresh`` napari's unit registry if the default one was never used (then no unit
    of it exists anywhere); on the GUI thread, where napari makes its layers."""
    import pint

    if _units_unused():
        pint.get_application_registry().set(fresh)


def freeze_long_lived() -> None:
    """Keep the objects that exist now out of Python's full garbage collections (``gc.freeze``).

    A full collection walks every object the collector tracks, with the GIL held: once
    napari, vispy, scipy and matplotlib are imported, 0.1 to 0.3 s each, and a load
    triggered several (the heap grows by a quarter between two), each a frozen window.
    What exists when a viewer is opened and what the warm-up imports (modules, classes,
    the viewer itself) lives as long as the process: frozen, it is no longer walked; what
    is made afterwards (layers, results) is collected as before.
    """
    import gc

    gc.freeze()


#: whether the collector was on when :func:`start_warm_up` paused it (empty: not paused)
_GC_PAUSED: list[bool] = []
_GC_LOCK = threading.Lock()  # not _WARM_LOCK: :func:`warm_up` holds that one around _warm_layers


def _pause_collector() -> None:
    """No automatic garbage collection until :func:`_resume_collector`: the warm-up's imports
    and numba's compiling make hundreds of thousands of lasting objects, and each quarter
    more set off a full collection (in whichever thread, with the GIL held: the GUI thread
    waits). The warm-up ends with one collection, then freezes what is left."""
    import gc

    with _GC_LOCK:
        if not _GC_PAUSED:
            _GC_PAUSED.append(gc.isenabled())
            gc.disable()


def _resume_collector() -> None:
    """Undo :func:`_pause_collector` (the collector on again if it was on); idempotent."""
    import gc

    with _GC_LOCK:
        if _GC_PAUSED and _GC_PAUSED.pop():
            gc.enable()


def _warm_layers() -> None:
    """The tiny layers, imports and compilations of :func:`warm_up` (units already filled)."""
    try:
        import numpy as np
        from napari.layers import Image, Labels, Layer, Shapes

        import napari._qt.layer_controls.qt_layer_controls_container  # noqa: F401
        import napari._vispy.utils.visual  # noqa: F401 - the layers' and overlays' visuals
        import napari.utils.colormaps._accelerated_cmap  # noqa: F401 - numba, for the label colormaps
        import scipy.ndimage  # noqa: F401 - napari's thumbnails
        import scipy.spatial.transform  # noqa: F401 - napari's camera orientation (orient)

        from . import _plots  # noqa: F401 - matplotlib and its Qt canvas
        from . import display
        from . import layers as _layers

        freeze_long_lived()  # what these imports made lives as long as the process
        Image(np.zeros((2, 2, 2), np.float32), colormap=_layers.sequential_threshold_colormap())
        Labels(np.zeros((2, 2, 2), np.int32))
        labels = np.array([1, 2])
        colors = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
        Labels(np.ones((2, 2, 2), np.int32), colormap=_layers.network_colormap(labels, colors))
        # the explorer's crosshair: numba's loading of napari's line-mesh kernels
        Shapes([np.array([[0.0, 0.0], [0.0, 1.0]])], shape_type="line", edge_width=0.6)
        Layer.create(*display.orientation_layer_data())
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()  # vispy caches its dash patterns: made here, not in the first outlined labels' turn
        import gc

        gc.collect()  # the tiny layers and numba's compiling leave garbage: gone before the freeze
        freeze_long_lived()  # numba's compiled kernels and caches live as long as the process
        _resume_collector()
    except Exception:  # noqa: BLE001 - warming is an optimisation, never an error
        pass
    finally:
        _resume_collector()
        _WARMED.set()


def warm_up() -> None:
    """Pay napari's first-use costs now, in this thread (where no other thread makes layers).

    Fills napari's unit registry (pint parses its definitions on first use), builds tiny
    layers (not added to any viewer): an image, labels with napari's default and with a
    direct colormap (int32, as every label layer here: numba compiles the label-to-texture
    kernels for that type), the points layer with text that writes A/P/L/R and a line
    shapes layer (numba loads napari's line-mesh kernels: the explorer's crosshair); imports the
    modules napari loads when it first draws a layer, and matplotlib's Qt canvas (the
    explorer's plots); fills vispy's cache of dash patterns (every Labels layer's polygon
    tool makes a dash atlas: a tenth of a second the first time). Idempotent; never raises (a failure only means a slower first layer).
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
    from ._tasks import gui_first_switching, run_in_thread

    with _WARM_LOCK:
        if _WARM_STARTED or _WARMED.is_set():
            return
        _WARM_STARTED.append(True)
    freeze_long_lived()  # napari, Qt and the viewer: walked by no full collection from now on
    _pause_collector()  # until the warm-up's imports are frozen too (:func:`_warm_layers`)

    def rest(*_):
        gui_first_switching()
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
