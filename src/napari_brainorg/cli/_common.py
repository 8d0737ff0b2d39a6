"""Helpers shared by the sub-commands."""

from __future__ import annotations

import json
import threading
from pathlib import Path


def add_execution_options(parser) -> None:
    """--jobs and --scheduler: where the tasks run (default: this process, one after another)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="run the tasks (features and atoms per model, encoding per model x subject, "
                            "network tests per model) on a local Dask cluster of N worker processes, each "
                            "with cores/N BLAS threads (needs dask[distributed]); 1: in this process, as "
                            "without --jobs")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run the tasks on an existing Dask cluster: its scheduler's address "
                            "(tcp://host:8786) or scheduler file (.json); its workers must see the output "
                            "folder at the same path (see the README for SLURM)")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of workers >= 1; {text!r} was provided")
    return value


def execution_kwargs(args) -> dict:
    return {"jobs": getattr(args, "jobs", None), "scheduler": getattr(args, "scheduler", None)}


def run_with_progress(config, quiet: bool = False, run=None, **kwargs):
    """Run the pipeline with tqdm bars; Ctrl-C stops it at the next checkpoint.

    ``run``: the function to call (default :func:`~napari_brainorg.pipeline.run_pipeline`),
    with ``kwargs`` (``jobs``, ``scheduler``, ``merge``...).
    """
    from .._progress import TqdmProgress
    from ..pipeline import run_pipeline

    bars = TqdmProgress(disable=quiet)
    cancel = threading.Event()
    try:
        return (run or run_pipeline)(config, progress=bars, cancel=cancel, **kwargs)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        bars.close()


def print_summary(result) -> None:
    s = result.summary
    print(f"\nResults in {result.path}")
    print(f"  models: {', '.join(s.get('models', []))}   wall time: {s.get('wall_time_s')} s")
    for slug, info in s.get("results", {}).items():
        print(f"  {slug}: {info['n_ans']} ANs, {info['n_atoms']} atoms, "
              f"{info['r2_kind']} median {info['r2_median']:.3f} / 95th pct {info['r2_p95']:.3f}, "
              f"associations {info['n_associations']}")
    for line in s.get("headline", []):
        print(f"  {line}")
    findings = s.get("verdict", [])
    if findings:
        print("  verdict:")
        for f in findings:
            print(f"    {'!' if f['severity'] == 'warning' else '-'} {f['text']}")
    if "recovery" in s:
        print(f"  recovery of planted atom-network links: {json.dumps(s['recovery'])}")
    figs = sorted(Path(result.path, "figures").glob("*.png"))
    if figs:
        print(f"  figures: {len(figs)} PNG in {Path(result.path, 'figures')}")
    print(f"  view them: brainorg view {result.path}")
