"""Sample data: the quick demo result (pieman, bundled MiniLM, SIMULATED subjects).

No result is shipped inside the package. The first time the sample is opened it is
built by the pipeline's quick demo configuration (``demo_config(out, quick=True)``:
16 atoms, 2 simulated subjects on a 6 mm grid, 100 permutations) into a cache
folder, which takes a minute or two on a laptop CPU; later openings read the cache.
The cache folder is ``$NAPARI_BRAINORG_DEMO`` when set, otherwise
``<user cache>/napari-brainorg/demo-quick`` (platformdirs).
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_ENV = "NAPARI_BRAINORG_DEMO"


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


def demo_sample() -> list[tuple]:
    """napari sample-data provider: the quick demo result's layers."""
    from napari.utils.notifications import show_info

    from . import layers as _layers

    path = demo_result_path()
    if not (path / "summary.json").exists():
        show_info(f"napari-brainorg: building the quick demo result in {path} (first time only)…")
    result = ensure_demo_result()
    return _layers.result_layer_data(result)
