"""The simulator: subjects whose planted networks follow the planted sources.

:func:`simulate_fmri` runs the stages in order: check the inputs, build the grid and
the networks, the noise model and the maps every subject shares, then each subject
(its own maps, noise, fluctuations, HRFs and planted signal), then the truth. The
random draws come from one ``SeedSequence(plan.seed)``: its first child draws the
shared maps, child ``1 + s`` everything of subject ``s``, always in the same order,
so a seed gives the same data bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._progress import report
from ..errors import ConfigError, ShapeError
from .fields import _FieldMaker
from .images import SimulatedFMRI, _simulation_mask, _voxel_sizes
from .networks import _expected_links, _fluctuation_maps, _planted_links, _planted_networks, _PlantedNetworks
from .noise import (
    _ar1_by_tissue,
    _ar1_noise,
    _block_diagonal,
    _drift_basis,
    _fluctuation_weights,
    _subject_fluctuations,
)
from .plan import SimulationPlan
from .planting import _hrf_maps, _planted_signal
from .sources import _zscore
from .truth import _truth

BASELINE_SPATIAL_SD = 0.05


def simulate_fmri(
    sources,
    plan: SimulationPlan,
    *,
    mask_img=None,
    tr: float,
    source_info: dict | None = None,
    keep_components: bool = False,
    runs: Sequence[tuple[str, int, float]] | None = None,
    progress=None,
    cancel=None,
) -> SimulatedFMRI:
    """Simulate subjects whose planted networks follow planted sources.

    Parameters
    ----------
    sources : ndarray of shape (n_volumes, n_sources)
        The planted time courses (e.g. :func:`~napari_brainorg.simulate.an_mix_sources`, or atoms of a
        dictionary learned independently of the one the analysis will use); only the
        linked ones are used.
    plan : SimulationPlan
    mask_img : NIfTI image or path, optional
        Brain mask (default: the bundled FSL MNI152 2 mm brain mask), resampled to
        ``plan.resolution_mm`` when that is set.
    tr : float
        Repetition time (s), written in the images' headers.
    source_info : dict, optional
        How the sources were made (recorded in ``truth.json``).
    keep_components : bool
        Keep signal, noise, fluctuations, drift and baseline apart (for tests).
    runs : list of (name, n_volumes, tr), optional
        Several stories heard by the same subjects: ``sources`` holds their volumes one
        story after another. The same planted truth (links, weights, R², HRFs) drives
        every story; each story's HRF variants, drifts, AR noise and spontaneous
        fluctuations stay within its own run (with its TR).
        :func:`~napari_brainorg.simulate.write_simulation` writes one image per
        subject and story.
    progress, cancel
        Progress callback (stage ``"simulate"``) and cancel token.

    Returns
    -------
    sim : SimulatedFMRI
    """
    sources, runs, planted = _checked_inputs(sources, plan, tr, runs)
    mask_img, mask = _simulation_mask(mask_img, plan.resolution_mm)
    networks = _planted_networks(plan, planted, mask_img, int(mask.sum()))
    grey, rho, innovation = _ar1_by_tissue(mask_img, plan.ar1_grey, plan.ar1_other)
    fl_names, fl_maps = _fluctuation_maps(networks.atlases, plan)
    fl_weights, ar_scale = _fluctuation_weights(fl_maps, float(plan.fluctuation_share))
    seeds = np.random.SeedSequence(plan.seed).spawn(1 + plan.n_subjects)
    fields = _FieldMaker(mask, _voxel_sizes(mask_img.affine))
    shared, baseline_map = _shared_maps(np.random.default_rng(seeds[0]), fields, plan, len(networks.planted))
    population = _Population(
        z_src=_zscore(sources), runs=runs, run_starts=np.cumsum([0] + [v for _, v, _ in runs]),
        networks=networks, fields=fields, noise_setup=fields.setup(plan.smoothness_fwhm_mm), rho=rho,
        innovation=innovation, ar_scale=ar_scale, fl_weights=fl_weights, shared=shared,
        baseline_map=baseline_map,
        drift_basis=_block_diagonal([_drift_basis(v) for _, v, _ in runs]).astype(np.float32),
    )
    subjects = [f"sub-{i + 1:02d}" for i in range(plan.n_subjects)]
    data, true_r2, hrf_delay, hrf_dispersion, fl_courses, components = _simulate_subjects(
        seeds[1:], population, plan, keep_components=keep_components, progress=progress, cancel=cancel)

    expected, shares = _expected_links(networks.planted, networks.link_masks, networks.atlases,
                                       networks.truth_atlases, plan)
    truth = _truth(plan, population.z_src, tr, mask_img, subjects, networks.planted, networks.link_masks,
                   networks.signal_voxels, true_r2, networks.atlases, networks.truth_atlases, expected, shares,
                   rho, grey, hrf_delay, hrf_dispersion, fl_names, source_info)
    if runs[0][0]:
        truth["runs"] = [{"story": n, "n_volumes": v, "tr": t, "first_volume": int(a)}
                         for (n, v, t), a in zip(runs, population.run_starts[:-1])]
    return SimulatedFMRI(
        data=data, mask_img=mask_img, truth=truth, subjects=subjects, true_r2=true_r2,
        signal_voxels=networks.signal_voxels, planted=networks.planted, link_masks=networks.link_masks,
        sources=sources, tr=float(tr), ar1=rho, grey_matter=grey, hrf_delay=hrf_delay,
        hrf_dispersion=hrf_dispersion, fluctuation_names=fl_names, fluctuation_courses=fl_courses,
        components=components,
    )


def _checked_inputs(sources, plan: SimulationPlan, tr: float, runs):
    """Check the sources, the TR and the runs against the plan.

    Parameters
    ----------
    sources : array-like of shape (n_volumes, n_sources)
    plan : SimulationPlan
    tr : float
    runs : list of (name, n_volumes, tr) or None

    Returns
    -------
    sources : ndarray of shape (n_volumes, n_sources), float64
    runs : list of (str, int, float)
        One unnamed run of every volume when ``runs`` is None.
    planted : list of (int, str, str, int)
        The plan's links (source, atlas, network, sign), names as written.
    """
    sources = np.asarray(sources, dtype=np.float64)
    if sources.ndim != 2:
        raise ShapeError(f"'sources' must be 2D (n_volumes, n_sources); shape {sources.shape} was provided.")
    n_volumes, n_sources = sources.shape
    if n_volumes < 3:
        raise ShapeError(f"'sources' must have at least 3 volumes; {n_volumes} were provided.")
    if not np.all(np.isfinite(sources)):
        raise ShapeError("'sources' holds NaN or infinite values.")
    if not tr > 0:
        raise ConfigError(f"'tr' must be > 0 seconds; {tr!r} was provided.")
    runs = [(str(n), int(v), float(t)) for n, v, t in runs] if runs else [("", n_volumes, float(tr))]
    if sum(v for _, v, _ in runs) != n_volumes:
        raise ShapeError(f"'runs' add up to {sum(v for _, v, _ in runs)} volumes; 'sources' has {n_volumes}.")
    planted = _planted_links(plan)
    bad = sorted({p[0] for p in planted if not 0 <= p[0] < n_sources})
    if bad:
        raise ConfigError(
            f"Planted sources {bad} do not exist: 'sources' has {n_sources} sources "
            f"(indices 0..{n_sources - 1})."
        )
    used = sorted({p[0] for p in planted})
    if used and np.any(sources[:, used].std(axis=0) == 0):
        raise ShapeError("A planted source has a constant time course; it cannot carry signal.")
    return sources, runs, planted


def _shared_maps(rng, fields: _FieldMaker, plan: SimulationPlan, n_links: int):
    """The smooth maps every subject shares a part of, and the baseline.

    Parameters
    ----------
    rng : numpy.random.Generator
        The shared generator (first child of the plan's seed).
    fields : _FieldMaker
    plan : SimulationPlan
    n_links : int

    Returns
    -------
    shared : ndarray of shape (n_links + 3, n_voxels), float32
        One map per link (weights), one for the R², two for the HRF (delay, dispersion).
    baseline_map : ndarray of shape (n_voxels,), float32
        Each voxel's mean intensity.
    """
    shared = fields.fields(rng, n_links + 3, plan.pattern_fwhm_mm)
    baseline_field = fields.fields(rng, 1, plan.pattern_fwhm_mm)[0]
    baseline_map = (plan.baseline * (1.0 + BASELINE_SPATIAL_SD * baseline_field)).astype(np.float32)
    return shared, baseline_map


@dataclass
class _Population:
    """What every simulated subject shares.

    Attributes
    ----------
    z_src : ndarray of shape (n_volumes, n_sources)
        The z-scored sources.
    runs : list of (name, n_volumes, tr)
    run_starts : ndarray of int, shape (n_runs + 1,)
        First volume of each run, then ``n_volumes``.
    networks : _PlantedNetworks
    fields : _FieldMaker
    noise_setup : tuple
        ``fields.setup(plan.smoothness_fwhm_mm)``, for the noise's innovations.
    rho, innovation, ar_scale : ndarray of shape (n_voxels,), float32
        The noise's AR(1) coefficient, innovations' scale and final scale.
    fl_weights : ndarray of shape (n_networks, n_voxels), float32
        Fluctuating networks' weights.
    shared : ndarray of shape (n_links + 3, n_voxels), float32
        The shared part of the subjects' maps (:func:`_shared_maps`).
    baseline_map : ndarray of shape (n_voxels,), float32
    drift_basis : ndarray of shape (n_volumes, 2 * n_runs), float32
        Two slow cosines per run.
    """

    z_src: np.ndarray
    runs: list
    run_starts: np.ndarray
    networks: _PlantedNetworks
    fields: _FieldMaker
    noise_setup: tuple
    rho: np.ndarray
    innovation: np.ndarray
    ar_scale: np.ndarray
    fl_weights: np.ndarray
    shared: np.ndarray
    baseline_map: np.ndarray
    drift_basis: np.ndarray


def _simulate_subjects(seeds: Sequence, population: _Population, plan: SimulationPlan, *,
                       keep_components: bool = False, progress=None, cancel=None):
    """Every subject, each from its own seed (two at a time where there are two cores).

    Parameters
    ----------
    seeds : sequence of numpy.random.SeedSequence
        One per subject.
    population : _Population
    plan : SimulationPlan
    keep_components : bool
    progress, cancel
        Progress callback (stage ``"simulate"``, counted in volumes) and cancel token.

    Returns
    -------
    data : list of ndarray of shape (n_volumes, n_voxels), float32
    true_r2, hrf_delay, hrf_dispersion : ndarray of shape (n_subjects, n_voxels), float32
    fl_courses : ndarray of shape (n_subjects, n_volumes, n_networks), float32
    components : list of dict or None
        With ``keep_components``: each subject's parts (:func:`_simulate_subject`).
    """
    n_volumes, n_voxels = population.z_src.shape[0], population.rho.shape[0]
    data, components = [], []
    true_r2 = np.zeros((plan.n_subjects, n_voxels), np.float32)
    hrf_delay = np.zeros((plan.n_subjects, n_voxels), np.float32)
    hrf_dispersion = np.zeros((plan.n_subjects, n_voxels), np.float32)
    fl_courses = np.zeros((plan.n_subjects, n_volumes, population.fl_weights.shape[0]), np.float32)
    total = plan.n_subjects * n_volumes

    def one(s):
        return _simulate_subject(np.random.default_rng(seeds[s]), population, plan, keep_components=keep_components,
                                 progress=progress, cancel=cancel, done=s * n_volumes, total=total)

    # each subject draws from its own generator: two at a time (the smoothing and the AR
    # recursion are single-threaded and release the GIL) give the same subjects
    from .._backend import available_cores

    n_threads = min(available_cores(), plan.n_subjects, 2)
    if n_threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n_threads, thread_name_prefix="brainorg-simulate") as pool:
            futures = [pool.submit(one, s) for s in range(plan.n_subjects)]
            try:
                results = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    else:
        results = (one(s) for s in range(plan.n_subjects))
    for s, (y, parts) in enumerate(results):
        data.append(y)
        true_r2[s], hrf_delay[s], hrf_dispersion[s] = parts.pop("true_r2"), parts.pop("delay"), parts.pop("dispersion")
        fl_courses[s] = parts.pop("courses")
        if keep_components:
            components.append(parts)
    report(progress, "simulate", total, total)
    return data, true_r2, hrf_delay, hrf_dispersion, fl_courses, components if keep_components else None


def _simulate_subject(rng, population: _Population, plan: SimulationPlan, *, keep_components: bool = False,
                      progress=None, cancel=None, done: int = 0, total: int = 0):
    """One subject: its maps, drifts, AR noise, fluctuations, HRFs and planted signal.

    The subject's generator draws, in this order, its own part of the maps, its drift
    coefficients, its AR noise and its fluctuation courses.

    Parameters
    ----------
    rng : numpy.random.Generator
        The subject's generator.
    population : _Population
    plan : SimulationPlan
    keep_components : bool
    progress, cancel, done, total
        Progress callback, cancel token, volumes done before this subject and in all.

    Returns
    -------
    bold : ndarray of shape (n_volumes, n_voxels), float32
        ``baseline + signal + sd * (noise + fluctuations) + drift``.
    parts : dict
        ``true_r2``, ``delay``, ``dispersion`` (n_voxels,), ``courses`` (n_volumes,
        n_networks); with ``keep_components`` also ``signal``, ``noise``,
        ``fluctuations``, ``drift`` (n_volumes, n_voxels, image units) and ``baseline``
        (n_voxels,).
    """
    pop, networks, v = population, population.networks, plan.subject_variability
    own = pop.fields.fields(rng, pop.shared.shape[0], plan.pattern_fwhm_mm)
    mixed = (math.sqrt(1.0 - v) * pop.shared + math.sqrt(v) * own) if v < 1 else own
    drift_coef = (pop.fields.fields(rng, pop.drift_basis.shape[1], plan.pattern_fwhm_mm)
                  * (plan.drift_sd * plan.noise_sd))
    noise = _ar1_noise(rng, pop.fields, plan.smoothness_fwhm_mm, pop.noise_setup, pop.rho, pop.innovation,
                       pop.ar_scale, pop.z_src.shape[0], set(int(a) for a in pop.run_starts[1:-1]),
                       progress=progress, cancel=cancel, done=done, total=total)
    courses, fluct = _subject_fluctuations(rng, pop.runs, pop.fl_weights, float(plan.fluctuation_share))
    background = (noise + fluct) * np.float32(plan.noise_sd)
    delay, disp = _hrf_maps(mixed[-2], mixed[-1], plan.hrf_delay_s, plan.hrf_dispersion_s)
    signal, r2 = _planted_signal(pop.z_src, pop.runs, pop.run_starts, networks, mixed, delay, disp, background,
                                 plan.r2_range)
    drift = pop.drift_basis @ drift_coef
    y = background + drift
    y += pop.baseline_map
    if signal.shape[1]:
        y[:, networks.signal_voxels] += signal
    parts = {"true_r2": r2, "delay": delay, "dispersion": disp, "courses": courses}
    if keep_components:
        full_signal = np.zeros(y.shape, np.float32)
        full_signal[:, networks.signal_voxels] = signal
        parts.update({"signal": full_signal, "noise": noise * np.float32(plan.noise_sd),
                      "fluctuations": fluct * np.float32(plan.noise_sd), "drift": drift,
                      "baseline": pop.baseline_map})
    return y, parts
