"""``brainorg run CONFIG.yaml``: the pipeline on your own data."""

from __future__ import annotations


from ._common import add_execution_options


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
    add_execution_options(p)
    p.add_argument("--subjects", nargs="+", default=None, metavar="SUBJECT",
                   help="one part of a run split by subjects: the shared steps and only these subjects' "
                        "encoding (e.g. sub-01 sub-02), into the same output folder as the other parts; "
                        "then `brainorg merge CONFIG` makes the group maps and tables")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline import load_config, run_subjects
    from ._common import execution_kwargs, print_summary, run_with_progress

    overrides = {"out": args.out} if args.out else {}
    config = load_config(args.config, **overrides)
    if args.subjects:
        check_subjects_exist(config, args.subjects)
        written = run_with_progress(config, quiet=args.quiet, run=run_subjects_of(args.subjects, run_subjects),
                                    **execution_kwargs(args))
        print(f"\nEncoded {len(args.subjects)} subject(s) ({len(written)} artifact(s)) in {config.out}; "
              f"when every part has run: brainorg merge {args.config}"
              + (f" --out {args.out}" if args.out else ""))
        return 0
    result = run_with_progress(config, quiet=args.quiet, **execution_kwargs(args))
    print_summary(result)
    return 0


def check_subjects_exist(config, subjects) -> None:
    """Every subject of --subjects is one of the study's, before any step runs."""
    from ..errors import ConfigError, did_you_mean
    from ..pipeline.validate import study_subjects

    known = study_subjects(config)
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise ConfigError(f"--subjects {unknown} are not subjects of this study; its subjects are {known}."
                          + did_you_mean(unknown[0], known))


def run_subjects_of(subjects, run_subjects):
    """``run_subjects`` with the subjects bound (the call shape of ``run_pipeline``)."""
    def call(config, **kwargs):
        return run_subjects(config, subjects, **kwargs)
    return call
