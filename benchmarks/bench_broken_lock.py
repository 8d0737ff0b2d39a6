"""Held-out significance and model-vs-baseline comparisons when the lock to the story is broken.

SIMULATED voxel data with planted links (the quick demo's design) are written as a user's
NIfTI runs after circularly shifting each subject's series by its own offset (60-240
volumes): every subject keeps its signal, noise and autocorrelation, but nothing is locked
to the story any more. The pipeline then runs on those files with the voxel permutation
test (alpha chosen again in every draw, subjects as random effects) and the baselines.
What must hold: the share of voxels with q < 0.05 stays at or below the FDR level, and no
comparison with a baseline is declared a lead (chance-corrected held-out r, p < 0.05).

    nice -n 10 python benchmarks/bench_broken_lock.py [--seeds 0 1] [--n-permutations 20] [--out DIR]

Prints one JSON line per seed and the totals.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _shifted_study(base: Path, seed: int) -> list[str]:
    import nibabel as nib

    from napari_brainorg.pipeline import demo_config, make_config, run_simulation

    design = demo_config(base / "sim", quick=True).model_dump(mode="json")
    design["fmri"]["simulate"]["seed"] = seed
    folder = run_simulation(make_config(design))
    rng = np.random.default_rng(1000 + seed)
    paths = []
    for img_path in sorted(folder.glob("sub-*_bold.nii.gz")):
        img = nib.load(img_path)
        data = np.asarray(img.dataobj)
        shift = int(rng.integers(60, 241))
        out = base / f"shifted_{img_path.name}"
        nib.save(nib.Nifti1Image(np.roll(data, shift, axis=3), img.affine, img.header), out)
        paths.append(str(out))
    (base / "mask.nii.gz").write_bytes((folder / "mask.nii.gz").read_bytes())
    return paths


def run(base: Path, seed: int, n_permutations: int) -> dict:
    from napari_brainorg.pipeline import make_config, run_pipeline

    images = _shifted_study(base, seed)
    config = make_config({
        "story": {"path": "pieman", "tr": 1.5, "n_volumes": 300},
        "features": {"models": ["minilm"], "baselines": ["nuisance", "phase_randomised"], "center_words": True},
        "atoms": {"n_atoms": 16, "max_iter": 30},
        "fmri": {"images": images, "mask": str(base / "mask.nii.gz")},
        "encoding": {"n_folds": 3, "n_permutations": n_permutations, "models": ["ridge"], "save_timecourses": False},
        "networks": {"atlases": ["smith10", "yeo7"], "n_permutations": 2000, "n_refine": 0},
        "seed": seed, "out": str(base / "result")})
    t = time.perf_counter()
    result = run_pipeline(config)
    summary = json.loads((result.path / "summary.json").read_text())
    arrays = np.load(result.path / "encoding/minilm/arrays.npz")
    q = arrays["q_cv"]
    leads = [r for r in summary.get("baseline_comparison", []) if r.get("chance_corrected") and r["p"] < 0.05
             and r["difference"] > 0]
    return {"seed": seed, "wall_s": round(time.perf_counter() - t, 1), "n_voxels": int(q.size),
            "fraction_q05": float(np.mean(q < 0.05)), "n_leads": len(leads),
            "leads": [f"{r['model']} vs {r['baseline']} {r['difference']:+.4f} p={r['p']:.3g}" for r in leads],
            "n_links": int(sum(sum(v["n_associations"].values()) for v in summary["results"].values())),
            "group_test": summary["maps"]["minilm"].get("held_out_group_test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-permutations", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        base = Path(args.out or tempfile.mkdtemp(prefix="brainorg-broken-lock-")) / f"seed{seed}"
        base.mkdir(parents=True, exist_ok=True)
        row = run(base, seed, args.n_permutations)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nbroken lock, SIMULATED quick design, {len(rows)} seeds: fraction of voxels with q < 0.05 "
          f"{np.mean([r['fraction_q05'] for r in rows]):.4f} (FDR level 0.05); chance-corrected leads over a "
          f"baseline: {sum(r['n_leads'] for r in rows)}; network links: {sum(r['n_links'] for r in rows)}")


if __name__ == "__main__":
    main()
