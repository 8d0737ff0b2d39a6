"""Calibration of the spatial null of networks.overlap.associate_atoms (simulated data).

Draws maps of smooth stationary Gaussian noise (simulated: no network is linked to any
map) on the bundled MNI152 mask brought to a coarse grid, tests every map × network of
an atlas, and prints the fraction of p-values at or below 0.05, 0.1 and 0.2 for each
way of filling the moved maps (``fill``) and each score. A valid null gives fractions
at or below the nominal levels; the Monte-Carlo error of each fraction is about
sqrt(a (1 - a) / n_eff), with n_eff well below the number of tests (tests of one draw
are correlated).

    python benchmarks/bench_networks_null.py [--fwhm 8 16] [--draws 30] [--res 6] [--atlas yeo7]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fwhm", type=float, nargs="+", default=[8.0, 16.0], help="smoothness (mm)")
    parser.add_argument("--draws", type=int, default=30, help="draws of 10 maps each")
    parser.add_argument("--res", type=float, default=6.0, help="grid spacing (mm)")
    parser.add_argument("--atlas", default="yeo7")
    parser.add_argument("--fills", nargs="+", default=["reflect", "patch", "none"])
    parser.add_argument("--scores", nargs="+", default=["overlap_rate", "dice", "correlation"])
    parser.add_argument("--n-permutations", type=int, default=200)
    args = parser.parse_args()

    from nilearn.image import resample_img
    from scipy import ndimage

    from napari_brainorg.io.atlases import load_fbn
    from napari_brainorg.io.fmri import load_mask
    from napari_brainorg.networks.overlap import associate_atoms

    mni = load_mask("mni")
    affine = np.diag([-args.res, args.res, args.res, 1.0])
    affine[:3, 3] = mni.affine[:3, 3]
    shape = tuple(int(np.ceil(s * 2 / args.res)) for s in mni.shape)
    mask_img = resample_img(mni, target_affine=affine, target_shape=shape, interpolation="nearest",
                            force_resample=True, copy_header=True)
    mask = np.asarray(mask_img.dataobj) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas = load_fbn(args.atlas, mask_img)
    print(f"{args.atlas} on a {args.res:g} mm grid ({mask.sum()} voxels); {args.draws} draws × 10 maps × "
          f"{atlas.n_networks} networks; {args.n_permutations} permutations; cut z > 1.5; "
          "permutation p-values (no tail fit)")
    for fwhm in args.fwhm:
        rng = np.random.default_rng(int(fwhm * 10))
        sigma = fwhm / 2.3548 / args.res
        p_values: dict[tuple[str, str], list] = {}
        t0 = time.perf_counter()
        for draw in range(args.draws):
            maps = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")[mask]
                             for _ in range(10)])
            maps = ((maps - maps.mean(1, keepdims=True)) / maps.std(1, keepdims=True)).astype(np.float32)
            for fill in args.fills:
                for score in args.scores:
                    table = associate_atoms(maps, atlas, mask_img, threshold=1.5, score=score, fill=fill,
                                            n_permutations=args.n_permutations, min_score=0.0,
                                            random_state=draw, tail="none")
                    p_values.setdefault((fill, score), []).append(table["p"].to_numpy())
        print(f"FWHM {fwhm:g} mm ({time.perf_counter() - t0:.0f} s)")
        for (fill, score), ps in p_values.items():
            p = np.concatenate(ps)
            p = p[np.isfinite(p)]
            print(f"  fill={fill:8s} {score:13s} P(p<=.05)={np.mean(p <= 0.05):.3f}  "
                  f"P(p<=.1)={np.mean(p <= 0.1):.3f}  P(p<=.2)={np.mean(p <= 0.2):.3f}  (n={p.size})")


if __name__ == "__main__":
    main()
