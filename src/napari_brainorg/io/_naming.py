"""What the maps of a result folder are called and what their headers say, as BIDS derivatives have it.

Every map is named with BIDS entities only (``task``, ``space``, ``res``, ``desc``; ``sub``
for a subject's map) and a suffix: ``mask`` for the analysis mask, ``statmap`` (the
statistical-map suffix of the BIDS Stats Models derivatives proposal, used by FitLins
and nilearn) for every other map. The model, the atom and what the map holds are one
``desc`` label, since BIDS has no entity for them::

    encoding/minilm/task-pieman_space-MNI152NLin6Asym_res-6mm_desc-minilmR2Cv_statmap.nii.gz
    maps/sub-01/sub-01_task-pieman_space-MNI152NLin6Asym_res-6mm_desc-minilmAtom07Z_statmap.nii.gz

Older result folders named the same maps ``encoding/<model>/r2_cv.nii.gz`` and
``maps/sub-01/sub-01_model-minilm_atom-07_stat-z_statmap.nii.gz``; :func:`find_map` and
:func:`find_statmap` find either.

Every written map carries its space in the header (sform and qform code 4, MNI, on an MNI
template's grid, else the input's code, 2 "aligned" when it had none), millimetres (and
seconds for time series) as units, and a description.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

#: TemplateFlow's name of the bundled FSL MNI152 template (FSL's ``MNI152_T1_2mm``)
MNI_SPACE = "MNI152NLin6Asym"
#: NIfTI xform codes
XFORM_SCANNER, XFORM_ALIGNED, XFORM_MNI = 1, 2, 4

#: The maps of ``encoding/<model>/`` by their short name (the stem of the older file name):
#: (the ``desc`` label after the model's, suffix, NIfTI intent, what the values are, units).
GROUP_MAPS: dict[str, tuple[str, str, str, str, str]] = {
    "mask": ("", "mask", "none", "analysis mask: the voxels analysed (1 inside)", "none"),
    "atom_maps": ("AtomMaps", "statmap", "estimate",
                  "group mean encoding coefficient of each atom, one volume per atom (atom 0 first)",
                  "BOLD signal (as given, high-passed) per unit of the atom's unit-norm time course"),
    "atom_maps_z": ("AtomMapsZ", "statmap", "z score",
                    "group z of each atom, calibrated against phase-randomised atoms (each voxel's lock with "
                    "the atom's unique part against the same lock for surrogates), one volume per atom",
                    "z"),
    "atom_maps_z_uncalibrated": ("AtomMapsZUncalibrated", "statmap", "z score",
                                 "group z of each atom's coefficient (subjects combined, not calibrated), one "
                                 "volume per atom", "z"),
    "r2_cv": ("R2Cv", "statmap", "estimate",
              "held-out R2 of the cross-validated ridge on all atoms, mean over test folds and subjects",
              "fraction of variance explained"),
    "r_cv": ("RCv", "statmap", "estimate",
             "held-out Pearson r of the cross-validated ridge on all atoms, mean over subjects",
             "Pearson correlation"),
    "r2_sparse": ("R2Sparse", "statmap", "estimate",
                  "in-sample R2 of the paper's sparse (lasso) fit on all atoms, mean over subjects",
                  "fraction of variance explained"),
    "r2_sparse_null_p95": ("R2SparseNullP95", "statmap", "estimate",
                           "95th percentile of the in-sample sparse R2 under the shifted-atoms null "
                           "(the chance level of r2_sparse)", "fraction of variance explained"),
    "q_cv": ("QCv", "statmap", "estimate", "FDR q of the held-out R2 (subjects' permutation p combined)",
             "probability"),
    "noise_ceiling": ("NoiseCeiling", "statmap", "estimate",
                      "split-half noise ceiling of one subject's r (Spearman-Brown corrected)",
                      "Pearson correlation"),
    "ar1": ("Ar1", "statmap", "estimate", "AR(1) coefficient of the GLS residuals, mean over subjects",
            "autocorrelation at lag 1"),
    "r2_loso": ("R2Loso", "statmap", "estimate",
                "R2 of the ridge trained on the other stories, scored on each held-out story (mean)",
                "fraction of variance explained"),
    "r_loso": ("RLoso", "statmap", "estimate",
               "r of the ridge trained on the other stories, scored on each held-out story (mean)",
               "Pearson correlation"),
    "r2_loso_stories": ("R2LosoStories", "statmap", "estimate",
                        "R2 of the ridge trained on the other stories, one volume per held-out story",
                        "fraction of variance explained"),
    "r_cv_nuisance_only": ("RCvNuisanceOnly", "statmap", "estimate",
                           "held-out r of the ridge on the nuisance regressors alone, mean over subjects",
                           "Pearson correlation"),
    "delta_r_beyond_nuisance": ("DeltaRBeyondNuisance", "statmap", "estimate",
                                "held-out r of atoms with nuisance regressors minus nuisance alone "
                                "(same folds), mean over subjects", "Pearson correlation difference"),
    "delta_r2_beyond_nuisance": ("DeltaR2BeyondNuisance", "statmap", "estimate",
                                 "held-out R2 of atoms with nuisance regressors minus nuisance alone, "
                                 "mean over subjects", "fraction of variance explained"),
    "delta_r_beyond_nuisance_t": ("DeltaRBeyondNuisanceT", "statmap", "t test",
                                  "one-sample t over subjects of delta_r_beyond_nuisance", "t"),
    "baseline_r2_layers": ("R2Layers", "statmap", "estimate",
                           "held-out R2 of each layer's ANs (the layer-wise baseline), one volume per layer",
                           "fraction of variance explained"),
}

#: ``stat`` of :func:`statmap_name` -> (``desc`` part, intent, what the values are, units)
STATMAPS = {
    "z": ("Z", "z score", "z statistic of the atom's coefficient in the voxel's fit on all atoms "
                          "(GLS with AR(1) noise or OLS: encoding.noise_model in the sidecar's Method)", "z"),
    "r2cv": ("R2Cv", "estimate", "held-out R2 of the cross-validated ridge on all atoms (mean over test folds)",
             "fraction of variance explained"),
    "r2sparse": ("R2Sparse", "estimate", "in-sample R2 of the paper's sparse (lasso) fit on all atoms",
                 "fraction of variance explained"),
}
#: the group maps of ``encoding/<model>/`` that :func:`statmap_name`'s group R2 maps are
STATMAP_GROUP = {"r2cv": "r2_cv", "r2sparse": "r2_sparse"}


def bids_label(text: str) -> str:
    """A BIDS label from any text: its letters and digits (``"minilm_untrained"`` -> ``"minilmuntrained"``)."""
    return "".join(ch for ch in str(text) if ch.isalnum())


#: the older name of :func:`bids_label` (``model-<label>`` of the first BIDS map names)
statmap_model_label = bids_label


@dataclass(frozen=True)
class MapSpace:
    """Where a run's maps lie: the entities every map name starts with and the header's code.

    Attributes
    ----------
    task : str or None
        ``task-`` label: the BIDS task, else the story (or the stories, joined).
    space : str or None
        ``space-`` label: the input's own (a BIDS ``space-`` entity), ``MNI152NLin6Asym``
        on the bundled template's grid, None when unknown (native space).
    res : str or None
        ``res-`` label: the voxel size (``"2mm"``, ``"2p5mm"``, ``"3x3x4mm"``).
    xform_code : int
        sform and qform code of every map: 4 (MNI) or the input's own (2 when it had none).
    voxel_mm : tuple of float
    """

    task: str | None = None
    space: str | None = None
    res: str | None = None
    xform_code: int = XFORM_ALIGNED
    voxel_mm: tuple[float, ...] = ()

    def entities(self) -> list[str]:
        """``["task-pieman", "space-MNI152NLin6Asym", "res-6mm"]`` (those known)."""
        return [f"{k}-{v}" for k, v in (("task", self.task), ("space", self.space), ("res", self.res)) if v]

    def resolution(self) -> str | None:
        """What ``res-`` means (BIDS asks for a ``Resolution`` field wherever ``res-`` is used)."""
        if not self.res:
            return None
        size = " x ".join(f"{v:g}" for v in self.voxel_mm)
        grid = f" on the {self.space} template" if self.space else ""
        return f"{size} mm voxels{grid}"

    def as_dict(self) -> dict:
        return {**asdict(self), "voxel_mm": list(self.voxel_mm)}

    @classmethod
    def from_dict(cls, d: dict | None) -> MapSpace:
        if not d:
            return cls()
        return cls(task=d.get("task"), space=d.get("space"), res=d.get("res"),
                   xform_code=int(d.get("xform_code", XFORM_ALIGNED)), voxel_mm=tuple(d.get("voxel_mm", ())))


def res_label(voxel_mm) -> str:
    """The ``res-`` label of a voxel size in mm: ``2mm``, ``2p5mm``, ``3x3x4mm``."""
    sizes = [f"{float(v):g}".replace(".", "p") for v in voxel_mm]
    return (sizes[0] if len(set(sizes)) == 1 else "x".join(sizes)) + "mm"


def name_space(path: str | os.PathLike) -> str | None:
    """The ``space-`` entity of a BIDS file name, or None."""
    for part in Path(path).name.split(".")[0].split("_"):
        if part.startswith("space-"):
            return part[len("space-"):]
    return None


def map_space(task: str | None, mask_img, *, template_grid: bool, sources=()) -> MapSpace:
    """The space of the maps computed on ``mask_img``'s grid.

    Parameters
    ----------
    task : str or None
        The ``task-`` label (made a BIDS label here).
    mask_img : nibabel.Nifti1Image
        The analysis mask on the data grid.
    template_grid : bool
        The grid is the bundled MNI152NLin6Asym template's (the ``mni`` mask, possibly
        resampled).
    sources : sequence of path
        The input images: a ``space-`` entity in their name names the space, and their
        header's code is kept when it is not MNI.
    """
    import nibabel as nib

    space = next((s for s in (name_space(p) for p in sources) if s), None)
    if space is None and template_grid:
        space = MNI_SPACE
    code = 0
    for src in sources:
        try:
            header = nib.load(str(src)).header
        except Exception:  # a table or a missing file: its code is unknown
            continue
        code = int(header["sform_code"]) or int(header["qform_code"])
        break
    if space is not None and space.startswith("MNI") or code == XFORM_MNI:
        code = XFORM_MNI
    zooms = tuple(float(z) for z in mask_img.header.get_zooms()[:3])
    return MapSpace(task=bids_label(task) if task else None, space=space, res=res_label(zooms),
                    xform_code=code or XFORM_ALIGNED, voxel_mm=zooms)


def group_map_name(model: str, name: str, space: MapSpace) -> str:
    """Path (inside a result folder) of one of ``encoding/<model>/``'s maps (:data:`GROUP_MAPS`)."""
    what, suffix = GROUP_MAPS[name][:2]
    entities = [*space.entities(), f"desc-{bids_label(model)}{what}"]
    return f"encoding/{model}/{'_'.join(entities)}_{suffix}.nii.gz"


