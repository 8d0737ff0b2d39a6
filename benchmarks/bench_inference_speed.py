"""Speed of the atom maps and the association test, before and after the stimulus null.

SIMULATED white-noise fMRI on the bundled MNI152 mask at 4 mm (about 28k voxels),
300 volumes, 64 atoms, 8 subjects, Smith-10 and Yeo-7 networks. Prints seconds for

- before: per-subject OLS z maps + Stouffer, and the spatial-shift null of the
  thresholded group map (``networks.test: spatial``, both parts, both atlases);
- after: per-subject GLS z maps (AR(1) without the atoms) + group map, and the
  stimulus-null association test (every subject refitted for every draw) with circular
  shifts (all ~240 distinct shifts) and with phase randomisation (``--draws``).

    python benchmarks/bench_inference_speed.py [--subjects 8] [--res 4] [--draws 5000] [--spatial 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from scipy.ndimage import gaussian_filter1d

    from napari_brainorg.encoding.glm import gls_atom_maps, ols_zmaps, stouffer
    from napari_brainorg.encoding.inference import group_effects
    from napari_brainorg.encoding.preprocessing import drift_basis, highpass
    from napari_brainorg.io.atlases import load_fbn
    from napari_brainorg.networks.association import disjoint_networks, stimulus_association
    from napari_brainorg.networks.overlap import associate_atoms
    from napari_brainorg.io.fmri import load_mask
    from napari_brainorg.simulate import resample_mask

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--res", type=float, default=4.0)
    parser.add_argument("--draws", type=int, default=5000)
    parser.add_argument("--spatial", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mask = resample_mask(load_mask("mni"), args.res)
    atlases = {name: load_fbn(name, mask) for name in ("smith10", "yeo7")}
    V = atlases["smith10"].maps.shape[1]
    T, k, tr = 300, 64, 1.5
    atoms = gaussian_filter1d(rng.standard_normal((T, k)), 2.5, axis=0)
    data = [rng.standard_normal((T, V)).astype(np.float32) for _ in range(args.subjects)]
    print(f"{T} volumes x {V} voxels x {k} atoms x {args.subjects} subjects")

    t0 = time.perf_counter()
    X = highpass(atoms, tr)
    n_drift = drift_basis(T, tr, 128.0).shape[1]
    z = [ols_zmaps(X, highpass(Y, tr), n_nuisance=n_drift) for Y in data]
    group_ols = stouffer(np.stack(z))
    t_ols = time.perf_counter() - t0
    t0 = time.perf_counter()
    for part in ("activated", "deactivated"):
        for atlas in atlases.values():
            associate_atoms(group_ols, atlas, mask, part=part, threshold=2.3, n_permutations=args.spatial,
                            random_state=0)
    t_spatial = time.perf_counter() - t0
    print(f"before: OLS maps {t_ols:.1f} s; spatial-shift null ({args.spatial} draws) {t_spatial:.1f} s")

    t0 = time.perf_counter()
    drift = drift_basis(T, tr, 128.0)
    maps = [gls_atom_maps(atoms, Y, nuisance=drift) for Y in data]
    group_effects(np.stack([m.effect for m in maps]), np.stack([m.z for m in maps]))
    t_gls = time.perf_counter() - t0
    networks = np.concatenate([disjoint_networks(a.maps, a.masks()) for a in atlases.values()])
    names = [a for a, atlas in atlases.items() for _ in atlas.network_names]
    timings = {}
    for null, draws in (("shift", 10_000), ("phase", args.draws)):
        t0 = time.perf_counter()
        table = stimulus_association(atoms, data, networks, tr=tr, atlas_names=names, null=null,
                                     n_permutations=draws, random_state=0)
        timings[null] = (time.perf_counter() - t0, table.attrs["n_permutations"])
    print(f"after: GLS maps {t_gls:.1f} s; stimulus null: "
          + "; ".join(f"{null} ({n} draws) {t:.1f} s" for null, (t, n) in timings.items()))


if __name__ == "__main__":
    main()
