"""The real data shipped inside the package: stories, network templates, MNI152.

Everything here is a path to a file under ``napari_brainorg/data`` (see its
``README.md`` for origins and licences); nothing is downloaded.

Examples
--------
>>> from napari_brainorg import datasets
>>> "pieman" in datasets.list_stories()
True
>>> datasets.atlas_labels("smith10")[2]
'lateral visual'
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import ConfigError, did_you_mean

__all__ = [
    "BUNDLED_ATLASES",
    "atlas_kind",
    "atlas_labels",
    "atlas_path",
    "data_dir",
    "list_stories",
    "mni_mask_path",
    "mni_template_path",
    "narratives_metadata_dir",
    "story_events_path",
    "story_path",
]

_NEUROPARC = "atlases/neuroparc"
_SMITH = "atlases/smith09_rsn10"

SMITH10_NAMES = (
    "medial visual",
    "occipital pole visual",
    "lateral visual",
    "default mode",
    "cerebellum",
    "sensorimotor",
    "auditory",
    "executive control",
    "right frontoparietal",
    "left frontoparietal",
)

YEO7_NAMES = (
    "Visual",
    "Somatomotor",
    "Dorsal attention",
    "Ventral attention",
    "Limbic",
    "Frontoparietal",
    "Default",
)

# Yeo-17 labels 1..17 of the volume. neuroparc's label file names them wrongly, so these
# follow the volume: each name's 7-network family is the Yeo-7 network it overlaps most
# (checked in the tests), the letter follows CBIG's naming where the position agrees
# with it, and the limbic pair is named by place (label 9 temporal pole, 10 orbitofrontal).
YEO17_NAMES = (
    "Visual central",
    "Visual peripheral",
    "Somatomotor A",
    "Somatomotor B",
    "Dorsal attention A",
    "Dorsal attention B",
    "Ventral attention A",
    "Ventral attention B",
    "Limbic temporal pole",
    "Limbic orbitofrontal",
    "Frontoparietal control C",
    "Frontoparietal control A",
    "Frontoparietal control B",
    "Temporal parietal",
    "Default C",
    "Default A",
    "Default B",
)

# name -> (file relative to data/, kind, labels). 'labels': a 3D integer image whose
# value i (1-based) is network labels[i - 1], 0 outside; 'maps': a 4D image whose
# volume i is network labels[i].
_ATLASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "smith10": (f"{_SMITH}/PNAS_Smith09_rsn10_thr23.nii.gz", "maps", SMITH10_NAMES),
    "smith10_thr3": (f"{_SMITH}/PNAS_Smith09_rsn10_thr3.nii.gz", "maps", SMITH10_NAMES),
    "yeo7": (f"{_NEUROPARC}/Yeo-7_space-MNI152NLin6_res-2x2x2.nii.gz", "labels", YEO7_NAMES),
    "yeo7_liberal": (
        f"{_NEUROPARC}/Yeo-7-liberal_space-MNI152NLin6_res-2x2x2.nii.gz",
        "labels",
        YEO7_NAMES,
    ),
    "yeo17": (f"{_NEUROPARC}/Yeo-17_space-MNI152NLin6_res-2x2x2.nii.gz", "labels", YEO17_NAMES),
    "yeo17_liberal": (
        f"{_NEUROPARC}/Yeo-17-liberal_space-MNI152NLin6_res-2x2x2.nii.gz",
        "labels",
        YEO17_NAMES,
    ),
    "schaefer400_yeo7": (
        f"{_NEUROPARC}/Schaefer400-7Networks_space-MNI152NLin6_res-2x2x2.nii.gz",
        "labels",
        YEO7_NAMES,
    ),
}

#: Names accepted by :func:`atlas_path`, :func:`atlas_labels` and :func:`atlas_kind`.
BUNDLED_ATLASES: tuple[str, ...] = tuple(_ATLASES)

# Where each story's audio starts in its sample events.tsv (only pieman ships one).
_EVENTS = {"pieman": "narratives_metadata/sub-001_task-pieman_run-1_events.tsv"}


def data_dir() -> Path:
    """Return the folder of the bundled data (``napari_brainorg/data``)."""
    root = files("napari_brainorg").joinpath("data")
    path = Path(str(root))
    if not path.is_dir():  # pragma: no cover - only for a broken or zipped install
        raise FileNotFoundError(
            f"The bundled data folder {path} is missing; reinstall napari-brainorg "
            "from a wheel or a source checkout (it is package data)."
        )
    return path


def _file(relative: str) -> Path:
    path = data_dir() / relative
    if not path.is_file():  # pragma: no cover - only for a broken install
        raise FileNotFoundError(f"Bundled file {relative!r} is missing from {data_dir()}.")
    return path


def list_stories() -> list[str]:
    """Names of the bundled Narratives stories (sorted), e.g. ``'pieman'``."""
    stories = data_dir() / "stories"
    return sorted(p.name for p in stories.iterdir() if (p / "align.csv").is_file())


def _check_story(name: str) -> str:
    allowed = list_stories()
    if name not in allowed:
        raise ConfigError(
            f"'story' must be one of the bundled stories {allowed} or a path to a story "
            f"file; {name!r} was provided." + did_you_mean(name, allowed)
        )
    return name


def story_path(name: str, kind: str = "align.csv") -> Path:
    """Path of a bundled story's word timings.

    Parameters
    ----------
    name : str
        One of :func:`list_stories`.
    kind : {"align.csv", "align.json", "transcript.csv", "tr_tokens.csv"}
        Which file of the story. Every story has ``align.csv`` (Narratives, Gentle);
        ``notthefallintact`` also has Gentle's ``align.json``, ``black`` a
        ``word,onset,offset`` ``transcript.csv``, ``pieman`` its ``tr_tokens.csv``.

    Raises
    ------
    ConfigError
        For a name that is not bundled, or a file the story does not have.
    """
    _check_story(name)
    folder = data_dir() / "stories" / name
    available = sorted(p.name for p in folder.iterdir() if p.is_file())
    if kind not in available:
        raise ConfigError(
            f"'kind' must be one of {available} for the bundled story {name!r}; "
            f"{kind!r} was provided." + did_you_mean(kind, available)
        )
    return folder / kind


def story_events_path(name: str) -> Path:
    """Path of a sample BIDS ``events.tsv`` giving where the story starts in a scan.

    Only ``pieman`` ships one (``sub-001_task-pieman_run-1_events.tsv`` of ds002345).
    """
    _check_story(name)
    if name not in _EVENTS:
        raise ConfigError(
            f"No sample events.tsv is bundled for the story {name!r}; bundled for "
            f"{sorted(_EVENTS)}. Give the onset in seconds or your own events.tsv."
        )
    return _file(_EVENTS[name])


def narratives_metadata_dir() -> Path:
    """Folder with ds002345's ``participants.tsv``, ``dataset_description.json``, ..."""
    return data_dir() / "narratives_metadata"


