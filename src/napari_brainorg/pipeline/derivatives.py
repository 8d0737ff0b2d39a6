"""Self-describing maps: per-subject and group NIfTI files with BIDS-derivatives names.

Written from the files of a finished encoding step (``encoding/<model>/arrays.npz`` and
its mask), like the report: a view of the result folder, so a folder merged from
several machines gets the same maps. Each map has a JSON sidecar saying what its values
are, the threshold used downstream, the method and the software version, and a NIfTI
header with its space (sform/qform code), units, an intent code and a description. File
names come from :func:`napari_brainorg.io.results.statmap_name`: each subject's atom z
maps and R2 maps, and the group's atom z maps, one 3D file each (the group's R2 maps are
``encoding/<model>/``'s, not copied).
"""

from __future__ import annotations

import json

import numpy as np

from .. import __version__
from ..io.results import STATMAPS, MapSpace, ResultWriter, find_map, map_sidecar_name, statmap_name


def _subject_labels(config, n: int) -> list[str]:
    bids = config.fmri.bids
    if bids is not None and bids.subjects and len(bids.subjects) == n:
        return [str(s) for s in bids.subjects]
    return [f"{i + 1:02d}" for i in range(n)]


def write_statmaps(writer: ResultWriter, config, model: str, source: str) -> list[str]:
    """Write the BIDS-named maps of one model; return their paths inside the folder.

    Parameters
    ----------
    writer : ResultWriter
        Of the finished result folder.
    config : PipelineConfig
        The run's configuration (method and threshold for the sidecars).
    model : str
        The model's short name (``encoding/<model>/``).
    source : str
        What the user called the model (recorded in the sidecars).
    """
    import nibabel as nib

    out = writer.path
    enc = out / f"encoding/{model}"
    arrays_path, mask_path = enc / "arrays.npz", find_map(out, model, "mask")
    if not arrays_path.exists() or mask_path is None:
        return []  # region time series: tables, no maps
    space = writer.space or MapSpace()
    stamp_rel = f".cache/statmaps_{model}.json"
    st = arrays_path.stat()
    stamp = {"arrays": [st.st_size, st.st_mtime_ns], "version": __version__,
             "threshold": config.networks.threshold, "space": space.as_dict()}
    stamp_file = out / stamp_rel
    previous = {}
    if stamp_file.exists():
        previous = json.loads(stamp_file.read_text())
        if previous.get("stamp") == stamp and all((out / f).exists() for f in previous.get("files", [])):
            return previous["files"]
    # the maps written last time (a subject or an atom this run no longer has would stay)
    for rel in previous.get("files", []):
        for path in (out / rel, out / map_sidecar_name(str(rel))):
            if path.is_file() and "maps" in path.relative_to(out).parts[:1]:
                path.unlink()

    mask_img = nib.load(mask_path)
    mask = np.asarray(mask_img.dataobj) > 0
    arrays = np.load(arrays_path)
    simulated = config.fmri.simulate is not None
    method = {
        "encoding": config.encoding.model_dump(mode="json"),
        "features": {"site": config.features.site, "alignment": config.features.alignment},
        "atoms": {"n_atoms": config.atoms.n_atoms, "alpha": config.atoms.alpha},
        "tr": config.story.tr, "n_volumes": config.story.n_volumes,
    }
    written: list[str] = []

    def save(values: np.ndarray, stat: str, atom: int | None, subject: str | None, how: str) -> None:
        vol = np.zeros(mask.shape, np.float32)
        vol[mask] = values
        img = nib.Nifti1Image(vol, mask_img.affine)
        _, intent, meaning, units = STATMAPS[stat]
        rel = statmap_name(model, stat, atom, subject, space)
        writer.write_nifti(rel, img, intent=intent,
                           description=" ".join([stat, *([f"atom {atom}"] if atom is not None else []), model]))
        sidecar = {
            "Description": meaning,
            "Statistic": stat,
            "Units": units,
            "Threshold": ({"value": config.networks.threshold, "use": "|z| above it defines the atom's map "
                           "for the network association"} if stat == "z" else None),
            "Model": source,
            "Atom": atom,
            "Subject": subject if subject is not None else "group",
            "GroupMethod": how,
            "Simulated": simulated,
            "Method": method,
            "Software": {"Name": "napari-brainorg", "Version": __version__},
            "Sources": [f"bids::encoding/{model}/arrays.npz", f"bids::{mask_path.relative_to(out)}"],
        }
        if space.resolution():
            sidecar["Resolution"] = space.resolution()
        writer.write_json(map_sidecar_name(rel), sidecar)
        written.append(rel)

    # z: (k, n_voxels) for the group, (n_subjects, k, n_voxels) per subject
    subjects_z = arrays["subject_z"] if "subject_z" in arrays.files else None
    if subjects_z is not None:
        labels = _subject_labels(config, subjects_z.shape[0])
        for s, label in enumerate(labels):
            for atom in range(subjects_z.shape[1]):
                save(subjects_z[s, atom], "z", atom, label, "single subject")
        ec = config.encoding
        n_sub = subjects_z.shape[0]
        random = ec.group_effects == "random" or (ec.group_effects == "auto" and n_sub >= ec.min_subjects_random)
        how = ("random effects: one-sample t over subjects, as z" if random
               else "fixed effects: Stouffer's combination of the subjects' z")
        if "z_uncalibrated" in arrays.files:  # the group map shown is the stimulus-calibrated one
            how = ("stimulus-calibrated: the atom's lock with the subjects' mean series against phase-randomised "
                   f"atoms, as z (uncalibrated {how.split(':')[0]}: encoding/{model}/..._desc-{model}AtomMapsZUncalibrated_statmap.nii.gz)")
        for atom in range(arrays["z"].shape[0]):
            save(arrays["z"][atom], "z", atom, None, how)
    for name, stat in (("r2_cv", "r2cv"), ("r2_sparse", "r2sparse")):
        if f"subject_{name}" in arrays.files:
            per = arrays[f"subject_{name}"]
            for s, label in enumerate(_subject_labels(config, per.shape[0])):
                save(per[s], stat, None, label, "single subject")
    writer.write_json(stamp_rel, {"stamp": stamp, "files": written})
    return written