def find_map(folder: str | os.PathLike, model: str, name: str) -> Path | None:
    """The file of ``encoding/<model>/``'s map ``name`` in a result folder (BIDS name or the
    older ``<name>.nii.gz``), or None."""
    what, suffix = GROUP_MAPS[name][:2]
    enc = Path(folder) / "encoding" / model
    found = sorted(enc.glob(f"*desc-{bids_label(model)}{what}_{suffix}.nii.gz"))
    if found:
        return found[0]
    old = enc / f"{name}.nii.gz"
    return old if old.exists() else None


def statmap_name(model: str, stat: str, atom: int | None = None, subject: str | None = None,
                 space: MapSpace | None = None) -> str:
    """Path (inside a result folder) of a BIDS-derivatives statistical map.

    ``maps/sub-01/sub-01_task-pieman_space-MNI152NLin6Asym_res-6mm_desc-minilmAtom07Z_statmap.nii.gz``
    for a subject, the same without ``sub-01`` under ``maps/group/`` for the group. The
    group's R2 maps are ``encoding/<model>/``'s (:data:`STATMAP_GROUP`).
    """
    if stat not in STATMAPS:
        from ..errors import check_choice

        check_choice("stat", stat, tuple(STATMAPS))
    if subject is None and atom is None and stat in STATMAP_GROUP:
        return group_map_name(model, STATMAP_GROUP[stat], space or MapSpace())
    what = (f"Atom{int(atom):02d}" if atom is not None else "") + STATMAPS[stat][0]
    entities = [*(space or MapSpace()).entities(), f"desc-{bids_label(model)}{what}"]
    if subject is None:
        return f"maps/group/{'_'.join(entities)}_statmap.nii.gz"
    return f"maps/sub-{subject}/sub-{subject}_{'_'.join(entities)}_statmap.nii.gz"


