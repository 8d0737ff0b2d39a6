"""``brainorg run CONFIG.yaml``: the pipeline on your own data."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the pipeline described by a YAML configuration file",
        description=(
            "Run story -> AN responses -> atoms -> encoding -> networks on your data, as "
            "described by a YAML file (`brainorg config --example` prints an annotated one). Steps whose "
            "inputs did not change are reused from the output folder. Several stories per subject: "
            "a list 'stories' (each with its path, onset, tr, n_volumes) and fmri.images (or regions) "
            "as a mapping story -> runs; the ridge is then also scored leave-one-story-out."
        ),
    )
    p.add_argument("config", help="YAML configuration file")
    p.add_argument("--out", help="output folder (overrides 'out' in the file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline import load_config
    from ._common import print_summary, run_with_progress

    overrides = {"out": args.out} if args.out else {}
    config = load_config(args.config, **overrides)
    result = run_with_progress(config, quiet=args.quiet)
    print_summary(result)
    return 0
