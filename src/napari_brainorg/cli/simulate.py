"""``brainorg simulate``: labelled simulated subjects with a planted ground truth."""

from __future__ import annotations


def _links(text: str | None):
    if not text:
        return None
    from ..errors import ConfigError

    links: dict[int, list[str]] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        atom, sep, nets = item.partition(":")
        if not sep or not atom.strip().isdigit():
            raise ConfigError(f"--links item {item!r} must look like 'SOURCE:network[,network]', e.g. '3:auditory'.")
        links[int(atom)] = [n.strip() for n in nets.split(",") if n.strip()]
    return links


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="write SIMULATED fMRI subjects driven by a real model's artificial neurons in chosen networks",
        description=(
            "Run a real model over a real story, then write clearly labelled simulated subjects on "
            "the MNI grid: chosen networks are activated or deactivated by sources built from the "
            "model's artificial neurons (mixes of an atom's member ANs, or atoms of a dictionary "
            "learned again; not the atoms an analysis learns), seen through HRFs whose delay and "
            "dispersion vary over voxels and subjects, at a true R2 between --r2-min and --r2-max, "
            "with AR(1) noise whose coefficient depends on tissue (0.6 grey matter, 0.2 elsewhere) "
            "and independent spontaneous fluctuations of the Smith and Yeo networks in every "
            "subject. The ground truth is written beside the images as truth.json."
        ),
    )
    p.add_argument("--story", default="pieman", help="bundled story name or story file (default: pieman)")
    p.add_argument("--onset", type=float, default=0.0, help="seconds added to every word time (default 0)")
    p.add_argument("--tr", type=float, default=1.5, help="repetition time in seconds (default 1.5)")
    p.add_argument("--n-volumes", type=int, default=300, help="number of volumes (default 300)")
    p.add_argument("--model", default="minilm", help="model whose atoms drive the BOLD (default minilm)")
    p.add_argument("--n-atoms", type=int, default=64, help="atoms in the dictionary (default 64)")
    p.add_argument("--atlas", default="smith10", help="networks the signal is planted in (default smith10)")
    p.add_argument("--sources", default="an_mix", choices=["an_mix", "relearned", "atoms"],
                   help="what is planted (default an_mix: the signed mean of 30 member ANs of an atom)")
    p.add_argument("--links", default=None,
                   help="activations 'SOURCE:network[,network];...', e.g. '3:auditory;10:yeo7:Default' "
                        "(default: six weakly correlated sources activating and deactivating distinct "
                        "Smith and Yeo-7 networks)")
    p.add_argument("--negative-links", default=None, help="deactivations, same syntax as --links")
    p.add_argument("--n-subjects", type=int, default=3, help="simulated subjects (default 3)")
    p.add_argument("--r2-min", type=float, default=0.02, help="smallest true R2 of an in-network voxel")
    p.add_argument("--r2-max", type=float, default=0.2, help="largest true R2 of an in-network voxel")
    p.add_argument("--resolution", type=float, default=4.0, help="voxel size in mm (default 4; 2 = MNI 2 mm)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from .._progress import TqdmProgress
    from ..pipeline import make_config, run_simulation

    config = make_config({
        "story": {"path": args.story, "onset": args.onset, "tr": args.tr, "n_volumes": args.n_volumes},
        "features": {"models": [args.model]},
        "atoms": {"n_atoms": args.n_atoms},
        "fmri": {"simulate": {"links": _links(args.links), "negative_links": _links(args.negative_links),
                              "sources": args.sources, "atlas": args.atlas, "n_subjects": args.n_subjects,
                              "r2_min": args.r2_min, "r2_max": args.r2_max, "resolution_mm": args.resolution,
                              "seed": args.seed}},
        "out": args.out,
    }, source="the command line")
    bars = TqdmProgress()
    try:
        folder = run_simulation(config, progress=bars)
    finally:
        bars.close()
    files = sorted(p.name for p in folder.iterdir())
    print(f"SIMULATED subjects written to {folder}: {', '.join(files)}")
    return 0
