"""Time and memory of simulate_fmri on the MNI grid (2 mm full mask, and 4 mm).

Run: ``nice -n 10 python benchmarks/bench_simulate.py [--volumes 300] [--subjects 3]``.
Prints, per resolution: voxels in the mask, seconds to simulate, seconds to write
(int16 .nii.gz) and the peak resident memory of the process so far.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np


def hrf_atoms(n_volumes: int, n_atoms: int, tr: float, seed: int = 0) -> np.ndarray:
    from nilearn.glm.first_level import glover_hrf

    rng = np.random.default_rng(seed)
    hrf = glover_hrf(tr, oversampling=1, time_length=32.0)
    raw = rng.standard_normal((n_volumes + 40, n_atoms))
    atoms = np.stack([np.convolve(raw[:, j], hrf)[40:n_volumes + 40] for j in range(n_atoms)], axis=1)
    return atoms / np.linalg.norm(atoms, axis=0)


def main() -> None:
    from napari_brainorg.simulate import SimulationPlan, simulate_fmri, write_simulation

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--resolutions", type=float, nargs="+", default=[4.0, 2.0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    tr = 1.5
    atoms = hrf_atoms(args.volumes, 64, tr)
    links = {3: ["auditory"], 10: ["default mode"], 20: ["sensorimotor"], 30: ["medial visual"],
             40: ["cerebellum"], 50: ["executive control"]}
    for res in args.resolutions:
        plan = SimulationPlan(links=links, n_subjects=args.subjects, resolution_mm=res, seed=0)
        t0 = time.perf_counter()
        sim = simulate_fmri(atoms, plan, tr=tr)
        t_sim = time.perf_counter() - t0
        t_write = float("nan")
        if not args.no_write:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                write_simulation(sim, tmp)
                t_write = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{res:g} mm: {sim.data[0].shape[1]:,} voxels x {args.volumes} volumes x {args.subjects} "
              f"subjects: simulate {t_sim:.1f} s, write {t_write:.1f} s, peak RSS {peak_mb:,.0f} MB")
        del sim


if __name__ == "__main__":
    main()
