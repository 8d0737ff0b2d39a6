"""A tiny result folder for the napari tests: SIMULATED maps, real template and atlas.

The folder has the layout the pipeline writes (docs/architecture.md), made with the
real :class:`~napari_brainorg.io.results.ResultWriter`. Its data grid is a 4 mm RAS
grid (the bundled template and atlases are 2 mm LAS), so every test that looks at
world placement compares two different grids and orientations.

Planted ground truth (clearly simulated values, z units):

- atom 0: +6 in Yeo-7 network 1 (Visual)
- atom 1: +5 in network 7 (Default), -5 in network 2 (Somatomotor)
- atom 2: +4 in network 6 (Frontoparietal)
- atom 3: no signal

plus Gaussian noise (sd 0.4, seeded) inside the MNI brain mask.
"""

from __future__ import annotations

import numpy as np
import pytest

N_VOLUMES = 60
TR = 1.5
PLANTED = {0: {1: 6.0}, 1: {7: 5.0, 2: -5.0}, 2: {6: 4.0}, 3: {}}
N_LAYERS = 6

#: 4 mm RAS grid covering the MNI152 box (x -90..90, y -126..90, z -72..108)
GRID_AFFINE = np.array([[4.0, 0, 0, -90.0], [0, 4.0, 0, -126.0], [0, 0, 4.0, -72.0], [0, 0, 0, 1]])
GRID_SHAPE = (46, 55, 46)


def _resample_nearest(img, affine, shape):
    from nilearn.image import resample_img

    return resample_img(img, target_affine=affine, target_shape=shape, interpolation="nearest",
                        force_resample=True, copy_header=True)