def _old_statmap_name(model: str, stat: str, atom: int | None, subject: str | None) -> str:
    entities = [f"model-{bids_label(model)}"]
    if atom is not None:
        entities.append(f"atom-{int(atom):02d}")
    entities.append(f"stat-{stat}")
    if subject is None:
        return f"maps/group/{'_'.join(entities)}_statmap.nii.gz"
    return f"maps/sub-{subject}/sub-{subject}_{'_'.join(entities)}_statmap.nii.gz"


def find_statmap(folder: str | os.PathLike, model: str, stat: str, atom: int | None = None,
                 subject: str | None = None) -> Path | None:
    """The file of a statistical map (:func:`statmap_name`) in a result folder, BIDS name or older, or None."""
    folder = Path(folder)
    if subject is None and atom is None and stat in STATMAP_GROUP:
        found = find_map(folder, model, STATMAP_GROUP[stat])
        if found is not None:
            return found
    else:
        rel = Path(statmap_name(model, stat, atom, subject))
        # the name without the run's task/space/res: any such file with this desc
        desc = next(p for p in rel.name.split("_") if p.startswith("desc-"))
        found = sorted((folder / rel.parent).glob(f"*_{desc}_statmap.nii.gz"))
        if subject is not None:
            found = [p for p in found if p.name.startswith(f"sub-{subject}_")]
        if found:
            return found[0]
    old = folder / _old_statmap_name(model, stat, atom, subject)
    return old if old.exists() else None


