"""Helpers shared by the sub-commands."""

from __future__ import annotations

import json
import threading
from pathlib import Path


def run_with_progress(config, quiet: bool = False):
    """Run the pipeline with tqdm bars; Ctrl-C stops it at the next checkpoint."""
    from .._progress import TqdmProgress
    from ..pipeline import run_pipeline

    bars = TqdmProgress(disable=quiet)
    cancel = threading.Event()
    try:
        return run_pipeline(config, progress=bars, cancel=cancel)
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
    if "recovery" in s:
        print(f"  recovery of planted atom-network links: {json.dumps(s['recovery'])}")
    figs = sorted(Path(result.path, "figures").glob("*.png"))
    if figs:
        print(f"  figures: {len(figs)} PNG in {Path(result.path, 'figures')}")
    print(f"  view them: brainorg view {result.path}")
