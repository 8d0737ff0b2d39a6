"""``brainorg report DIR``: the self-contained HTML report of a result folder."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write the HTML report of a result folder (one file, readable offline)",
        description=(
            "Write one self-contained HTML file describing a finished result folder: the question "
            "and data, a methods paragraph generated from the run's configuration with citations, "
            "the validation (recovery of planted links for simulated data), per model the R2 map, "
            "the atoms (table, glass-brain projections and layer histograms, browsable) and the "
            "associated networks, the model comparison, the warnings of the run and provenance. "
            "It reads the folder's files only (nothing is refitted). Every run also writes it as "
            "DIR/report.html."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="a result folder written by `brainorg demo` or `brainorg run`")
    p.add_argument("--out", default=None,
                   help="where to write the HTML file (default: DIR/report.html)")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    from pathlib import Path

    from ..io.results import ResultFolder
    from ..report import write_report

    result = ResultFolder(args.dir)  # a missing or foreign folder is one clear error
    if args.out is not None and Path(args.out).exists() and Path(args.out).resolve() != result.report_path().resolve():
        from ..errors import ConfigError

        raise ConfigError(f"'--out' {args.out!r} exists; choose a new file name so that nothing of yours is overwritten.")
    path = write_report(result, args.out)
    logging.getLogger("napari_brainorg").info("report written to %s", path)
    print(path)
    return 0
