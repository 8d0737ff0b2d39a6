"""``brainorg demo``: the embedded default, end to end."""

from __future__ import annotations


from ._common import add_execution_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on bundled stories and models with simulated subjects",
        description=(
            "The embedded default: four Narratives stories (pieman, lucy, bronx, notthefallintact; "
            "1,460 volumes), the bundled MiniLM (BERT architecture) and SmolLM2 (Llama architecture), "
            "64 atoms each, beside three baselines (phase-randomised atoms, an untrained MiniLM, the "
            "nuisance regressors), and six clearly labelled SIMULATED subjects whose BOLD in known "
            "Smith-2009 and Yeo-7 networks is activated or deactivated by time courses mixed from "
            "MiniLM's artificial neurons (varying HRFs, tissue AR noise, network fluctuations). Both "
            "encoding models, the network association test with smith10 and yeo7, the models side by "
            "side. Writes NIfTI maps, CSV tables, PNG figures, report.html, summary.json and "
            "recovery.json (every declaration scored against the planted links)."
        ),
    )
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier result to reuse)")
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help="models to compare; the first drives the simulated subjects "
                        "(default: minilm smollm2; with --quick: minilm)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller run (pieman alone, MiniLM, 16 atoms, 8 subjects, 6 mm grid, no baselines) "
                        "for a first look in well under a minute")
    p.add_argument("--resolution", type=float, default=None, metavar="MM",
                   help="voxel size of the simulated subjects in mm (default: 5; with --quick 6); 4 for the finer "
                        "grid (about twice the voxels, and of the simulation's and encoding's time)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_execution_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline import demo_config
    from ._common import execution_kwargs, print_summary, run_with_progress

    config = demo_config(args.out, models=args.models, quick=args.quick, resolution_mm=args.resolution)
    result = run_with_progress(config, quiet=args.quiet, **execution_kwargs(args))
    print_summary(result)
    return 0
