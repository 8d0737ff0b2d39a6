"""The planted signal: each voxel sees its sources through its own HRF variant.

A voxel's HRF is the canonical one delayed and widened by a Gaussian
(:func:`_hrf_variant`), with delay and dispersion smooth over voxels and quantised to
``HRF_STEP_S``; the links' weights are log-normal with median 1 (log SD ``WEIGHT_LOG_SD``).
"""

from __future__ import annotations

import numpy as np

from .networks import _PlantedNetworks

WEIGHT_LOG_SD = 0.5

HRF_STEP_S = 0.25


def _hrf_variant(z: np.ndarray, delay_s: float, dispersion_s: float, tr: float) -> np.ndarray:
    """Time courses as through an HRF delayed by ``delay_s`` and widened by a Gaussian.

    The sources are already convolved with the canonical HRF; convolving them with a
    shifted Gaussian of SD ``dispersion_s`` equals convolving the underlying events
    with the canonical HRF delayed and dispersed that way. Edges are held constant.
    """
    from scipy.ndimage import gaussian_filter1d

    t = np.arange(z.shape[0]) * tr
    out = np.empty_like(z)
    for j in range(z.shape[1]):
        out[:, j] = np.interp(t - delay_s, t, z[:, j])
    if dispersion_s > 0:
        out = gaussian_filter1d(out, dispersion_s / tr, axis=0, mode="nearest")
    return out


def _hrf_maps(delay_field: np.ndarray, dispersion_field: np.ndarray, hrf_delay_s: float,
              hrf_dispersion_s: float):
    """Each voxel's HRF delay and extra dispersion, from two smooth unit-variance fields.

    The fields' normal quantiles spread the delays uniformly over ``[-hrf_delay_s,
    hrf_delay_s]`` and the dispersions over ``[0, hrf_dispersion_s]``; both are
    quantised to ``HRF_STEP_S`` so that voxels share variants.

    Parameters
    ----------
    delay_field, dispersion_field : ndarray of shape (n_voxels,), float32
    hrf_delay_s, hrf_dispersion_s : float

    Returns
    -------
    delay, dispersion : ndarray of shape (n_voxels,)
        In seconds.
    """
    from scipy.special import ndtr

    delay = hrf_delay_s * (2.0 * ndtr(delay_field) - 1.0)
    disp = hrf_dispersion_s * ndtr(dispersion_field)
    delay = np.round(delay / HRF_STEP_S) * HRF_STEP_S
    disp = np.round(disp / HRF_STEP_S) * HRF_STEP_S
    return delay, disp


def _signal_through_hrf_variants(z_src: np.ndarray, runs: list, run_starts: np.ndarray, link_src: np.ndarray,
                                 weights: np.ndarray, delay: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """The planted signal of the signal voxels before its scaling, each voxel through its HRF.

    Voxels that share an HRF variant are computed together; each run is shaped on its
    own (with its TR), so no HRF reaches across stories.

    Parameters
    ----------
    z_src : ndarray of shape (n_volumes, n_sources)
        The z-scored sources.
    runs : list of (name, n_volumes, tr)
    run_starts : ndarray of int, shape (n_runs + 1,)
        First volume of each run, then ``n_volumes``.
    link_src : ndarray of int, shape (n_links,)
    weights : ndarray of shape (n_links, n_signal)
        Each link's weight on each signal voxel (0 outside the link's network).
    delay, disp : ndarray of shape (n_signal,)
        The signal voxels' HRF delays and dispersions (s).

    Returns
    -------
    signal : ndarray of shape (n_volumes, n_signal), float32
    """
    signal = np.zeros((z_src.shape[0], weights.shape[1]), np.float32)
    variant = np.stack([delay, disp], axis=1)
    keys, which = np.unique(variant, axis=0, return_inverse=True)
    which = np.ravel(which)
    for b, (d, w) in enumerate(keys):
        cols = np.flatnonzero(which == b)
        shaped = np.concatenate([_hrf_variant(z_src[a:b, link_src], float(d), float(w), t)
                                 for (_, _, t), a, b in zip(runs, run_starts[:-1], run_starts[1:])]
                                ).astype(np.float32)
        signal[:, cols] = shaped @ weights[:, cols].astype(np.float32)
    return signal


def _scale_to_true_r2(signal: np.ndarray, background: np.ndarray, r2_target: np.ndarray) -> np.ndarray:
    """Scale each voxel's signal so that its true R² over its background is the target.

    Parameters
    ----------
    signal : ndarray of shape (n_volumes, n_signal), float32
        Scaled in place.
    background : ndarray of shape (n_volumes, n_signal), float32
        The voxels' noise and fluctuations (image units).
    r2_target : ndarray of shape (n_signal,), float64

    Returns
    -------
    r2 : ndarray of shape (n_signal,), float64
        The target where the voxel carries signal, 0 where its signal is constant.
    """
    var_s = signal.var(axis=0, dtype=np.float64)
    var_n = background.var(axis=0, dtype=np.float64)
    carries = var_s > 0
    scale = np.zeros(signal.shape[1])
    scale[carries] = np.sqrt(r2_target[carries] / (1.0 - r2_target[carries]) * var_n[carries] / var_s[carries])
    signal *= scale.astype(np.float32)
    return np.where(carries, r2_target, 0.0)


def _planted_signal(z_src: np.ndarray, runs: list, run_starts: np.ndarray, networks: _PlantedNetworks,
                    maps: np.ndarray, delay: np.ndarray, disp: np.ndarray, background: np.ndarray,
                    r2_range: tuple[float, float]):
    """One subject's planted signal in its signal voxels, and every voxel's true R².

    Parameters
    ----------
    z_src : ndarray of shape (n_volumes, n_sources)
        The z-scored sources.
    runs : list of (name, n_volumes, tr)
    run_starts : ndarray of int, shape (n_runs + 1,)
    networks : _PlantedNetworks
    maps : ndarray of shape (n_links + 3, n_voxels), float32
        The subject's smooth maps: one log-weight per link, then the R² map (normal
        quantiles over ``r2_range``), then the HRF maps.
    delay, disp : ndarray of shape (n_voxels,)
        :func:`_hrf_maps`' HRF delays and dispersions (s).
    background : ndarray of shape (n_volumes, n_voxels), float32
        Noise and fluctuations (image units), the R²'s denominator.
    r2_range : (float, float)

    Returns
    -------
    signal : ndarray of shape (n_volumes, n_signal), float32
        For the voxels of ``networks.signal_voxels``, in image units.
    r2 : ndarray of shape (n_voxels,), float32
        True R² (0 outside the planted networks).
    """
    from scipy.special import ndtr

    n_links = len(networks.planted)
    n_signal = int(networks.signal_voxels.sum())
    signal = np.zeros((z_src.shape[0], n_signal), np.float32)
    r2 = np.zeros(networks.signal_voxels.shape[0], np.float32)
    if not n_signal:
        return signal, r2
    lo, hi = r2_range
    sig_idx = np.flatnonzero(networks.signal_voxels)
    weights = np.exp(WEIGHT_LOG_SD * maps[:n_links][:, sig_idx]) * networks.link_sign[:, None]
    weights *= networks.link_masks[:, sig_idx]
    signal = _signal_through_hrf_variants(z_src, runs, run_starts, networks.link_src, weights,
                                          delay[sig_idx], disp[sig_idx])
    r2_sig = (lo + (hi - lo) * ndtr(maps[n_links][sig_idx])).astype(np.float64)
    r2[sig_idx] = _scale_to_true_r2(signal, background[:, sig_idx], r2_sig)
    return signal, r2
