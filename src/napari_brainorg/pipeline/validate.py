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

from ..errors import AtlasError, ConfigError, ConfigWarning, FMRIInputError, StoryTimingWarning
from ..io.fmri import _load_img
from .config import PipelineConfig

#: warn when more than this fraction of the story's words fall outside the scan
OUTSIDE_WARN_FRACTION = 0.10
#: fewer words in the scan than this is an error: no story to model
MIN_WORDS_IN_SCAN = 10
#: a test block of fewer volumes is warned about (its r rests on too few points)
MIN_TEST_VOLUMES = 10


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

    check_output_folder(Path(out))
    check_writable_folder(out, "'out'")


def check_writable_folder(out: str | os.PathLike, option: str) -> None:
    """The folder ``out`` exists and can be written, or can be created: raise before any work.

    ``option`` names it in the message (``"'out'"``, ``"--out"``).
    """
    path = Path(out)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(
            f"{option} {str(path)!r} cannot be created: {str(probe)!r} is a file, not a folder.")
    why = None if os.access(probe, os.W_OK | os.X_OK) else "no write permission"
    if why is None:
        import tempfile

        try:  # permissions say yes to root even where the file system says no (read-only, /sys)
            with tempfile.TemporaryFile(dir=probe, prefix=".brainorg-probe-"):
                pass
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
    if why is not None:
        raise PermissionError(
            f"{option} {str(path)!r} is not writable: {why.lower()} in {str(probe)!r}; "
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
    names = {"path": f"{key}.path", "onset": f"{key}.onset / {key}.events", "tr": f"{key}.tr",
             "n_volumes": f"{key}.n_volumes"}
    n_in = check_story_timing(words, n_volumes=cfg.n_volumes, tr=cfg.tr, onset=onset, names=names,
                              where=f"{key}.path {str(cfg.path)!r}", stacklevel=4)
    return {"n_words": len(words), "n_words_in_scan": n_in}


def check_story_timing(words, *, n_volumes: int, tr: float, onset: float, names: dict[str, str], where: str,
                       stacklevel: int = 2) -> int:
    """The story's words against the scan they were heard in, before any model reads them.

    Parameters
    ----------
    words : WordEvents
        The story, its onset applied.
    n_volumes, tr, onset
        The scan and where the story starts in it (s).
    names : dict
        How the message names ``path``, ``onset``, ``tr`` and ``n_volumes`` (configuration
        keys or command-line options).
    where : str
        How the message names the story (its option and file).

    Returns
    -------
    int
        Words that fall in the scan.

    Raises
    ------
    ConfigError
        No word in the scan; fewer than :data:`MIN_WORDS_IN_SCAN` words in it; most words
        without a letter or digit (emoji, symbols: every one an unknown token).

    Warns
    -----
    StoryTimingWarning
        More than 10 % of the words outside the scan (how many before it starts and after
        it ends); more than half of the scan after the last word or before the first.
    """
    scan_end = n_volumes * tr
    onsets = np.asarray(words.onsets)
    inside = (onsets >= 0) & (onsets < scan_end)
    n_in = int(inside.sum())
    scan = f"0-{scan_end:.1f} s = {names['n_volumes']} {n_volumes} x {names['tr']} {tr:g}"
    if n_in == 0:
        raise ConfigError(
            f"{where}: none of its {len(words)} words falls in the scan (onsets "
            f"{onsets.min():.1f}-{onsets.max():.1f} s with onset {onset:g} s; the scan lasts "
            f"{scan}); check {names['onset']}, {names['tr']} and {names['n_volumes']}.")
    if n_in < MIN_WORDS_IN_SCAN:
        raise ConfigError(
            f"{where}: only {n_in} word(s) fall in the scan ({scan}); expected a story of at least "
            f"{MIN_WORDS_IN_SCAN} words: the responses of so few words are a few HRFs, not a story.")
    _check_story_text(words, where)
    before, after = int((onsets < 0).sum()), int((onsets >= scan_end).sum())
    outside = (before + after) / len(words)
    if outside > OUTSIDE_WARN_FRACTION:
        warnings.warn(
            f"{where}: {before + after} of {len(words)} words ({100 * outside:.0f} %) fall outside the scan "
            f"({before} before it starts, {after} after it ends; the scan lasts {scan}, onset {onset:g} s); they "
            f"are not modelled. Check {names['onset']}, {names['tr']} and {names['n_volumes']}.",
            StoryTimingWarning, stacklevel=stacklevel)
    first, last = float(onsets[inside].min()), float(np.asarray(words.offsets)[inside].max())
    silent = max(first, 0.0) + max(scan_end - last, 0.0)
    if silent > 0.5 * scan_end:
        warnings.warn(
            f"{where}: the words fill {first:.1f}-{last:.1f} s of a {scan_end:.1f} s scan ({names['n_volumes']} "
            f"{n_volumes} x {names['tr']} {tr:g}); {100 * silent / scan_end:.0f} % of the volumes hear no word. Check "
            f"{names['n_volumes']} and {names['onset']}.", StoryTimingWarning, stacklevel=stacklevel)
    return n_in


def _check_story_text(words, where: str) -> None:
    """Most words must hold a letter or a digit: emoji and symbols reach a model as unknown tokens."""
    empty = [w for w in words.words if not any(ch.isalnum() for ch in w)]
    if len(empty) > 0.5 * len(words):
        raise ConfigError(
            f"{where}: {len(empty)} of {len(words)} words have no letter or digit (e.g. {empty[:3]}); a language "
            "model reads them as unknown tokens ([UNK]): expected the story's words as text.")


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
    if config.atoms.alpha == 0:
        warnings.warn(
            "atoms.alpha 0: the AN codes are not sparse (plain least squares: every AN uses every atom), so the "
            "atoms are not a sparse dictionary and their members are all ANs; the paper's value is 0.15.",
            ConfigWarning, stacklevel=4)
    ec = config.encoding
    if "ridge" in ec.models:
        block = n // ec.n_folds
        if block < MIN_TEST_VOLUMES and ec.n_folds <= n:
            warnings.warn(
                f"encoding.n_folds {ec.n_folds} leaves test blocks of {block} volumes of {n}: each fold's r and "
                f"R2 rest on {block} points, fewer than {MIN_TEST_VOLUMES} (and shorter than the HRF); 3-10 "
                "folds are usual.", ConfigWarning, stacklevel=4)
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


def bids_runs(config: PipelineConfig) -> dict[str, list[dict]]:
    """``fmri.bids`` as story name -> the runs found (one per subject), as the ``fmri`` step reads them."""
    from ..io.fmri import find_bids_runs

    bids = config.fmri.bids
    if bids is None:
        return {}
    if not Path(bids.root).is_dir():
        raise FileNotFoundError(f"fmri.bids.root {str(bids.root)!r} does not exist.")
    out = {}
    for story in config.story_list:
        task = bids.task.get(story.label, story.label) if isinstance(bids.task, dict) else bids.task
        try:
            out[story.label] = find_bids_runs(bids.root, task, **bids.selection())
        except FMRIInputError as exc:
            raise FMRIInputError(f"fmri.bids {str(bids.root)!r}: {exc}") from None
    return out


def study_subjects(config: PipelineConfig) -> list[str]:
    """The subjects' names as the run will call them (``summary.json``'s ``fmri.subjects``)."""
    from ..io.fmri import _default_subjects

    fc = config.fmri
    if fc.simulate is not None:
        return [f"sub-{i + 1:02d}" for i in range(fc.simulate.n_subjects)]
    if fc.bids is not None:
        runs = next(iter(bids_runs(config).values()), [])
        return list(fc.subjects) if fc.subjects else [r["subject"] for r in runs]
    key = "regions" if fc.regions else "images"
    first = next(iter(story_runs(config, key).values()), [])
    return list(fc.subjects) if fc.subjects else _default_subjects(first)


def _check_fmri(config: PipelineConfig) -> None:
    from ..io.fmri import check_distinct_runs

    fc = config.fmri
    images = story_runs(config, "images")
    keys = {name: [f"fmri.images[{i}]" if not isinstance(fc.images, dict) else f"fmri.images.{name}[{i}]"
                   for i in range(len(runs))] for name, runs in images.items()}
    for name, runs in bids_runs(config).items():
        images[name] = [r["bold"] for r in runs]
        keys[name] = [f"fmri.bids ({r['subject']})" for r in runs]
        _check_bids_tr(config, name, runs)
    for story in config.story_list:
        runs = images.get(story.label, [])
        for key, image in zip(keys.get(story.label, []), runs):
            _check_image_header(key, image, story, config)
        check_distinct_runs(runs, keys.get(story.label))
    regions = story_runs(config, "regions")
    first_images = next(iter(images.values()), [])
    n_inputs = len(first_images) or len(next(iter(regions.values()), []))
    if fc.subjects is not None and n_inputs:
        if len(fc.subjects) != n_inputs:
            raise FMRIInputError(
                f"fmri.subjects has {len(fc.subjects)} names for {n_inputs} runs; give one name per run.")
        if len(set(fc.subjects)) != len(fc.subjects):
            raise FMRIInputError(f"fmri.subjects must be unique; {list(fc.subjects)} was provided.")
    for story in config.story_list:
        _check_region_tables(config, story, regions.get(story.label, []))
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


def _check_image_header(key: str, image, story, config: PipelineConfig) -> None:
    """A run's header: 4D, with the story's volumes (the data are read by the ``fmri`` step)."""
    n = story.n_volumes
    what = "story.n_volumes" if not config.stories else f"story {story.label!r} has n_volumes"
    img = _load_img(image, key)
    shape = img.shape
    if len(shape) != 4 or shape[3] == 1:
        raise FMRIInputError(
            f"{key} {str(image)!r} has shape {shape}; expected a 4D run (x, y, z, {n}).")
    if shape[3] != n:
        raise FMRIInputError(f"{key} {str(image)!r} has {shape[3]} volumes; {what} {n}.")


def _check_bids_tr(config: PipelineConfig, name: str, runs: list[dict]) -> None:
    """The sidecars' ``RepetitionTime`` must be the story's ``tr``."""
    story = next(s for s in config.story_list if s.label == name)
    key = "story.tr" if not config.stories else f"stories ({name!r}).tr"
    for run in runs:
        if run["tr"] is not None and abs(run["tr"] - story.tr) > 1e-3:
            raise FMRIInputError(
                f"fmri.bids: {Path(run['bold']).name} has RepetitionTime {run['tr']:g} s in its sidecar "
                f"{run['sidecars'][-1]!r}; {key} is {story.tr:g} s: set {key} to the scan's TR.")


def _check_region_tables(config: PipelineConfig, story, tables: list[str]) -> None:
    """Region tables are small: read them whole (rows, columns, header, constant subjects)."""
    from ..io.fmri import load_region_timeseries

    fc = config.fmri
    for i, table in enumerate(tables):
        if not Path(table).is_file():
            key = f"fmri.regions[{i}]" if not isinstance(fc.regions, dict) else f"fmri.regions.{story.label}[{i}]"
            raise FileNotFoundError(f"{key} {str(table)!r} does not exist.")
    if tables:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fmri step reads them again and warns then
            load_region_timeseries(tables, n_volumes=story.n_volumes, subjects=fc.subjects)


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
    """Each model resolves (bundled name, complete folder, a GGUF file as long as its header says,
    hub id) and a bundled model's weights have their pinned SHA-256."""
    from ..features.models import check_bundled_weights, check_gguf_complete, resolve_model

    for i, model in enumerate(config.features.models):
        try:
            spec = resolve_model(model)
            if spec.kind == "gguf":
                check_gguf_complete(spec.path)
            check_bundled_weights(spec)
        except (OSError, ValueError) as exc:
            raise type(exc)(f"features.models[{i}]: {exc}") from None
