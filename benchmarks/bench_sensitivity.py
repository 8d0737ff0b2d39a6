"""What the design could find: the predicted detectable driver R² against the simulator.

All fMRI here is SIMULATED (:func:`napari_brainorg.simulate.simulate_fmri`: tissue AR(1)
noise, network fluctuations independent across subjects, drifts). One atom drives one
network (Smith 2009 RSN10 "auditory") with the same R² in every planted voxel; the HRF is
the atoms' own (no delay or dispersion), so the planted driver is the atom. For every
planted R² of the sweep and every seed, the association test runs as the pipeline runs it
(phase null, first and further draws, FDR over atoms x networks x both directions, the
effect rules) and the planted link is declared or not. Printed:

- the predicted detectable R² (80 % power; :func:`napari_brainorg.networks.sensitivity.detectable_r2`)
  of the planted atom x network, from null data of the same design (no planted signal)
  and from each planted run's own data, as the pipeline computes it;
- per planted R²: the detection rate over seeds.

The rate should cross 80 % near the predicted R². With the machine's load and the time.

    python benchmarks/bench_sensitivity.py [--subjects 6] [--volumes 200] [--atoms 16] [--seeds 12]
        [--r2 0.002 0.004 0.008 0.016 0.032]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

TR = 1.5
RULES = dict(min_effect=0.05, min_relative_effect=0.25, min_network_relative_effect=0.5,
             min_network_relative_marginal=0.5)


from bench_map_calibration import hrf_courses  # noqa: E402  (the same source-like courses; a script's folder is on sys.path)


def study(atoms, r2, subjects, seed, resolution):
    from napari_brainorg.simulate import SimulationPlan, simulate_fmri

    plan = SimulationPlan(links={0: ["auditory"]} if r2 > 0 else {}, n_subjects=subjects,
                          r2_range=(r2, r2) if r2 > 0 else (0.02, 0.2), hrf_delay_s=0.0, hrf_dispersion_s=0.0,
                          resolution_mm=resolution, seed=seed, truth_atlases=["smith10"])
    return simulate_fmri(atoms[:, :1], plan, tr=TR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--volumes", type=int, default=200)
    ap.add_argument("--atoms", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--resolution", type=float, default=6.0)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--refine", type=int, default=20000)
    ap.add_argument("--r2", type=float, nargs="+", default=[0.002, 0.004, 0.008, 0.016, 0.032])
    args = ap.parse_args()

    from napari_brainorg.io.atlases import load_fbn
    from napari_brainorg.networks.association import disjoint_networks, stimulus_association
    from napari_brainorg.networks.sensitivity import detectable_r2

    t0 = time.perf_counter()
    atoms = hrf_courses(np.random.default_rng(0), args.volumes, args.atoms)
    null = study(atoms, 0.0, args.subjects, 100, args.resolution)
    atlas = load_fbn("smith10", null.mask_img)
    networks = disjoint_networks(atlas.maps, atlas.masks())
    target = atlas.network_names.index("auditory")
    n_tests = 2 * args.atoms * networks.shape[0]
    common = dict(tr=TR, n_tests=n_tests, n_draws=args.draws + args.refine, min_effect=RULES["min_effect"])
    predicted_null = detectable_r2(atoms, null.data, networks, **common)
    print(f"SIMULATED: {args.subjects} subjects, {args.volumes} volumes, {null.data[0].shape[1]} voxels, "
          f"{args.atoms} atoms, {networks.shape[0]} networks ({n_tests} tests per family)")
    print(f"predicted detectable R2 (80 % power) of atom 0 x auditory, from null data: "
          f"{predicted_null[0, target]:.4f} (median over atoms x networks {np.median(predicted_null):.4f})")
    print(f"{'planted R2':>10}  {'detected':>8}  {'rate':>5}  {'predicted (own data), median':>28}")
    for r2 in args.r2:
        hits, own = 0, []
        for seed in range(args.seeds):
            sim = study(atoms, r2, args.subjects, seed, args.resolution)
            table = stimulus_association(atoms, sim.data, networks, tr=TR, network_names=atlas.network_names,
                                         n_permutations=args.draws, n_refine=args.refine, random_state=seed,
                                         **RULES)
            row = table[(table["atom"] == 0) & (table["network"] == "auditory")
                        & (table["direction"] == "activated")]
            hits += bool(row["associated"].iloc[0])
            own.append(detectable_r2(atoms, sim.data, networks, **common)[0, target])
        print(f"{r2:>10.4f}  {hits:>4}/{args.seeds:<3}  {hits / args.seeds:>5.2f}  {np.median(own):>28.4f}")
    print(f"time {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
