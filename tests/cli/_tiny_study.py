"""A tiny study on disk for the fault matrix: a short story, two small 4D NIfTI runs
(random numbers, clearly not brain data), a mask, a custom atlas and a config.

Small enough that a whole run takes seconds: 40 volumes, 16 mm voxels, 4 atoms.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
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


def write_bids_tree(root: Path, layout: dict[str, list[tuple[str, str, str]]], *, tr: float = TR,
                    events_onset: float = 1.0) -> Path:
    """A raw BIDS data set of tiny runs: ``layout`` maps a subject label to its (session, task,
    run) triples. The tasks' ``RepetitionTime`` and events live once in the top folder
    (inherited by every run, as BIDS allows); every run has its own random numbers."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    seed = 100
    tasks = set()
    for sub, entries in layout.items():
        for ses, task, run in entries:
            func = root / f"sub-{sub}" / f"ses-{ses}" / "func"
            func.mkdir(parents=True, exist_ok=True)
            write_run(func / f"sub-{sub}_ses-{ses}_task-{task}_run-{run}_bold.nii.gz", seed)
            seed += 1
            tasks.add(task)
    for task in sorted(tasks):
        (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": tr, "TaskName": task}))
        (root / f"task-{task}_events.tsv").write_text(
            f"onset\tduration\ttrial_type\n{events_onset}\t{N_VOLUMES * TR - 5}\tstory\n")
    return root


def make_bids_study(folder: Path, layout: dict[str, list[tuple[str, str, str]]], **bids) -> Path:
    """The tiny study with its fMRI in a BIDS tree (``folder/bids``); return the config path."""
    make_study(folder)
    for sub in ("01", "02"):
        (folder / f"sub-{sub}_bold.nii.gz").unlink()
    write_bids_tree(folder / "bids", layout)
    cfg = config_dict(fmri={"bids": {"root": "bids", "task": "pieman", "derivative": None, **bids},
                            "mask": "mask.nii.gz"})
    return write_config(folder / "study.yaml", cfg)


def edit_config(study: Path, **over) -> None:
    """Change ``section__key=value`` (or a whole ``section``) in ``study/study.yaml``."""
    cfg = yaml.safe_load((study / "study.yaml").read_text())
    for dotted, value in over.items():
        section, _, key = dotted.partition("__")
        if key:
            cfg.setdefault(section, {})[key] = value
        elif value is None:
            cfg.pop(section, None)
        else:
            cfg[section] = value
    write_config(study / "study.yaml", cfg)


SRC = str(Path(__file__).resolve().parents[2] / "src")


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONPATH": SRC + os.pathsep + env.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "default"})
    env.update(extra)
    return env


def brainorg_cmd(args) -> list[str]:
    return [sys.executable, "-m", "napari_brainorg.cli", *map(str, args)]


def brainorg(args, cwd, timeout=300, **popen) -> subprocess.CompletedProcess:
    """Run the real command line in its own process."""
    return subprocess.run(brainorg_cmd(args), cwd=cwd, env=popen.pop("env", None) or cli_env(),
                          capture_output=True, text=True, timeout=timeout, **popen)


def tree_hashes(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folders`` (the run lock's own files aside)."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file() and p.name not in (".napari-brainorg.lock", ".napari-brainorg.run.json"):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def copy_study(finished: Path, dest: Path) -> Path:
    shutil.copytree(finished, dest, symlinks=True)
    return dest


#: files whose content legitimately differs between two runs of the same inputs
# (report.html shows the folder's path and step timings; warnings.json what this run warned,
# which a rerun that reuses steps does not repeat)
VOLATILE = ("provenance.json", "summary.json", "config.yaml", ".napari-brainorg", "report.html",
            "dataset_description.json", "warnings.json")


def assert_same_results(got: Path, expected: Path) -> None:
    """Every result file of ``expected`` exists in ``got`` with equal content, arrays
    compared numerically (NIfTI data and affines, .npy, .npz, tables); figures by name."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    def listing(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*")
                if p.is_file() and not p.name.startswith(".") and ".cache" not in p.parts}

    files = listing(expected)
    assert listing(got) == files, sorted(listing(got) ^ files)
    for rel in sorted(files):
        a, b = got / rel, expected / rel
        if rel.endswith(VOLATILE) or rel.endswith(".png"):
            continue
        if rel.endswith((".nii.gz", ".nii")):
            ia, ib = nib.load(a), nib.load(b)
            np.testing.assert_allclose(ia.affine, ib.affine, err_msg=rel)
            np.testing.assert_allclose(np.asarray(ia.dataobj), np.asarray(ib.dataobj), rtol=1e-4, atol=1e-5,
                                       err_msg=rel)
        elif rel.endswith(".npy"):
            np.testing.assert_allclose(np.load(a), np.load(b), rtol=1e-4, atol=1e-5, err_msg=rel)
        elif rel.endswith(".npz"):
            za, zb = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
            assert sorted(za.files) == sorted(zb.files), rel
            for k in za.files:
                if za[k].dtype.kind in "fiub":
                    np.testing.assert_allclose(za[k], zb[k], rtol=1e-4, atol=1e-5, err_msg=f"{rel}:{k}")
                else:
                    np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{rel}:{k}")
        elif rel.endswith((".csv", ".tsv")):
            sep = "\t" if rel.endswith(".tsv") else ","
            ta, tb = pd.read_csv(a, sep=sep), pd.read_csv(b, sep=sep)
            assert list(ta.columns) == list(tb.columns), rel
            for c in ta.columns:
                if pd.api.types.is_numeric_dtype(tb[c]):
                    np.testing.assert_allclose(ta[c].to_numpy(float), tb[c].to_numpy(float), rtol=1e-4,
                                               atol=1e-5, err_msg=f"{rel}:{c}")
                else:
                    assert ta[c].astype(str).tolist() == tb[c].astype(str).tolist(), f"{rel}:{c}"
        elif rel.endswith("provenance.json"):
            continue
        else:
            assert a.read_bytes() == b.read_bytes(), rel