def map_sidecar_name(rel: str) -> str:
    """The JSON sidecar of a map: ``...nii.gz`` -> ``...json``."""
    return rel[: -len(".nii.gz")] + ".json" if rel.endswith(".nii.gz") else str(Path(rel).with_suffix(".json"))


def set_map_header(img, *, code: int | None = None, description: str | None = None, intent: str | None = None,
                   time_series: bool = False):
    """Say in a NIfTI image's header where it lies, in what units and what it holds (in place).

    Parameters
    ----------
    img : nibabel.Nifti1Image
    code : int, optional
        sform and qform code (4: MNI; 2: aligned to another image; 1: scanner). None keeps
        the image's own, 2 where it has none.
    description : str, optional
        The ``descrip`` field (79 ASCII characters at most).
    intent : str, optional
        NIfTI intent (``"z score"``, ``"estimate"``...).
    time_series : bool
        A 4D time series: the fourth unit is seconds (else a 4D stack of maps has none).
    """
    header = img.header
    if code is None:
        code = int(header["sform_code"]) or int(header["qform_code"]) or XFORM_ALIGNED
    affine = img.affine
    img.set_sform(affine, code=int(code))
    img.set_qform(affine, code=int(code))
    header.set_xyzt_units("mm", "sec" if time_series else "unknown")
    if intent is not None:
        header.set_intent(intent, (), name="")
    if description is not None:
        header["descrip"] = description[:79].encode("ascii", "replace")
    return img


def set_nifti_meaning(img, intent: str, description: str):
    """Set the intent code and the description field of a NIfTI image's header (in place)."""
    img.header.set_intent(intent, (), name="")
    img.header["descrip"] = description[:79].encode("ascii", "replace")
    return img
