"""The encoding stage sequential vs on a local Dask cluster (``--jobs 2``): wall time, peak memory.

The stage is the pipeline's own: per model x subject the GLS atom maps, the paper's
sparse fit with its circular-shift null and the nested cross-validated ridge
(``encode_subject``, one task each, writing ``encoding/<model>/subjects/<subject>.npz``),
then the group step reading those files. Data: SIMULATED region time series (labelled
as such; smooth atoms, each column a sparse mix of them plus noise), ``--subjects`` x
``--volumes`` x ``--columns`` with ``--atoms`` atoms, the encoding defaults otherwise.

Each mode runs once, in a fresh process: ``sequential`` (this process, the default of
``brainorg run``) and ``jobs=N`` (a ``LocalCluster`` of N worker processes, cores/N BLAS
threads each). Peak memory is the largest sum of the resident memory of that process
and its children (the Dask workers), sampled every 50 ms. The wall time of the Dask
mode is given with and without starting the cluster; the group results of both modes
are compared (largest absolute difference).

Run with ``nice -n 10 python benchmarks/bench_distributed.py`` (defaults: 4 subjects x
300 volumes x 5,000 columns, 64 atoms, --jobs 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def simulate(n_subjects: int, n_volumes: int, n_columns: int, n_atoms: int, seed: int = 0):
    """SIMULATED: smooth atoms (n_volumes, n_atoms) and per subject Y = atoms W + noise."""
    rng = np.random.default_rng(seed)
    kernel = np.exp(-np.arange(8) / 2.0)
    atoms = np.apply_along_axis(lambda c: np.convolve(c, kernel)[:n_volumes], 0,
                                rng.standard_normal((n_volumes, n_atoms)))
    atoms /= np.linalg.norm(atoms, axis=0)
    W = rng.standard_normal((n_atoms, n_columns)) * (rng.random((n_atoms, n_columns)) < 0.05)
    data = [np.asarray(atoms @ W * 5 + rng.standard_normal((n_volumes, n_columns)), np.float32)
            for _ in range(n_subjects)]
    return atoms.astype(np.float32), data


class PeakMemory:
    """Largest resident memory of this process plus its children, sampled in a thread."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except Exception:  # a worker that just exited
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def run_mode(args) -> dict:
    from napari_brainorg.io.fmri import FMRIData
    from napari_brainorg.io.results import ResultWriter
    from napari_brainorg.pipeline import make_config
    from napari_brainorg.pipeline.context import StepContext
    from napari_brainorg.pipeline.execution import encoding_tasks
    from napari_brainorg.pipeline.steps.encoding import step_encoding

    atoms, data = simulate(args.subjects, args.volumes, args.columns, args.atoms)
    subjects = [f"sub-{i + 1:02d}" for i in range(args.subjects)]
    out = tempfile.mkdtemp(prefix="bench-distributed-")
    config = make_config({"story": {"tr": 1.5, "n_volumes": args.volumes},
                          "fmri": {"regions": [f"{s}.npy" for s in subjects]},
                          "atoms": {"n_atoms": args.atoms}, "out": out})
    fmri = FMRIData(data=data, subjects=subjects, kind="regions", mask_img=None,
                    region_names=[f"column {j}" for j in range(args.columns)], tr=1.5,
                    sources=["SIMULATED"] * args.subjects)
    ctx = StepContext(config, ResultWriter(out), None, None)
    ctx.keys.update({"atoms/sim": "simulated atoms", "fmri": "simulated fMRI", "story": "no story"})
    per_model = {"sim": {"atoms": atoms, "an": None}}
    started = time.perf_counter()
    with PeakMemory() as memory:
        executor = None
        if args.mode != "sequential":
            from napari_brainorg.pipeline.tasks import DaskExecutor

            executor = DaskExecutor(jobs=args.jobs)
        cluster_ready = time.perf_counter()
        try:
            if executor is not None:
                encoding_tasks(ctx, executor, fmri, per_model, None, False)
            group = step_encoding(ctx, fmri, atoms, "sim")
        finally:
            stage_done = time.perf_counter()
            if executor is not None:
                executor.close()
    np.savez(os.path.join(out, "group.npz"), **{k: group[k] for k in ("r2_cv", "r2_sparse", "z", "coef")})
    return {"mode": args.mode if args.mode == "sequential" else f"jobs={args.jobs}",
            "wall_s": time.perf_counter() - started, "stage_s": stage_done - cluster_ready,
            "peak_gb": memory.peak / 2**30, "group": os.path.join(out, "group.npz"),
            "blas_threads": getattr(executor, "blas_threads", None)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--volumes", type=int, default=300)
    p.add_argument("--columns", type=int, default=5_000, help="voxels (region columns) per subject")
    p.add_argument("--atoms", type=int, default=64)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--mode", choices=["both", "sequential", "dask"], default="both")
    args = p.parse_args()
    if args.mode != "both":
        print("RESULT " + json.dumps(run_mode(args)))
        return
    from napari_brainorg.pipeline.tasks import available_cores

    print(f"encoding stage, SIMULATED data: {args.subjects} subjects x {args.volumes} volumes x "
          f"{args.columns:,} columns, {args.atoms} atoms; {available_cores()} cores, load "
          f"{os.getloadavg()[0]:.1f} at start")
    rows = []
    for mode in ("sequential", "dask"):
        cmd = [sys.executable, __file__, "--mode", mode, *[f"--{k}={getattr(args, k)}" for k in
                                                             ("subjects", "volumes", "columns", "atoms", "jobs")]]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
        rows.append(json.loads(line[len("RESULT "):]))
    print(f"{'mode':<12} {'wall (s)':>9} {'stage (s)':>10} {'peak memory (GB)':>17} {'BLAS threads/worker':>20}")
    for r in rows:
        print(f"{r['mode']:<12} {r['wall_s']:>9.1f} {r['stage_s']:>10.1f} {r['peak_gb']:>17.2f} "
              f"{r['blas_threads'] or '-':>20}")
    a, b = (np.load(r["group"]) for r in rows)
    diffs = {k: float(np.abs(a[k] - b[k]).max()) for k in a.files}
    print("largest |sequential - dask| of the group results: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    print(f"speed-up of the stage: {rows[0]['stage_s'] / rows[1]['stage_s']:.2f}x "
          f"(wall, with the cluster's start: {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}x); "
          f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
