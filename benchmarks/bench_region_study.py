"""A region study the size of a real one, end to end: wall time, CPU time, peak memory, step times.

Data: SIMULATED region time series (labelled as such): ``--subjects`` subjects x
``--regions`` regions x ``--volumes`` volumes (default 27 x 6 x 362, the size of a
language-localiser ROI study of one story), each region a noisy mix of two smooth
random sources plus AR(1) noise, written as ``sub-XX_regions.npy`` files. The run is
the pipeline's own (``brainorg run`` on a configuration): the story ``--story`` cut to
``--volumes`` volumes, both bundled models (MiniLM, SmolLM2), the three baselines
(phase-randomised, untrained, nuisance) and the layer-wise baseline, 64 atoms, the
encoding and network defaults otherwise.

The first run extracts the models' features; ``--reuse DIR`` runs again in a folder
whose features and atoms are cached, so the figure is the analysis of the region data
(encoding, networks, report), which is what a second study on the same story costs.

Run with ``python benchmarks/bench_region_study.py`` (prints the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_regions(folder: Path, n_subjects: int, n_regions: int, n_volumes: int, seed: int = 0) -> list[str]:
    """SIMULATED region time series, one .npy (n_volumes, n_regions) per subject."""
    rng = np.random.default_rng(seed)
    kernel = np.exp(-np.arange(10) / 3.0)
    sources = np.apply_along_axis(lambda c: np.convolve(c, kernel)[:n_volumes], 0,
                                  rng.standard_normal((n_volumes, 2)))
    mixing = rng.standard_normal((2, n_regions))
    files = []
    for s in range(n_subjects):
        noise = np.zeros((n_volumes, n_regions))
        e = rng.standard_normal((n_volumes, n_regions))
        for t in range(n_volumes):
            noise[t] = (0.4 * noise[t - 1] if t else 0) + e[t]
        Y = 100 + sources @ mixing + 2.0 * noise
        path = folder / f"sub-{s + 1:02d}_regions.npy"
        np.save(path, Y.astype(np.float32))
        files.append(str(path))
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=27)
    p.add_argument("--regions", type=int, default=6)
    p.add_argument("--volumes", type=int, default=362)
    p.add_argument("--story", default="lucy")
    p.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    p.add_argument("--out", default=None, help="result folder (default: a new temporary folder)")
    args = p.parse_args()
    import yaml

    out = Path(args.out or tempfile.mkdtemp(prefix="bench-regions-"))
    data = out.parent / f"{out.name}-regions"
    data.mkdir(parents=True, exist_ok=True)
    files = write_regions(data, args.subjects, args.regions, args.volumes)
    config = {"story": {"path": args.story, "tr": 1.5, "n_volumes": args.volumes},
              "features": {"models": args.models, "baselines": ["phase_randomised", "untrained", "nuisance"]},
              "fmri": {"regions": files},
              "encoding": {"baseline": True},
              "out": str(out)}
    cfg_path = data / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    print(f"load average {os.getloadavg()}; {args.subjects} subjects x {args.regions} regions x "
          f"{args.volumes} volumes (SIMULATED); out {out}")
    cmd = [sys.executable, "-m", "napari_brainorg.cli", "run", str(cfg_path), "--out", str(out), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(proc.returncode)
    summary = json.loads((out / "summary.json").read_text())
    print(f"wall {wall:.1f} s  CPU {usage.ru_utime + usage.ru_stime:.1f} s "
          f"(user {usage.ru_utime:.1f}, sys {usage.ru_stime:.1f})  peak RSS {usage.ru_maxrss / 2**20:.2f} GB")
    for step, seconds in summary.get("timings_s", {}).items():
        print(f"  {step:<24s} {seconds:8.1f} s")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
