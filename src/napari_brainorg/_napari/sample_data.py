"""Sample data: the quick demo result (pieman, bundled MiniLM, SIMULATED subjects).

No result is shipped inside the package. The first time the sample is opened it is
built by the pipeline's quick demo configuration (``demo_config(out, quick=True)``:
16 atoms, 2 simulated subjects on a 6 mm grid, 100 permutations) into a cache
folder; later openings read the cache. While it is built (a minute or two on a
laptop CPU) the viewer stays usable: the sample returns the MNI template at once,
the pipeline runs in a worker thread, and the result's layers replace the template
when it is done (a notification says when). The cache folder is
``$NAPARI_BRAINORG_DEMO`` when set, otherwise
``<user cache>/napari-brainorg/demo-quick`` (platformdirs).
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_ENV = "NAPARI_BRAINORG_DEMO"
_RUNNING: dict[str, object] = {}  # the worker building the demo, kept alive while it runs


def demo_result_path() -> Path:
    """Folder where the quick demo result is (or will be) cached."""
    env = os.environ.get(DEMO_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-brainorg")) / "demo-quick"


def ensure_demo_result(progress=None, cancel=None):
    """The cached quick demo result, built by the pipeline when missing.

    Returns
    -------
    ResultFolder
    """
    from ..io.results import ResultFolder
    from ..pipeline import demo_config, run_pipeline

    path = demo_result_path()
    try:
        return ResultFolder(path)
    except (FileNotFoundError, ValueError):
        pass
    if progress is None:
        from .._progress import TqdmProgress

        progress = TqdmProgress()
    return run_pipeline(demo_config(path, quick=True), progress=progress, cancel=cancel)


def _build_in_background(viewer) -> None:
    """Build the demo in a thread (progress in the status bar), then show its layers."""
    from napari.utils.notifications import show_error, show_info

    from . import layers as _layers
    from ._tasks import Task
    from .workers import OverallProgress

    if "demo" in _RUNNING:
        return
    overall = OverallProgress()

    def build(progress, cancel):
        result = ensure_demo_result(progress=progress, cancel=cancel)
        return result, _layers.result_layer_data(result)  # read here, not in the GUI thread

    def on_progress(report):
        overall.update(*report)
        try:
            viewer.status = f"napari-brainorg: building the quick demo: {overall.text()}"
        except RuntimeError:  # the viewer was closed
            pass

    def done(value):
        _RUNNING.pop("demo", None)
        result, items = value
        _layers.replace_result_layers(viewer, items)
        show_info(f"napari-brainorg: the quick demo result is ready ({result.path}; SIMULATED fMRI).")

    def failed(exc):
        _RUNNING.pop("demo", None)
        show_error(f"napari-brainorg: building the quick demo failed: {type(exc).__name__}: {exc}")

    task = Task(build, (), {}, on_done=done, on_error=failed, on_progress=on_progress, name="quick demo")
    task.kwargs.update(progress=lambda stage, d, t: task.emit_progress((str(stage), int(d), int(t))),
                       cancel=task.cancel_event)
    _RUNNING["demo"] = task
    task.start()


def demo_sample() -> list[tuple]:
    """napari sample-data provider: the quick demo result's layers.

    When the demo is not cached yet, returns the MNI template now and adds the
    result's layers to the current viewer once the pipeline has built it.
    """
    import napari
    from napari.utils.notifications import show_info

    from ..datasets import mni_template_path
    from . import layers as _layers

    from . import display

    path = demo_result_path()
    viewer = napari.current_viewer()
    display.install(viewer)
    if (path / "summary.json").exists():
        return _layers.result_layer_data(path)
    if viewer is None:  # no window to come back to: build it here
        return _layers.result_layer_data(ensure_demo_result())
    show_info(f"napari-brainorg: building the quick demo result in {path} (first time only, "
              "a minute or two); its layers will appear here when it is done.")
    _build_in_background(viewer)
    return [_layers.template_layer_data(mni_template_path())]
