"""Everything about a configuration that can be checked before any model runs.

:func:`validate_config` reads the story, the headers of the fMRI images and the mask,
checks the atlases, the output folder and the options against each other and the data,
and raises the first problem as a one-line error naming the option or file, the value
and what is allowed. The pipeline calls it before it touches the output folder, so a
bad input never costs a feature extraction and never changes an earlier result.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import AtlasError, ConfigError, FMRIInputError, StoryTimingWarning
from ..io.fmri import _load_img
from .config import PipelineConfig

#: warn when more than this fraction of the story's words fall outside the scan
OUTSIDE_WARN_FRACTION = 0.10


def validate_config(config: PipelineConfig) -> dict:
    """Check ``config`` against itself and the data; return what was learned.

    Returns
    -------
    facts : dict
        ``n_words``, ``n_words_in_scan``.

    Raises
    ------
    ConfigError, StoryFormatError, FMRIInputError, AtlasError, FileNotFoundError, OSError
        The first problem found, in one line.

    Warns
    -----
    StoryTimingWarning
        More than 10 % of the words fall outside the scan.
    """
    check_output_writable(config.out)
    facts = _check_story(config)
    _check_options(config)
    _check_fmri(config)
    _check_atlases(config)
    _check_models(config)
    return facts


def check_output_writable(out: str | os.PathLike) -> None:
    """``out`` can be created and written: no file on its path, a writable parent."""
    from ..io.results import check_output_folder

    path = Path(out)
    check_output_folder(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(
            f"'out' {str(path)!r} cannot be created: {str(probe)!r} is a file, not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(
            f"'out' {str(path)!r} is not writable: no write permission in {str(probe)!r}; "
            "choose a folder you can write to.")


def _check_story(config: PipelineConfig) -> dict:
    facts = {"n_words": 0, "n_words_in_scan": 0}
    for i, cfg in enumerate(config.story_list):
        key = f"stories[{i}]" if config.stories else "story"
        one = _check_one_story(cfg, key)
        facts = {k: facts[k] + one[k] for k in facts}
    return facts


def _check_one_story(cfg, key: str = "story") -> dict:
    from ..io.stimuli import read_story, read_story_onset

    onset = read_story_onset(cfg.events) if cfg.events else cfg.onset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the story step reads it again and warns then
        words = read_story(cfg.path, onset=onset)
    scan_end = cfg.n_volumes * cfg.tr
    inside = (words.onsets >= 0) & (words.onsets < scan_end)
    n_in = int(inside.sum())
    where = f"{key}.path {str(cfg.path)!r}"
    if n_in == 0:
        raise ConfigError(
            f"{where}: none of its {len(words)} words falls in the scan (onsets "
            f"{words.onsets.min():.1f}-{words.onsets.max():.1f} s with onset {onset} s; the scan lasts "
            f"0-{scan_end:.1f} s = {key}.n_volumes {cfg.n_volumes} x {key}.tr {cfg.tr}); check "
            f"{key}.onset / {key}.events, {key}.tr and {key}.n_volumes.")
    outside = 1 - n_in / len(words)
    if outside > OUTSIDE_WARN_FRACTION:
        warnings.warn(
            f"{where}: {len(words) - n_in} of {len(words)} words ({100 * outside:.0f} %) fall outside the scan "
            f"(0-{scan_end:.1f} s); they are not modelled. Check {key}.onset, {key}.tr and {key}.n_volumes.",
            StoryTimingWarning, stacklevel=3)
    return {"n_words": len(words), "n_words_in_scan": n_in}


def _check_options(config: PipelineConfig) -> None:
    from ..encoding.ridge import _folds_of, contiguous_folds

    if config.multi_story and config.encoding.baseline:
        raise ConfigError("encoding.baseline (the layer-wise population baseline) runs on one story; with "
                          f"{len(config.stories)} stories set encoding.baseline: false.")
    n = sum(s.n_volumes for s in config.story_list)
    k = config.atoms.n_atoms
    if k > n:
        what = "story.n_volumes" if not config.stories else "the stories' volumes in all"
        raise ConfigError(f"atoms.n_atoms must not exceed {what} ({n}); {k} was provided.")
    ec = config.encoding
    if "ridge" in ec.models:
        try:
            folds = contiguous_folds(n, ec.n_folds, ec.gap)
            if len(ec.alphas) > 1:  # the inner CV that picks each voxel's alpha
                for train, _ in folds:
                    _folds_of(train, 4, ec.gap)
        except ConfigError as exc:
            raise ConfigError(
                f"encoding.n_folds {ec.n_folds} and encoding.gap {ec.gap} do not fit story.n_volumes {n}: "
                f"{exc}") from None
    if config.multi_story and ec.leave_one_story_out and "ridge" in ec.models and len(ec.alphas) > 1:
        for story in config.stories:
            try:  # the inner CV that picks each voxel's alpha runs on the other stories
                _folds_of(np.arange(n - story.n_volumes), 4, ec.gap)
            except ConfigError as exc:
                raise ConfigError(
                    f"encoding.leave_one_story_out: holding out story {story.label!r} leaves {n - story.n_volumes} "
                    f"volumes for training, too few for the inner CV with encoding.gap {ec.gap}: {exc}") from None
    if any(d < 0 for d in ec.delays):
        raise ConfigError(f"encoding.delays must be >= 0 volumes; {list(ec.delays)} was provided.")
    if any(not (a > 0 and math.isfinite(a)) for a in ec.alphas):
        raise ConfigError(f"encoding.alphas must be positive finite numbers; {list(ec.alphas)} was provided.")
    if ec.highpass_cutoff is not None and not ec.highpass_cutoff > 0:
        raise ConfigError(
            f"encoding.highpass_cutoff must be a positive number of seconds or null; {ec.highpass_cutoff!r} was provided.")
    sim = config.fmri.simulate
    if sim is not None:
        from ..datasets import BUNDLED_ATLASES

        if sim.atlas not in BUNDLED_ATLASES:
            from ..errors import check_choice

            try:
                check_choice("fmri.simulate.atlas", sim.atlas, BUNDLED_ATLASES)
            except ConfigError as exc:
                raise ConfigError(str(exc)) from None
        for name, links in (("links", sim.links), ("negative_links", sim.negative_links)):
            bad = [a for a in (links or {}) if not 0 <= int(a) < k]
            if bad:
                raise ConfigError(
                    f"fmri.simulate.{name} names sources {bad}; sources are numbered like the atoms, "
                    f"0..{k - 1} (atoms.n_atoms {k}).")


def story_runs(config: PipelineConfig, key: str) -> dict[str, list[str]]:
    """``fmri.images`` or ``fmri.regions`` as story name -> runs (one per subject)."""
    runs = getattr(config.fmri, key)
    if isinstance(runs, dict):
        return {s.label: list(runs[s.label]) for s in config.story_list}
    return {config.story.label: list(runs)} if runs else {}


def _check_fmri(config: PipelineConfig) -> None:
    fc = config.fmri
    images = story_runs(config, "images")
    for story in config.story_list:
        n = story.n_volumes
        what = "story.n_volumes" if not config.stories else f"story {story.label!r} has n_volumes"
        for i, image in enumerate(images.get(story.label, [])):
            key = f"fmri.images[{i}]" if not isinstance(fc.images, dict) else f"fmri.images.{story.label}[{i}]"
            img = _load_img(image, key)
            shape = img.shape
            if len(shape) != 4:
                raise FMRIInputError(
                    f"{key} {str(image)!r} has shape {shape}; expected a 4D run (x, y, z, {n}).")
            if shape[3] != n:
                raise FMRIInputError(f"{key} {str(image)!r} has {shape[3]} volumes; {what} {n}.")
    regions = story_runs(config, "regions")
    first_images = next(iter(images.values()), [])
    n_inputs = len(first_images) or len(next(iter(regions.values()), []))
    if fc.subjects is not None and n_inputs:
        if len(fc.subjects) != n_inputs:
            raise FMRIInputError(
                f"fmri.subjects has {len(fc.subjects)} names for {n_inputs} runs; give one name per run.")
        if len(set(fc.subjects)) != len(fc.subjects):
            raise FMRIInputError(f"fmri.subjects must be unique; {list(fc.subjects)} was provided.")
    for name, tables in regions.items():
        for i, table in enumerate(tables):
            if not Path(table).is_file():
                key = f"fmri.regions[{i}]" if not isinstance(fc.regions, dict) else f"fmri.regions.{name}[{i}]"
                raise FileNotFoundError(f"{key} {str(table)!r} does not exist.")
    if fc.mask != "mni" and (fc.images or fc.bids is not None):
        mask = _load_img(fc.mask, "fmri.mask")
        if len(mask.shape) not in (3, 4) or (len(mask.shape) == 4 and mask.shape[3] != 1):
            raise FMRIInputError(f"fmri.mask {str(fc.mask)!r} has shape {mask.shape}; expected a 3D mask.")
        try:
            data = np.asarray(mask.dataobj)
        except Exception as exc:
            raise FMRIInputError(f"fmri.mask {str(fc.mask)!r} cannot be read: {type(exc).__name__}: {exc}") from None
        if not np.any(np.nan_to_num(data) != 0):
            raise FMRIInputError(f"fmri.mask {str(fc.mask)!r} has no non-zero voxel; expected a brain mask.")
        if first_images:
            _check_overlap(fc.mask, mask, data, first_images[0])
    if fc.bids is not None and not Path(fc.bids.root).is_dir():
        raise FileNotFoundError(f"fmri.bids.root {str(fc.bids.root)!r} does not exist.")


def _check_overlap(mask_path: str, mask, mask_data: np.ndarray, image_path: str) -> None:
    """The mask's voxels must fall inside the first image's field of view."""
    import nibabel as nib

    img = nib.load(str(image_path))
    ijk = np.argwhere(np.nan_to_num(mask_data.reshape(mask_data.shape[:3])) != 0)
    if len(ijk) > 5000:
        ijk = ijk[:: len(ijk) // 5000]
    world = nib.affines.apply_affine(mask.affine, ijk)
    vox = nib.affines.apply_affine(np.linalg.inv(img.affine), world)
    inside = np.all((vox > -0.5) & (vox < np.asarray(img.shape[:3]) - 0.5), axis=1)
    if not inside.any():
        raise FMRIInputError(
            f"fmri.mask {str(mask_path)!r} does not overlap the field of view of {str(image_path)!r}; "
            "expected a mask on (or inside) the images' grid.")


def _check_atlases(config: PipelineConfig) -> None:
    from ..datasets import BUNDLED_ATLASES
    from ..errors import did_you_mean

    for i, atlas in enumerate(config.networks.atlases):
        if atlas in BUNDLED_ATLASES:
            continue
        path = Path(atlas).expanduser()
        if not path.is_file():
            looks_like_file = path.suffix.lower() in (".nii", ".gz", ".img", ".hdr") or os.sep in str(atlas)
            if looks_like_file:
                raise FileNotFoundError(
                    f"networks.atlases[{i}] {str(atlas)!r} does not exist; give an existing NIfTI path or one "
                    f"of {list(BUNDLED_ATLASES)}.")
            raise AtlasError(
                f"networks.atlases[{i}] must be one of {list(BUNDLED_ATLASES)} or a NIfTI path; {str(atlas)!r} was "
                f"provided.{did_you_mean(str(atlas), BUNDLED_ATLASES)}")
        _load_img(str(path), f"networks.atlases[{i}]")


def _check_models(config: PipelineConfig) -> None:
    """Each model resolves (bundled name, complete folder, readable GGUF header, hub id)."""
    from ..features.models import resolve_model

    for i, model in enumerate(config.features.models):
        try:
            resolve_model(model)
        except (OSError, ValueError) as exc:
            raise type(exc)(f"features.models[{i}]: {exc}") from None