def mni_template_path() -> Path:
    """FSL MNI152 T1 2 mm brain (91×109×91, LAS), the grid of the bundled atlases."""
    return _file("mni152/MNI152_T1_2mm_brain.nii.gz")


def mni_mask_path() -> Path:
    """Brain mask of :func:`mni_template_path` on the same grid."""
    return _file("mni152/MNI152_T1_2mm_brain_mask.nii.gz")


def _check_atlas(name: str) -> tuple[str, str, tuple[str, ...]]:
    if name not in _ATLASES:
        allowed = list(BUNDLED_ATLASES)
        raise ConfigError(
            f"'atlas' must be one of {allowed} or a NIfTI path; {name!r} was provided."
            + did_you_mean(name, allowed)
        )
    return _ATLASES[name]


def atlas_path(name: str) -> Path:
    """Path of a bundled functional-brain-network template (NIfTI, MNI152 2 mm, LAS).

    Parameters
    ----------
    name : str
        One of :data:`BUNDLED_ATLASES`:

        - ``'smith10'``: Smith et al. 2009 RSN10 ICA maps thresholded at z > 2.3 (4D,
          10 volumes); ``'smith10_thr3'`` the same at z > 3.
        - ``'yeo7'``, ``'yeo17'`` (and ``*_liberal``): Yeo et al. 2011 parcellations.
        - ``'schaefer400_yeo7'``: the Schaefer et al. 2018 400 parcels, each labelled with
          its Yeo-7 network.
    """
    return _file(_check_atlas(name)[0])


def atlas_kind(name: str) -> str:
    """``'labels'`` (3D integer image, value i is network i) or ``'maps'`` (4D stack)."""
    return _check_atlas(name)[1]


def atlas_labels(name: str) -> list[str]:
    """Network names of a bundled atlas.

    For a ``'labels'`` atlas, entry ``i`` names the voxels of value ``i + 1`` (0 is
    outside every network); for a ``'maps'`` atlas, entry ``i`` names volume ``i``.
    """
    return list(_check_atlas(name)[2])
