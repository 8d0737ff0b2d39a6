"""``brainorg view DIR``: open a result folder in napari with the atom explorer docked."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "view",
        help="open a result folder in napari (template, R² map, atom maps, networks)",
        description=(
            "Open napari with a result folder loaded: the MNI template, the R² map, the map of "
            "the chosen atom and the brain-network overlay, every volume in its own world "
            "coordinates. The atom explorer (a table of atoms: click one to see its map, time "
            "course and layer histogram) and the networks panel are docked on the right."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="a result folder written by `brainorg demo` or `brainorg run`")
    p.add_argument("--model", default=None,
                   help="which model's atoms to show when the result holds several (default: the first)")
    p.add_argument("--atlas", default=None,
                   help="which atlas's networks to overlay (default: the first of the result's atlases)")
    p.add_argument("--atom", type=int, default=0, help="atom shown first (default: 0)")
    p.add_argument("--roi-atlas", default=None, metavar="FILE",
                   help="for a region result (fMRI given as region time series): a label NIfTI whose label "
                        "names (sidecar table FILE's stem + .tsv with columns index, name) match the region "
                        "names; the regions' values are painted on the template")
    p.add_argument("--no-pipeline", action="store_true", help="do not dock the pipeline widget")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io.results import ResultFolder

    result = ResultFolder(args.dir)  # a missing, foreign or incomplete folder fails before napari starts
    result.verify()  # so does a truncated or changed file
    if args.roi_atlas is not None:
        from pathlib import Path

        if not Path(args.roi_atlas).is_file():
            raise FileNotFoundError(f"--roi-atlas {args.roi_atlas!r} does not exist; expected a label NIfTI "
                                    "(.nii or .nii.gz) whose label names match the region names.")
        if not result.is_region_result:
            raise ValueError(f"--roi-atlas is for region results; {str(result.path)!r} holds voxel maps "
                             "(its networks are drawn from --atlas).")
    from .._napari._qt import check_qt_binding

    check_qt_binding()
    from .._napari.view import open_viewer

    viewer = open_viewer(result, model=args.model, atlas=args.atlas, atom=args.atom,
                         pipeline=not args.no_pipeline, roi_atlas=args.roi_atlas)
    from .._napari.view import run_event_loop

    run_event_loop(viewer)
    return 0
