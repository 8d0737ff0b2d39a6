"""Sample data: the quick demo result (pieman, bundled MiniLM, SIMULATED subjects).

No result is shipped inside the package. The first time the sample is opened it is
built by the pipeline's quick demo configuration (``demo_config(out, quick=True)``:
16 atoms, 2 simulated subjects on a 6 mm grid, 100 permutations) into a cache
folder; later openings read the cache. While it is built (a minute or two on a
laptop CPU) the viewer stays usable: the MNI template is shown at once,
the pipeline runs in its own process (``brainorg demo --quick``), and the result's layers replace the template
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
    """Build the demo in a separate process (``brainorg demo --quick``), then show its layers.

    A process, not a thread: loading the language model's libraries holds Python's GIL
    for seconds (the GUI would freeze); the process also dies cleanly with a Cancel or
    when napari quits. Its progress lines go to the status bar.
    """
    import subprocess
    import sys

    from napari.utils.notifications import show_error, show_info
    from qtpy.QtCore import QTimer

    from ._loading import show_result_async

    if "demo" in _RUNNING:
        return
    path = demo_result_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.parent / f"{path.name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "napari_brainorg.cli", "demo", "--quick", "--out", str(path)],
                                stdout=out, stderr=subprocess.STDOUT)
    timer = QTimer()
    timer.setInterval(250)

    def last_line() -> str:
        try:
            text = log.read_bytes()[-4000:].decode(errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
        return lines[-1][-120:] if lines else ""

    def poll():
        code = proc.poll()
        try:
            if code is None:
                viewer.status = f"napari-brainorg: building the quick demo: {last_line()}"
                return
        except RuntimeError:  # the viewer was closed
            pass
        timer.stop()
        _RUNNING.pop("demo", None)
        if code != 0:
            show_error(f"napari-brainorg: building the quick demo failed (exit {code}): {last_line()} "
                       f"(log: {log})")
            return
        show_result_async(viewer, path, on_shown=lambda _added: show_info(
            f"napari-brainorg: the quick demo result is ready ({path}; SIMULATED fMRI)."))

    timer.timeout.connect(poll)
    timer.start()
    _RUNNING["demo"] = (proc, timer)


def _stop_build() -> None:  # at exit: no orphan process
    entry = _RUNNING.pop("demo", None)
    if entry is not None and entry[0].poll() is None:
        entry[0].terminate()


import atexit  # noqa: E402

atexit.register(_stop_build)


def demo_sample() -> list[tuple]:
    """napari sample-data provider: the quick demo result's layers.

    napari adds what a sample returns at once, on the GUI thread: in a fresh process the
    first layer's imports and first-use costs alone froze the window for half a second
    to a second. In a viewer with a window, the layers come the way every other route
    brings them instead (:mod:`._loading`: read and made in a thread, added a piece per
    turn of the event loop), and the sample returns once they are shown (the window
    repaints and answers meanwhile: :func:`._loading.wait_shown`): the cached result's
    template, R², atom map and network outlines, or, while the demo is being built (in
    its own process, first time only), the MNI template, the result's layers replacing
    it when it is done. What napari adds itself is the last and smallest piece: the
    A/P/L/R letters. Without a window, the result's layer-data tuples (built first when
    missing).
    """
    from . import display
    from . import layers as _layers
    from ._loading import qt_viewer_of_reader

    viewer = qt_viewer_of_reader()
    if viewer is None:  # no window to come back to: read (or build) it here
        import napari

        display.install(napari.current_viewer())
        return _layers.result_layer_data(ensure_demo_result())
    from ._loading import show_layers_async, show_result_async, wait_shown

    display.install(viewer)
    path = demo_result_path()
    with display.letters_held(viewer):  # they are this sample's own layer (returned below)
        if (path / "summary.json").exists():
            task = show_result_async(viewer, path)
        else:
            from napari.utils.notifications import show_info

            from ..datasets import mni_template_path

            show_info(f"napari-brainorg: building the quick demo result in {path} (first time only, "
                      "a minute or two); its layers will appear here when it is done.")
            _build_in_background(viewer)
            task = show_layers_async(viewer, lambda: [_layers.template_layer_data(mni_template_path())],
                                     name="MNI template")
        wait_shown(task.feed)
    return [display.letters_for_sample(viewer)]
