"""A tiny study on disk for the fault matrix: a short story, two small 4D NIfTI runs
(random numbers, clearly not brain data), a mask, a custom atlas and a config.

Small enough that a whole run takes seconds: 40 volumes, 16 mm voxels, 4 atoms.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml

N_VOLUMES = 40
TR = 1.5
AFFINE = np.array([[16.0, 0, 0, -90], [0, 16, 0, -126], [0, 0, 16, -72], [0, 0, 0, 1]])
SHAPE = (12, 14, 12)


def story_rows(shift: float = 1.0, duration: float = 56.0) -> list[tuple[str, float, float]]:
    """The first minute of the bundled 'pieman' story as (word, onset, offset)."""
    import pandas as pd

    from napari_brainorg.datasets import story_path

    table = pd.read_csv(story_path("pieman"), header=None, names=["word", "aligned", "onset", "offset"])
    table = table.dropna(subset=["onset", "offset"])
    t0 = float(table["onset"].iloc[0])
    rows = []
    for word, on, off in zip(table["word"], table["onset"], table["offset"]):
        on, off = float(on) - t0 + shift, float(off) - t0 + shift
        if off > duration:
            break
        rows.append((str(word).replace("\t", " "), round(on, 3), round(off, 3)))
    return rows


def write_story(path: Path, rows) -> Path:
    path.write_text("word\tonset\toffset\n" + "".join(f"{w}\t{a}\t{b}\n" for w, a, b in rows))
    return path


def write_run(path: Path, seed: int, n_volumes: int = N_VOLUMES, shape=SHAPE) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    data = (100 + rng.standard_normal((*shape, n_volumes))).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def write_mask(path: Path, shrink: int = 0) -> Path:
    import nibabel as nib

    mask = np.zeros(SHAPE, np.uint8)
    mask[2 + shrink:10 - shrink, 2 + shrink:12 - shrink, 2 + shrink:10 - shrink] = 1
    nib.save(nib.Nifti1Image(mask, AFFINE), path)
    return path


def config_dict(**over) -> dict:
    cfg = {
        "story": {"path": "story.tsv", "tr": TR, "n_volumes": N_VOLUMES},
        "features": {"models": ["minilm"], "device": "cpu"},
        "atoms": {"n_atoms": 4, "max_iter": 10},
        "fmri": {"images": ["sub-01_bold.nii.gz", "sub-02_bold.nii.gz"], "mask": "mask.nii.gz"},
        "encoding": {"n_folds": 2, "gap": 1, "alphas": [1.0, 100.0]},
        "networks": {"atlases": ["smith10", "custom_atlas.nii.gz"], "n_permutations": 20},
        "out": "result",
    }
    for dotted, value in over.items():
        section, _, key = dotted.partition("__")
        if key:
            cfg.setdefault(section, {})[key] = value
        else:
            cfg[section] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def make_study(folder: Path) -> Path:
    """Write the study into ``folder``; return the config path."""
    from napari_brainorg.datasets import atlas_path

    folder.mkdir(parents=True, exist_ok=True)
    write_story(folder / "story.tsv", story_rows())
    write_run(folder / "sub-01_bold.nii.gz", 1)
    write_run(folder / "sub-02_bold.nii.gz", 2)
    write_mask(folder / "mask.nii.gz")
    shutil.copy(atlas_path("yeo7"), folder / "custom_atlas.nii.gz")
    return write_config(folder / "study.yaml", config_dict())
