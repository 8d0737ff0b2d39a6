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


def _warm_layers() -> None:
    """The tiny layers, imports and compilations of :func:`warm_up` (units already filled)."""
    try:
        import numpy as np
        from napari.layers import Image, Labels, Layer, Shapes

        from . import display
        from . import layers as _layers

        Image(np.zeros((2, 2, 2), np.float32), colormap=_layers.sequential_threshold_colormap())
        Labels(np.zeros((2, 2, 2), np.int32))
        labels = np.array([1, 2])
        colors = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
        Labels(np.ones((2, 2, 2), np.int32), colormap=_layers.network_colormap(labels, colors))
        # the explorer's crosshair: numba's loading of napari's line-mesh kernels
        Shapes([np.array([[0.0, 0.0], [0.0, 1.0]])], shape_type="line", edge_width=0.6)
        Layer.create(*display.orientation_layer_data())
        import napari._qt.layer_controls.qt_layer_controls_container  # noqa: F401
        import napari._vispy.utils.visual  # noqa: F401 - the layers' and overlays' visuals
        import scipy.spatial.transform  # noqa: F401 - napari's camera orientation (orient)

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
    kernels for that type), the points layer with text that writes A/P/L/R and a line
    shapes layer (numba loads napari's line-mesh kernels: the explorer's crosshair); imports the
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
    from ._tasks import gui_first_switching, run_in_thread

    with _WARM_LOCK:
        if _WARM_STARTED or _WARMED.is_set():
            return
        _WARM_STARTED.append(True)

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