def build_result_folder(path, seed: int = 7):
    """Write the tiny simulated result folder at ``path``; return the planted truth."""
    import nibabel as nib
    import pandas as pd

    from napari_brainorg import datasets
    from napari_brainorg.io.results import ResultWriter

    rng = np.random.default_rng(seed)
    w = ResultWriter(path)
    model = "minilm"

    mask_img = _resample_nearest(nib.load(datasets.mni_mask_path()), GRID_AFFINE, GRID_SHAPE)
    mask = np.asarray(mask_img.dataobj) > 0
    atlas_img = _resample_nearest(nib.load(datasets.atlas_path("yeo7")), GRID_AFFINE, GRID_SHAPE)
    atlas = np.rint(np.asarray(atlas_img.dataobj)).astype(np.int16) * mask

    k = len(PLANTED)
    z = np.zeros(GRID_SHAPE + (k,), np.float32)
    z[mask] = rng.normal(0.0, 0.4, size=(int(mask.sum()), k))
    for atom, nets in PLANTED.items():
        for net, value in nets.items():
            z[..., atom][atlas == net] += value
    coef = (0.1 * z).astype(np.float32)
    r2 = np.zeros(GRID_SHAPE, np.float32)
    r2[mask] = np.abs(rng.normal(0.0, 0.01, int(mask.sum())))
    r2[np.isin(atlas, [1, 2, 6, 7])] += 0.12

    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")

    def nifti(arr):
        return nib.Nifti1Image(arr, GRID_AFFINE, header)

    w.write_nifti(f"encoding/{model}/mask.nii.gz", nifti(mask.astype(np.uint8)))
    w.write_nifti(f"encoding/{model}/atom_maps_z.nii.gz", nifti(z))
    w.write_nifti(f"encoding/{model}/atom_maps.nii.gz", nifti(coef))
    w.write_nifti(f"encoding/{model}/r2_cv.nii.gz", nifti(r2))
    w.write_nifti("networks/atlas_yeo7.nii.gz", nifti(atlas))
    names = datasets.atlas_labels("yeo7")
    colors = np.array([[120, 18, 134], [70, 130, 180], [0, 118, 14], [196, 58, 250],
                       [220, 248, 164], [230, 148, 34], [205, 62, 78]], float) / 255.0
    w.write_table("networks/atlas_yeo7.tsv", pd.DataFrame({
        "index": np.arange(1, 8), "network": names, "r": colors[:, 0], "g": colors[:, 1],
        "b": colors[:, 2], "a": np.ones(7)}))

    t = np.arange(N_VOLUMES) * TR
    atoms = np.stack([np.sin(2 * np.pi * t / p + a) for a, p in enumerate((30, 45, 60, 90))], 1)
    atoms /= np.linalg.norm(atoms, axis=0)
    w.write_npy(f"atoms/{model}/atoms.npy", atoms.astype(np.float32))
    # SIMULATED BOLD of 2 subjects (baseline 100, slow drift, planted z-weighted atoms, noise)
    # and the paper's sparse fit's prediction, saved the way the encoding step saves them
    from napari_brainorg.encoding.preprocessing import highpass
    from napari_brainorg.encoding.sparse_fit import SparseAtomEncoder
    from napari_brainorg.pipeline.config import EncodingConfig
    from napari_brainorg.pipeline.steps.encoding import MEASURED_COURSES, save_voxel_timecourses, sparse_prediction

    enc_cfg = EncodingConfig()
    X = highpass(atoms, TR, cutoff=enc_cfg.highpass_cutoff)
    subjects = ["sub-01", "sub-02"]
    bold, measured, courses = [], [], {"design": [], "weights": [], "intercept": []}
    for _ in subjects:
        Y = (100.0 + 0.02 * t[:, None] + 3.0 * atoms @ z[mask].T
             + rng.normal(0.0, 1.0, size=(N_VOLUMES, int(mask.sum()))))
        Yf = highpass(Y, TR, cutoff=enc_cfg.highpass_cutoff)
        bold.append(Y)
        measured.append(np.asarray(Yf, np.float32).T)
        prediction = sparse_prediction(SparseAtomEncoder(alpha=enc_cfg.sparse_alpha).fit(X, Yf), X)
        for name, value in prediction.items():
            courses[name.removeprefix("prediction_")].append(value)
    w.write_npy(MEASURED_COURSES, np.stack(measured))
    save_voxel_timecourses(w, f"encoding/{model}", courses, enc_cfg, subjects)
    hist = rng.integers(0, 40, size=(k, N_LAYERS))
    hist_df = pd.DataFrame(hist, columns=[str(i) for i in range(N_LAYERS)])
    hist_df.insert(0, "atom", np.arange(k))
    w.write_table(f"atoms/{model}/layer_hist.tsv", hist_df)

    rows = []
    for part, sign in (("activated", 1), ("deactivated", -1)):
        for atom in range(k):
            for net in range(1, 8):
                planted = sign * PLANTED[atom].get(net, 0.0) > 0
                rows.append({"atlas": "yeo7", "atom": atom, "network": names[net - 1], "part": part,
                             "overlap_rate": 0.8 if planted else 0.02, "dice": 0.7 if planted else 0.01,
                             "correlation": 0.6 if planted else 0.0, "p": 0.001 if planted else 0.6,
                             "q": 0.01 if planted else 0.8, "associated": planted})
    assoc = pd.DataFrame(rows)
    for part in ("activated", "deactivated"):
        w.write_table(f"networks/{model}/association_{part}.tsv",
                      assoc[assoc.part == part].drop(columns="part"))

    def linked(atom, sign):
        return "; ".join(f"yeo7:{names[n - 1]} (0.80)" for n, v in PLANTED[atom].items() if sign * v > 0)

    w.write_table(f"atoms/{model}/atoms.tsv", pd.DataFrame({
        "atom": np.arange(k), "n_ans": hist.sum(1),
        "main_layers": [",".join(str(i) for i in np.argsort(-h)[:2]) for h in hist],
        "networks_activated": [linked(a, 1) for a in range(k)],
        "networks_deactivated": [linked(a, -1) for a in range(k)],
        "best_score": [0.8 if PLANTED[a] else 0.02 for a in range(k)]}))

    words = pd.DataFrame({"word": ["once", "upon", "a", "time", "there", "was", "a", "pie", "man"],
                          "onset": [1.0, 1.4, 3.1, 3.3, 6.0, 6.2, 6.5, 9.1, 9.4]})
    words["offset"] = words["onset"] + 0.2
    words["measured"] = True
    words["scan_time"] = words["onset"]
    words["volume"] = (words["onset"] // TR).astype(int)
    w.write_table("story/words.tsv", words)
    # word-level responses: atom a responds most to word a and least to word 8 - a
    from napari_brainorg.analyses.top_words import top_words_table

    responses = rng.normal(0.0, 0.1, size=(len(words), k))
    for atom in range(k):
        responses[atom, atom] = 3.0
        responses[8 - atom, atom] = -3.0
    w.write_npy(f"atoms/{model}/word_responses.npy", responses.astype(np.float32))
    w.write_table(f"atoms/{model}/top_words.tsv",
                  top_words_table(responses, words["word"], words["onset"], words["volume"], n_top=5))
    w.write_json("summary.json", {
        "models": [model], "tr": TR, "n_volumes": N_VOLUMES, "simulated": True,
        "atlases": ["yeo7"], "template": None,
        "note": "SIMULATED test fixture: planted atom maps in Yeo-7 networks, not real fMRI",
    })
    return {"mask": mask, "atlas": atlas, "z": z, "coef": coef, "r2": r2, "affine": GRID_AFFINE,
            "atoms": atoms, "bold": bold, "subjects": subjects, "hist": hist, "words": words, "model": model}


@pytest.fixture(scope="session")
def tiny_result(tmp_path_factory):
    """``(path, truth)`` of the tiny SIMULATED result folder (built once per session)."""
    path = tmp_path_factory.mktemp("tiny_result") / "result"
    truth = build_result_folder(path)
    return path, truth
