"""A napari window showing a result folder, as ``brainorg view DIR`` opens it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..io.results import ResultFolder


def open_viewer(result: ResultFolder | str, *, model: str | None = None, atlas: str | None = None,
                atom: int = 0, pipeline: bool = True, viewer: napari.Viewer | None = None,
                show: bool = True, roi_atlas: str | None = None):
    """Open (or reuse) a viewer with ``result`` loaded and the plugin's widgets docked.

    Returns
    -------
    napari.Viewer
        Its widgets are in ``viewer.window.dock_widgets``
        ('Atom explorer', 'Brain networks', 'Ortho views', 'Compare models' and, unless ``pipeline=False``, 'Run pipeline';
        'Regions' for a region result, its values painted through ``roi_atlas`` when given).
    """
    import napari

    from . import layers as _layers
    from .explorer import AtomExplorer
    from .networks_widget import NetworksWidget
    from .pipeline_widget import PipelineWidget

    from ..io.results import ResultFolder
    from . import display
    from ._warm import start_warm_up

    if not isinstance(result, ResultFolder):
        result = ResultFolder(result)
    _check_model_and_atlas(result, model, atlas)  # a wrong name fails here, not in the loading thread
    # a new window appears once its panels are docked: building them (their plots, Qt's
    # layout) is not a frozen window on screen; the layers come in a thread afterwards
    new_window = viewer is None
    if new_window:
        viewer = napari.Viewer(title="napari-brainorg", show=False)
    display.install(viewer)
    start_warm_up()  # napari's first-use costs, in threads, while the panels are built
    explorer = AtomExplorer(viewer)
    networks = NetworksWidget(viewer)
    # one column of tabs on the right: each panel gets the window's full height
    if pipeline:
        _layers.dock_tabbed(viewer, PipelineWidget(viewer), "Run pipeline")
    _layers.dock_tabbed(viewer, networks, "Brain networks")
    from .orthoviews import dock_ortho_views

    dock_ortho_views(viewer)
    from .compare import dock_comparison

    # docked now (a tab appearing later relayouts the window while the explorer loads)
    dock_comparison(viewer, explorer)
    _layers.dock_tabbed(viewer, explorer, "Atom explorer", raise_=True)
    from ._loading import show_result_async

    # read in a thread, shown one layer per turn of the event loop: the window never freezes
    show_result_async(viewer, result, model, atlas=atlas)
    from .regions_panel import dock_regions_panel

    dock_regions_panel(viewer, result, model, roi_atlas=roi_atlas)  # region results only
    if new_window and show:
        viewer.window.show()
    if atom:
        def _show_first(state, atom=atom):
            explorer.loaded.disconnect(_show_first)
            explorer.select_atom(min(int(atom), state.maps.n_atoms - 1))

        explorer.loaded.connect(_show_first)
    return viewer


def _check_model_and_atlas(result: ResultFolder, model: str | None, atlas: str | None) -> None:
    from ..errors import check_choice

    if model is not None:
        check_choice("model", model, result.models)
    if atlas is not None and result.atlas_names():
        check_choice("atlas", atlas, result.atlas_names())


def run_event_loop(viewer) -> None:  # pragma: no cover - interactive
    import napari

    napari.run()
