"""The simulator: subjects whose planted networks follow the planted sources."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from .._progress import check_cancel, report
from ..errors import ConfigError, ShapeError
from .fields import _FieldMaker, _smooth
from .images import SimulatedFMRI, _labelled_header, _voxel_sizes, resample_mask
from .networks import _canonical, _expected_links, _fluctuation_maps, _load_atlases, _network_key, _network_mask
from .noise import _block_diagonal, _drift_basis, _fluctuation_courses, grey_matter_fraction
from .planting import HRF_STEP_S, WEIGHT_LOG_SD, _hrf_variant
from .plan import SimulationPlan
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
        The planted time courses (e.g. :func:`an_mix_sources`, or atoms of a
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
        fluctuations stay within its own run (with its TR). :func:`write_simulation` writes one image per
        subject and story.
    progress, cancel
        Progress callback (stage ``"simulate"``) and cancel token.

    Returns
    -------
    sim : SimulatedFMRI
    """
    import nibabel as nib
    from scipy.special import ndtr

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
    run_starts = np.cumsum([0] + [v for _, v, _ in runs])
    later_starts = set(int(a) for a in run_starts[1:-1])
    planted = [(a, *_network_key(n, plan.atlas), +1) for a, ns in plan.links.items() for n in ns]
    planted += [(a, *_network_key(n, plan.atlas), -1) for a, ns in plan.negative_links.items() for n in ns]
    bad = sorted({p[0] for p in planted if not 0 <= p[0] < n_sources})
    if bad:
        raise ConfigError(
            f"Planted sources {bad} do not exist: 'sources' has {n_sources} sources "
            f"(indices 0..{n_sources - 1})."
        )
    used = sorted({p[0] for p in planted})
    if used and np.any(sources[:, used].std(axis=0) == 0):
        raise ShapeError("A planted source has a constant time course; it cannot carry signal.")

    # Grid.
    if mask_img is None:
        from ..datasets import mni_mask_path

        mask_img = mni_mask_path()
    mask_img = nib.load(str(mask_img)) if isinstance(mask_img, (str, os.PathLike)) else mask_img
    if len(mask_img.shape) != 3:
        raise ShapeError(f"'mask_img' must be a 3D image; shape {mask_img.shape} was provided.")
    if plan.resolution_mm is not None:
        mask_img = resample_mask(mask_img, plan.resolution_mm)
    else:
        mask_img = nib.Nifti1Image((np.asarray(mask_img.dataobj) > 0).astype(np.uint8), mask_img.affine)
    _labelled_header(mask_img)
    mask = np.asarray(mask_img.dataobj) > 0
    n_voxels = int(mask.sum())
    if n_voxels == 0:
        raise ShapeError("'mask_img' holds no voxel.")

    # Networks: planted ones, the atlases the truth is stated in, the fluctuating ones.
    truth_atlases = list(dict.fromkeys(plan.truth_atlases or [p[1] for p in planted] or [plan.atlas]))
    atlases = _load_atlases(plan, mask_img, list(dict.fromkeys(
        [p[1] for p in planted] + truth_atlases + list(plan.fluctuation_atlases))))
    link_masks = np.stack([_network_mask(atlases, atlas, net, plan) for _, atlas, net, _ in planted]) \
        if planted else np.zeros((0, n_voxels), bool)
    planted = [(a, atlas, _canonical(atlases, atlas, net), s) for a, atlas, net, s in planted]
    signal_voxels = link_masks.any(axis=0) if planted else np.zeros(n_voxels, bool)
    n_signal = int(signal_voxels.sum())
    link_src = np.array([p[0] for p in planted], dtype=int)
    link_sign = np.array([p[3] for p in planted], dtype=np.float32)

    # Tissue: AR(1) coefficient per voxel from the grey-matter proxy.
    grey = grey_matter_fraction(mask_img)
    rho = (plan.ar1_other + (plan.ar1_grey - plan.ar1_other) * grey).astype(np.float32)
    innovation = np.sqrt(1.0 - rho * rho).astype(np.float32)

    # Spontaneous fluctuations: one course per network and subject, on the network's map.
    fl_names, fl_maps = _fluctuation_maps(atlases, plan)
    fl_norm = np.sqrt(np.maximum(1.0, (fl_maps**2).sum(axis=0)))
    fl_weights = (fl_maps / fl_norm).astype(np.float32)  # (n_fl, n_voxels)
    fl_var = (fl_weights**2).sum(axis=0)  # <= 1
    share = float(plan.fluctuation_share)
    ar_scale = np.sqrt(np.clip(1.0 - share * fl_var, 0.0, 1.0)).astype(np.float32)

    z_src = _zscore(sources)
    seeds = np.random.SeedSequence(plan.seed).spawn(1 + plan.n_subjects)
    shared_rng = np.random.default_rng(seeds[0])
    fields = _FieldMaker(mask, _voxel_sizes(mask_img.affine))
    v = plan.subject_variability
    # Shared maps: one per link (weights), one for R2, two for the HRF, one for the baseline.
    n_maps = len(planted) + 3
    shared = fields.fields(shared_rng, n_maps, plan.pattern_fwhm_mm)
    baseline_field = fields.fields(shared_rng, 1, plan.pattern_fwhm_mm)[0]
    baseline_map = (plan.baseline * (1.0 + BASELINE_SPATIAL_SD * baseline_field)).astype(np.float32)

    box, inner, sigma, norm = fields.setup(plan.smoothness_fwhm_mm)
    drift_basis = _block_diagonal([_drift_basis(v) for _, v, _ in runs]).astype(np.float32)
    lo, hi = plan.r2_range
    subjects = [f"sub-{i + 1:02d}" for i in range(plan.n_subjects)]
    data, components = [], []
    true_r2 = np.zeros((plan.n_subjects, n_voxels), np.float32)
    hrf_delay = np.zeros((plan.n_subjects, n_voxels), np.float32)
    hrf_dispersion = np.zeros((plan.n_subjects, n_voxels), np.float32)
    fl_courses = np.zeros((plan.n_subjects, n_volumes, len(fl_names)), np.float32)
    total = plan.n_subjects * n_volumes
    for s in range(plan.n_subjects):
        rng = np.random.default_rng(seeds[1 + s])
        own = fields.fields(rng, n_maps, plan.pattern_fwhm_mm)
        mixed = (math.sqrt(1.0 - v) * shared + math.sqrt(v) * own) if v < 1 else own
        drift_coef = fields.fields(rng, drift_basis.shape[1], plan.pattern_fwhm_mm) * (plan.drift_sd * plan.noise_sd)

        # AR(1) in time with a per-voxel coefficient, on spatially smooth innovations.
        noise = np.empty((n_volumes, n_voxels), np.float32)
        state = _smooth(rng.standard_normal(box, dtype=np.float32), sigma, plan.smoothness_fwhm_mm)[inner] / norm
        for t in range(n_volumes):
            if t in later_starts:  # each story is a scan of its own: its noise starts afresh (stationary)
                state = _smooth(rng.standard_normal(box, dtype=np.float32), sigma,
                                plan.smoothness_fwhm_mm)[inner] / norm
            elif t:
                e = _smooth(rng.standard_normal(box, dtype=np.float32), sigma, plan.smoothness_fwhm_mm)[inner]
                state = rho * state + innovation * (e / norm)
            noise[t] = state
            if t % 16 == 0:
                check_cancel(cancel)
                report(progress, "simulate", s * n_volumes + t, total)
        noise *= ar_scale
        courses = np.concatenate([_fluctuation_courses(rng, v, len(fl_names), t) for _, v, t in runs]
                                 ).astype(np.float32)
        fl_courses[s] = courses
        fluct = (math.sqrt(share) * courses) @ fl_weights if len(fl_names) else np.zeros_like(noise)
        background = (noise + fluct) * np.float32(plan.noise_sd)

        # HRF of each voxel: delay in [-d, d] and dispersion in [0, w], smooth over voxels,
        # partly shared by subjects; quantised to HRF_STEP_S so that voxels share variants.
        delay = plan.hrf_delay_s * (2.0 * ndtr(mixed[-2]) - 1.0)
        disp = plan.hrf_dispersion_s * ndtr(mixed[-1])
        delay = np.round(delay / HRF_STEP_S) * HRF_STEP_S
        disp = np.round(disp / HRF_STEP_S) * HRF_STEP_S
        hrf_delay[s], hrf_dispersion[s] = delay, disp

        signal = np.zeros((n_volumes, n_signal), np.float32)
        r2 = np.zeros(n_voxels, np.float32)
        if n_signal:
            sig_idx = np.flatnonzero(signal_voxels)
            weights = np.exp(WEIGHT_LOG_SD * mixed[:len(planted)][:, sig_idx]) * link_sign[:, None]
            weights *= link_masks[:, sig_idx]
            variant = np.stack([delay[sig_idx], disp[sig_idx]], axis=1)
            keys, which = np.unique(variant, axis=0, return_inverse=True)
            which = np.ravel(which)
            for b, (d, w) in enumerate(keys):
                cols = np.flatnonzero(which == b)
                shaped = np.concatenate([_hrf_variant(z_src[a:b, link_src], float(d), float(w), t)
                                         for (_, _, t), a, b in zip(runs, run_starts[:-1], run_starts[1:])]
                                        ).astype(np.float32)
                signal[:, cols] = shaped @ weights[:, cols].astype(np.float32)
            r2_sig = (lo + (hi - lo) * ndtr(mixed[len(planted)][sig_idx])).astype(np.float64)
            var_s = signal.var(axis=0, dtype=np.float64)
            var_n = background[:, sig_idx].var(axis=0, dtype=np.float64)
            carries = var_s > 0
            scale = np.zeros(n_signal)
            scale[carries] = np.sqrt(r2_sig[carries] / (1.0 - r2_sig[carries]) * var_n[carries] / var_s[carries])
            signal *= scale.astype(np.float32)
            r2[sig_idx] = np.where(carries, r2_sig, 0.0)
        drift = drift_basis @ drift_coef
        y = background + drift
        y += baseline_map
        if n_signal:
            y[:, signal_voxels] += signal
        data.append(y)
        true_r2[s] = r2
        if keep_components:
            full_signal = np.zeros((n_volumes, n_voxels), np.float32)
            full_signal[:, signal_voxels] = signal
            components.append({"signal": full_signal, "noise": noise * np.float32(plan.noise_sd),
                               "fluctuations": fluct * np.float32(plan.noise_sd), "drift": drift,
                               "baseline": baseline_map})
        del noise, drift, background
    report(progress, "simulate", total, total)

    expected, shares = _expected_links(planted, link_masks, atlases, truth_atlases, plan)
    truth = _truth(plan, z_src, tr, mask_img, subjects, planted, link_masks, signal_voxels, true_r2,
                   atlases, truth_atlases, expected, shares, rho, grey, hrf_delay, hrf_dispersion,
                   fl_names, source_info)
    if runs[0][0]:
        truth["runs"] = [{"story": n, "n_volumes": v, "tr": t, "first_volume": int(a)}
                         for (n, v, t), a in zip(runs, run_starts[:-1])]
    return SimulatedFMRI(
        data=data, mask_img=mask_img, truth=truth, subjects=subjects, true_r2=true_r2,
        signal_voxels=signal_voxels, planted=planted, link_masks=link_masks,
        sources=sources, tr=float(tr), ar1=rho, grey_matter=grey, hrf_delay=hrf_delay,
        hrf_dispersion=hrf_dispersion, fluctuation_names=fl_names, fluctuation_courses=fl_courses,
        components=components if keep_components else None,
    )
