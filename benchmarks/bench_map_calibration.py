"""Group atom maps under a shared stimulus-locked signal: uncalibrated against calibrated.

All fMRI here is SIMULATED (:func:`napari_brainorg.simulate.simulate_fmri`: tissue AR(1)
noise, network fluctuations independent across subjects, drifts, varying HRFs). Planted
sources drive networks in every subject the same way (the story is shared), at a high
R² so that the shared signal is strong. The atoms tested are phase-randomised copies of
a dictionary-like set of atoms (no lock to the story): every voxel with |z| above a
threshold is a false positive. Printed per threshold (1.96, 3, 3.5, 4): the rate over
all voxels x atoms x draws, as a ratio to the nominal two-sided rate, for

- ``uncalibrated``: the random-effects group z of the per-subject GLS maps (what
  ``atom_maps_z`` showed before), and
- ``calibrated``: :func:`napari_brainorg.encoding.calibration.stimulus_calibrated_maps`
  (what ``atom_maps_z`` shows now);

then a real driver (one planted source among the atoms): the share of its planted voxels
at |z| > 1.96 in both maps; and the cost: seconds per subject of the GLS maps and of the
calibration (its whole cost divided by the number of subjects), with the machine's load.

    python benchmarks/bench_map_calibration.py [--subjects 12] [--draws 8] [--atoms 32]
        [--r2 0.1 0.4] [--resolution 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import stats

TR = 1.5


def hrf_courses(rng, n: int, k: int) -> np.ndarray:
    """Source-like time courses: white noise through a canonical HRF, then mixed a little (atoms overlap)."""
    from nilearn.glm.first_level import glover_hrf

    hrf = glover_hrf(TR, oversampling=1, time_length=32.0)
    raw = rng.standard_normal((n + 40, k))
    x = np.stack([np.convolve(raw[:, j], hrf)[40:n + 40] for j in range(k)], axis=1)
    x = x @ (np.eye(k) + 0.3 * rng.standard_normal((k, k)) / np.sqrt(k))
    return (x - x.mean(0)) / x.std(0)


def maps(atoms, data, nuisance):
    """Uncalibrated (random-effects over per-subject GLS) and calibrated group z, with their costs."""
    from napari_brainorg.encoding.calibration import stimulus_calibrated_maps
    from napari_brainorg.encoding.glm import gls_atom_maps
    from napari_brainorg.encoding.inference import group_effects

    t = time.perf_counter()
    subj = [gls_atom_maps(atoms, Y, nuisance=nuisance) for Y in data]
    t_gls = (time.perf_counter() - t) / len(data)
    z_unc = group_effects(np.stack([m.effect for m in subj]), np.stack([m.z for m in subj]))[0]
    t = time.perf_counter()
    z_cal = stimulus_calibrated_maps(atoms, data, nuisance=nuisance).z
    t_cal = (time.perf_counter() - t) / len(data)
    return z_unc, z_cal, t_gls, t_cal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=12)
    ap.add_argument("--draws", type=int, default=8, help="phase-randomised copies of the atoms")
    ap.add_argument("--atoms", type=int, default=32)
    ap.add_argument("--volumes", type=int, default=300)
    ap.add_argument("--r2", type=float, nargs=2, default=(0.1, 0.4))
    ap.add_argument("--resolution", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from napari_brainorg.encoding.inference import phase_randomise
    from napari_brainorg.encoding.preprocessing import drift_basis
    from napari_brainorg.simulate import SimulationPlan, simulate_fmri

    rng = np.random.default_rng(args.seed)
    n, k = args.volumes, args.atoms
    atoms = hrf_courses(rng, n, k)
    # three shared sources; source 0 is atom 0 itself (the real driver), the others are no atom
    sources = np.column_stack([atoms[:, 0], hrf_courses(rng, n, 2)])
    plan = SimulationPlan(links={0: ["auditory"], 1: ["yeo7:Default", "medial visual"], 2: ["sensorimotor"]},
                          n_subjects=args.subjects, r2_range=tuple(args.r2), resolution_mm=args.resolution,
                          seed=args.seed, truth_atlases=["smith10"])
    t = time.perf_counter()
    sim = simulate_fmri(sources, plan, tr=TR)
    print(f"SIMULATED: {args.subjects} subjects, {n} volumes, {sim.data[0].shape[1]} voxels, {k} atoms, "
          f"planted R2 {args.r2[0]}-{args.r2[1]} in {int(sim.signal_voxels.sum())} voxels "
          f"({time.perf_counter() - t:.1f} s)")
    nuisance = drift_basis(n, TR, 128.0)
    thresholds = np.array([1.96, 3.0, 3.5, 4.0])
    nominal = 2 * stats.norm.sf(thresholds)
    counts = {"uncalibrated": np.zeros(4), "calibrated": np.zeros(4)}
    total = 0
    costs = []
    for d in range(args.draws):
        surrogate = phase_randomise(atoms, random_state=rng)
        z_unc, z_cal, t_gls, t_cal = maps(surrogate, sim.data, nuisance)
        costs.append((t_gls, t_cal))
        for name, z in (("uncalibrated", z_unc), ("calibrated", z_cal)):
            counts[name] += (np.abs(z)[None] > thresholds[:, None, None]).sum((1, 2))
        total += z_unc.size
    print(f"phase-randomised atoms: {args.draws} draws x {k} atoms x {sim.data[0].shape[1]} voxels = {total} tests")
    print("  |z| >      " + "  ".join(f"{c:>7.2f}" for c in thresholds))
    print("  nominal    " + "  ".join(f"{p:>7.1e}" for p in nominal))
    for name, c in counts.items():
        print(f"  {name:<11}" + "  ".join(f"{r:>7.2f}" for r in c / total / nominal) + "   (rate / nominal)")
    # the real driver: atom 0 is source 0, planted in the auditory network
    z_unc, z_cal, t_gls, t_cal = maps(atoms, sim.data, nuisance)
    planted = np.any([m for m, p in zip(sim.link_masks, sim.planted) if p[0] == 0], axis=0)
    print(f"real driver (atom 0 = planted source 0): share of its planted voxels at |z| > 1.96: "
          f"uncalibrated {np.mean(np.abs(z_unc[0, planted]) > 1.96):.3f}, "
          f"calibrated {np.mean(np.abs(z_cal[0, planted]) > 1.96):.3f} ({int(planted.sum())} voxels)")
    c = np.array(costs)
    print(f"cost per subject: GLS maps {c[:, 0].mean():.3f} s, calibration {c[:, 1].mean():.3f} s "
          f"(calibration / GLS {c[:, 1].mean() / c[:, 0].mean():.2f}); load {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
