"""``brainorg merge CONFIG.yaml``: the group step of a run split by subjects."""

from __future__ import annotations

from ._common import add_execution_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="make the group maps, tables and report of a run split by subjects",
        description=(
            "After `brainorg run CONFIG --subjects ...` has run for every subject (as separate jobs, "
            "into one output folder), make the group maps, network tables, figures, summary and report "
            "from the subjects' files: the same as one run of CONFIG. A subject without its encoding "
            "(or still being encoded) is an error naming it; nothing is recomputed for it."
        ),
    )
    p.add_argument("config", help="the YAML configuration file every part ran with")
    p.add_argument("--out", help="output folder (overrides 'out' in the file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_execution_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline import load_config
    from ._common import execution_kwargs, print_summary, run_with_progress

    overrides = {"out": args.out} if args.out else {}
    config = load_config(args.config, **overrides)
    result = run_with_progress(config, quiet=args.quiet, merge=True, **execution_kwargs(args))
    print_summary(result)
    return 0
