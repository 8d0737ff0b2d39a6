"""Speed of the atom x network association (networks.overlap.associate_atoms).

Prints seconds per permutation draw for k atom maps on the bundled MNI152 2 mm mask
(238,955 voxels) or a coarser grid, against Yeo-7 and Smith-10. The maps are
simulated smooth noise (speed does not depend on their content).

    python benchmarks/bench_networks.py [--k 64] [--n-permutations 200] [--res 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=64, help="atoms")
    parser.add_argument("--n-permutations", type=int, default=200)
    parser.add_argument("--res", type=float, default=2.0, help="grid spacing in mm (2: the FSL grid)")
    args = parser.parse_args()

    from nilearn.image import resample_img
    from scipy import ndimage

    from napari_brainorg.io.atlases import load_fbn
    from napari_brainorg.io.fmri import load_mask
    from napari_brainorg.networks.overlap import associate_atoms

    mask_img = load_mask("mni")
    if args.res != 2.0:
        affine = np.diag([-args.res, args.res, args.res, 1.0])
        affine[:3, 3] = mask_img.affine[:3, 3]
        shape = tuple(int(np.ceil(s * 2 / args.res)) for s in mask_img.shape)
        mask_img = resample_img(mask_img, target_affine=affine, target_shape=shape,
                                interpolation="nearest", force_resample=True, copy_header=True)
    mask = np.asarray(mask_img.dataobj) > 0
    rng = np.random.default_rng(0)
    sigma = 8.0 / 2.3548 / args.res
    maps = np.stack([ndimage.gaussian_filter(rng.standard_normal(mask.shape), sigma)[mask]
                     for _ in range(args.k)]).astype(np.float32)
    maps = (maps - maps.mean(1, keepdims=True)) / maps.std(1, keepdims=True)
    print(f"mask: {mask.sum()} voxels at {args.res:g} mm; k = {args.k}; "
          f"{args.n_permutations} permutations")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlases = {name: load_fbn(name, mask_img) for name in ("yeo7", "smith10")}
    for name, atlas in atlases.items():
        for score in ("overlap_rate", "correlation"):
            t0 = time.perf_counter()
            associate_atoms(maps, atlas, mask_img, threshold=2.0, score=score,
                            n_permutations=args.n_permutations, random_state=0)
            dt = time.perf_counter() - t0
            print(f"{name:8s} {score:13s} {dt:7.2f} s  ({1000 * dt / args.n_permutations:6.1f} ms per draw)")


if __name__ == "__main__":
    main()
