"""Time and peak memory of io.fmri.load_fmri on a run that must be resampled.

A simulated 4D run (noise, labelled as such) on a 3 mm RAS grid covering the MNI
brain, loaded onto the bundled FSL MNI152 2 mm mask (238,955 voxels), as a Narratives
run in MNI152NLin2009cAsym space would be.

    python benchmarks/bench_fmri.py [--n-volumes 300]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-volumes", type=int, default=300)
    args = parser.parse_args()
    import nibabel as nib

    from napari_brainorg.io.fmri import load_fmri

    affine = np.array([[3.0, 0, 0, -96.0], [0, 3.0, 0, -132.0], [0, 0, 3.0, -78.0], [0, 0, 0, 1]])
    shape = (65, 77, 65, args.n_volumes)
    rng = np.random.default_rng(0)
    data = (1000 + 10 * rng.standard_normal(shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub-01_task-sim_bold.nii.gz"
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms((3.0, 3.0, 3.0, 1.5))
        nib.save(img, str(path))
        del data, img
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = load_fmri(path, mask="mni", n_volumes=args.n_volumes)
        dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.n_volumes} volumes {shape[:3]} 3 mm -> FSL 2 mm mask: {dt:.1f} s, "
          f"data {out.data[0].shape} float32 ({out.data[0].nbytes / 2**20:.0f} MiB), "
          f"peak RSS {peak:.0f} MiB")
    for note in out.notes:
        print("  note:", note)


if __name__ == "__main__":
    main()
