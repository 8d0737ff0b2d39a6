"""Group atom maps calibrated like the network test: each voxel against phase-randomised atoms.

Why
    A one-sample t over subjects (the random-effects group map of
    :func:`~napari_brainorg.encoding.inference.group_effects`) cannot tell a chance
    correlation with a signal every subject shares (the story drives all of them) from an
    effect: a phase-randomised atom correlates by chance with the shared stimulus-locked
    signal of a voxel, that chance correlation is the same in every subject, and the t
    over subjects grows with their number. With a shared network signal, phase-randomised
    atoms' group maps exceed the nominal rate (1.3x at ``|z| > 1.96``, more than 2x at 4;
    ``benchmarks/bench_map_calibration.py``).

The calibrated statistic (:func:`stimulus_calibrated_maps`)
    Per voxel, the subjects' mean time series ``ybar`` (each subject's voxel with the
    drifts and confounds projected out, standardised) is tested the way the network test
    tests a network (:mod:`napari_brainorg.networks.association`, moved
    ``"conditional"``): atom ``j``'s unique part ``r_j`` (what the other atoms, the drifts
    and the confounds do not explain) against ``e_j = M_-j ybar``, the mean series less the
    other atoms' fit. The observed value is ``T = r_j' e_j`` (``= r_j' ybar``), the null
    draws ``T_d = (P_d r_j)' e_j`` with ``P_d`` a phase randomisation shared by every
    subject (each run's phases on its own). Because every bin's phase is uniform and
    independent, the draws' mean and variance are exact sums over the real-FFT bins::

        E[T_d]   = sum_{f fixed}  s_f Re(R_jf conj(E_jf))
        Var[T_d] = sum_{f random} s_f^2 |R_jf|^2 |E_jf|^2 / 2

    (``s_f = w_f / n``: the bin's weight in an inner product; fixed bins are each run's
    zero frequency and, for an even run, its Nyquist frequency). No draw is made, no
    subject is refitted, and the null spread includes the shared signal the voxel carries
    (what the t over subjects misses) and any autocorrelation of the noise (no noise model
    is needed). Two corrections make the map's null the stimulus null of a map, every atom
    phase-randomised together:

    - the fit of the other atoms took from ``e_j`` the share ``h_f`` of its power at each
      frequency that a phase-randomised copy of atom ``j`` would meet (the copy is no longer
      orthogonal to them); each bin's power is given back, divided by ``1 - h_f``
      (:func:`leverage_inflation`), while a signal the other atoms really carry stays out;
    - a sum of random-phase terms is lighter-tailed than the normal (each term is bounded);
      its fourth cumulant is exact too, and the standardised value is turned into z by the
      first-order Cornish–Fisher expansion (:func:`cornish_fisher_z`).

    Measured (``benchmarks/bench_map_calibration.py``, phase-randomised atoms under a shared
    stimulus-locked signal): the rate of ``|z| > 1.96`` at its nominal level, the tails at or
    below theirs; a real driver's map is kept.

Cost
    One pass over the subjects' data (projection and standardisation), one least-squares
    fit and a dozen products of the size ``k x n_bins x n_voxels`` for the group: about a
    tenth of the subjects' GLS maps (0.05-0.3 s per subject for 8,800 voxels and 32 atoms).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ShapeError

__all__ = ["CalibratedMaps", "cornish_fisher_z", "leverage_inflation", "moved_norm_share", "phase_null_moments",
           "run_spectra", "stimulus_calibrated_maps"]


def run_spectra(A: np.ndarray, runs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each run's real FFT along axis 0, the runs' bins one after the other.

    Parameters
    ----------
    A : ndarray of shape (n_volumes, ...)
    runs : list of int
        Run lengths adding up to ``n_volumes``.

    Returns
    -------
    F : ndarray of shape (n_bins, ...), complex
        ``n_bins = sum(m // 2 + 1)``.
    scale : ndarray of shape (n_bins,)
        Each bin's weight in an inner product, ``a' b = sum_f scale_f Re(A_f conj(B_f))``.
    fixed : ndarray of bool, shape (n_bins,)
        Bins whose phase a phase randomisation keeps (each run's zero frequency, and its
        Nyquist frequency for an even length).
    """
    A = np.asarray(A)
    if sum(runs) != A.shape[0]:
        raise ShapeError(f"'runs' {list(runs)} must add up to the {A.shape[0]} volumes.")
    parts, scale, fixed = [], [], []
    start = 0
    for m in runs:
        m = int(m)
        parts.append(np.fft.rfft(A[start:start + m], axis=0))
        w = np.full(m // 2 + 1, 2.0)
        w[0] = 1.0
        fx = np.zeros(m // 2 + 1, bool)
        fx[0] = True
        if m % 2 == 0:
            w[-1] = 1.0
            fx[-1] = True
        scale.append(w / m)
        fixed.append(fx)
        start += m
    return np.concatenate(parts, axis=0), np.concatenate(scale), np.concatenate(fixed)


def phase_null_moments(R: np.ndarray, E: np.ndarray, runs=None, beta: np.ndarray | None = None,
                       fourth: bool = False, bin_weights: np.ndarray | None = None):
    """Observed inner products and their exact mean and variance over phase-randomised ``R``.

    For each column ``j`` of ``R`` and ``v`` of ``E``: ``T = R_j' E_jv`` and the moments of
    ``T_d = (P R_j)' E_jv`` over phase randomisations ``P`` (uniform independent phase per
    bin, each run on its own), with ``E_jv = E_v + beta_jv R_j`` when ``beta`` is given (the
    conditional test: ``E`` the full model's residual, ``beta`` the full model's
    coefficients, so ``E_jv`` is the residual of the model without atom ``j``).

    Parameters
    ----------
    R : ndarray of shape (n_volumes, k)
        The moved regressors.
    E : ndarray of shape (n_volumes, n_series)
        The series the draws are projected on.
    runs : list of int, optional
        Run lengths (default one run).
    beta : ndarray of shape (k, n_series), optional
    bin_weights : ndarray of shape (n_bins, k), optional
        Each bin's variance contribution multiplied by this (its square for the fourth
        cumulant): the residual's power at that bin taken as larger by that factor
        (:func:`leverage_inflation`).
    fourth : bool
        Also return the draws' fourth cumulant, ``-3/8 sum_f A_f^4`` with
        ``A_f = s_f |R_jf| |E_jf|`` (each random bin is ``A_f cos(phase)``).

    Returns
    -------
    T, mean, var : ndarray of shape (k, n_series)
    kappa4 : ndarray of shape (k, n_series)
        Only with ``fourth``.
    """
    R = np.asarray(R, np.float64)
    E = np.asarray(E, np.float64)
    if R.ndim != 2 or E.ndim != 2 or R.shape[0] != E.shape[0]:
        raise ShapeError(f"'R' must be (n_volumes, k) and 'E' (n_volumes, n_series); got {R.shape} and {E.shape}.")
    runs = [R.shape[0]] if runs is None else [int(m) for m in runs]
    FR, scale, fixed = run_spectra(R, runs)
    FE = run_spectra(E, runs)[0]
    rand = ~fixed
    bw = np.ones(FR.shape) if bin_weights is None else np.asarray(bin_weights, np.float64)
    a = np.where(rand, scale * scale / 2.0, 0.0)[:, None] * bw  # each random bin's variance weight, per atom
    P2 = FR.real ** 2 + FR.imag ** 2  # (nf, k)
    var = (a * P2).T @ (FE.real ** 2 + FE.imag ** 2)
    sf = np.where(fixed, scale, 0.0)
    mean = (sf[:, None] * FR).T.real @ FE.real + (sf[:, None] * FR).T.imag @ FE.imag
    T = R.T @ E
    if beta is not None:
        beta = np.asarray(beta, np.float64)
        # |E + b R|^2 = |E|^2 + b^2 |R|^2 + 2 b Re(E conj(R)), summed with a |R|^2
        cross = (a * P2 * FR).T
        var = var + beta ** 2 * (a * P2 * P2).sum(0)[:, None] \
            + 2 * beta * (cross.real @ FE.real + cross.imag @ FE.imag)
        mean = mean + beta * (sf[:, None] * P2).sum(0)[:, None]
        T = T + beta * (R * R).sum(0)[:, None]
    if not fourth:
        return T, mean, np.maximum(var, 0.0)
    w4 = np.where(rand, scale ** 4, 0.0)[:, None] * bw * bw * P2 * P2  # (nf, k)
    A = FE.real ** 2 + FE.imag ** 2
    fourth_sum = w4.T @ (A * A)
    if beta is not None:
        # sum_f w4 |E + b R|^4 with |E + b R|^2 = A + b^2 B + 2 b C (B = |R|^2, C = Re(E conj R)),
        # expanded so that every term is one product (no array of atoms x bins x series)
        Rr, Ri, Er, Ei = FR.real, FR.imag, FE.real, FE.imag
        cc = (w4 * Rr * Rr).T @ (Er * Er) + 2 * (w4 * Rr * Ri).T @ (Er * Ei) + (w4 * Ri * Ri).T @ (Ei * Ei)
        ab = (w4 * P2).T @ A
        ac = (w4 * Rr).T @ (A * Er) + (w4 * Ri).T @ (A * Ei)
        bc = (w4 * P2 * Rr).T @ Er + (w4 * P2 * Ri).T @ Ei
        b2 = beta * beta
        fourth_sum = (fourth_sum + b2 * b2 * (w4 * P2 * P2).sum(0)[:, None] + 4 * b2 * cc + 2 * b2 * ab
                      + 4 * beta * ac + 4 * b2 * beta * bc)
    return T, mean, np.maximum(var, 0.0), -0.375 * fourth_sum


def moved_norm_share(R: np.ndarray, basis: np.ndarray, runs=None) -> np.ndarray:
    """``E||M_-j P r_j||^2 / ||r_j||^2``: the share of a phase-randomised unique part left once
    the other regressors are projected out again.

    ``r_j`` is orthogonal to the other atoms and the nuisance; a phase-randomised copy is not,
    and the conditional test projects that overlap out (the draw ``u = M_-j P r_j``), so a
    draw's inner product with a residual is as if made with a shorter regressor. Comparing
    ``T / ||r_j||`` with ``u' e / ||u||`` (what the association test's statistic does; used by
    :mod:`napari_brainorg.networks.sensitivity`) scales the draws' spread by ``1 / sqrt`` of
    this share.

    Parameters
    ----------
    R : ndarray of shape (n_volumes, k)
        The unique parts ``r_j``.
    basis : ndarray of shape (n_volumes, p)
        Orthonormal basis of the full model (nuisance and every atom).
    runs : list of int, optional

    Returns
    -------
    ndarray of shape (k,)
    """
    runs = [R.shape[0]] if runs is None else [int(m) for m in runs]
    FR, scale, fixed = run_spectra(np.asarray(R, np.float64), runs)
    FB = run_spectra(np.asarray(basis, np.float64), runs)[0]
    a = np.where(~fixed, scale * scale / 2.0, 0.0)[:, None]
    P2 = FR.real ** 2 + FR.imag ** 2
    in_span = (a * P2 * (FB.real ** 2 + FB.imag ** 2).sum(1)[:, None]).sum(0)  # E||H P r_j||^2
    norm2 = (np.asarray(R, np.float64) ** 2).sum(0)
    own = (a * P2 * P2).sum(0) / np.where(norm2 > 0, norm2, 1.0)  # E[((P r_j)' r_j)^2] / ||r_j||^2
    return np.clip(1.0 - (in_span - own) / np.where(norm2 > 0, norm2, 1.0), 1e-6, 1.0)


def leverage_inflation(R: np.ndarray, basis: np.ndarray, runs=None, max_leverage: float = 0.9) -> np.ndarray:
    """Per bin and atom, ``1 / (1 - h_f)``: how much power a fit on the other regressors takes
    from a residual at frequency ``f``, undone.

    The residual ``e_j`` the draws are projected on has lost, to the fit of the other atoms
    and the nuisance, the share ``h_f = ||H_-j phi_f||^2`` of its power at each frequency
    (``phi_f`` the unit Fourier vector, ``H_-j`` the projection on the other regressors):
    the part a phase-randomised copy of atom ``j`` would meet, since the copy is no longer
    orthogonal to them. Dividing the residual's power by ``1 - h_f`` gives the draws the
    spread they have when every atom is phase-randomised together (the stimulus null of a
    map), while a signal the other atoms really carry stays out of it.

    Parameters
    ----------
    R : ndarray of shape (n_volumes, k)
        The unique parts ``r_j``.
    basis : ndarray of shape (n_volumes, p)
        Orthonormal basis of the full model (nuisance and every atom).
    runs : list of int, optional
    max_leverage : float
        ``h_f`` is clipped to it.

    Returns
    -------
    ndarray of shape (n_bins, k)
    """
    runs = [R.shape[0]] if runs is None else [int(m) for m in runs]
    FR, scale, _ = run_spectra(np.asarray(R, np.float64), runs)
    FB = run_spectra(np.asarray(basis, np.float64), runs)[0]
    length = np.concatenate([np.full(m // 2 + 1, float(m)) for m in runs])[:, None]
    norm2 = (np.asarray(R, np.float64) ** 2).sum(0)[None]
    full = (FB.real ** 2 + FB.imag ** 2).sum(1)[:, None] / length  # ||H phi_f||^2 of the full model
    own = (FR.real ** 2 + FR.imag ** 2) / (length * np.where(norm2 > 0, norm2, 1.0))  # |<r_j / ||r_j||, phi_f>|^2
    return 1.0 / (1.0 - np.clip(full - own, 0.0, max_leverage))


def cornish_fisher_z(x: np.ndarray, excess_kurtosis: np.ndarray) -> np.ndarray:
    """The normal z with the tail probability of a standardised value ``x`` of a symmetric
    distribution with this excess kurtosis (first-order Cornish–Fisher, inverted).

    ``z = x - g (x^3 - 3x) / 24``; with ``g <= 0`` (a sum of random-phase terms is
    platykurtic: its tails are lighter than the normal's) this raises ``|z|`` in the tails,
    so thresholds are not conservative there, and it is monotone. Positive ``g`` is not
    used (clipped to 0): the correction could then turn the map's order around.
    """
    g = np.minimum(np.asarray(excess_kurtosis, np.float64), 0.0)
    x = np.asarray(x, np.float64)
    return (x - g * (x ** 3 - 3 * x) / 24.0).astype(np.float32)


class CalibratedMaps(NamedTuple):
    """Stimulus-calibrated group maps from :func:`stimulus_calibrated_maps`.

    Attributes
    ----------
    z : ndarray of shape (k, n_voxels), float32
        ``(T - E[T_d]) / sd[T_d]``: the atom's lock with the subjects' mean series against
        the same for phase-randomised atoms (0 where the voxel has no variance).
    effect : ndarray of shape (k, n_voxels), float32
        The atom's coefficient in the fit of the subjects' mean standardised series on
        all atoms (SD of the voxel per SD of the atom).
    """

    z: np.ndarray
    effect: np.ndarray


def _orthonormal(N: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(N)
    d = np.abs(np.diag(r))
    return q[:, d > 1e-10 * max(d.max(), 1e-300)]


def _standardised_mean(fmri: list, Q: np.ndarray, cols: slice) -> np.ndarray:
    """The subjects' mean of their fMRI on ``cols``, nuisance (``Q``) projected out and each
    voxel scaled to unit residual variance: (n_volumes, n_cols) float64.

    ``mean_s M Y_s / sd_s = (sum_s Y_s / sd_s - Q sum_s Q' Y_s / sd_s) / S``: no residual
    is formed per subject."""
    n = Q.shape[0]
    total = np.zeros((n, cols.stop - cols.start))
    proj = np.zeros((Q.shape[1], cols.stop - cols.start))
    for Y in fmri:
        Yc = np.asarray(Y[:, cols], np.float64)
        QtY = Q.T @ Yc
        var_s = np.maximum((Yc * Yc).sum(0) - (QtY * QtY).sum(0), 0.0) / n
        inv = np.where(var_s > 1e-12 * np.maximum((Yc * Yc).sum(0) / n, 1e-300), 1.0 / np.sqrt(var_s), 0.0)
        total += Yc * inv
        proj += QtY * inv
    return (total - Q @ proj) / len(fmri)


def stimulus_calibrated_maps(atoms, fmri, *, nuisance=None, runs=None, chunk_voxels: int = 20_000,
                             cancel=None, memo: dict | None = None) -> CalibratedMaps:
    """Group atom maps whose z is calibrated against phase-randomised atoms (module docstring).

    Parameters
    ----------
    atoms : array of shape (n_volumes, k)
        The atoms' time courses (shared by every subject).
    fmri : sequence of arrays of shape (n_volumes, n_voxels)
        One per subject.
    nuisance : array of shape (n_volumes, n_nuisance), optional
        Drifts and confounds, projected out of the atoms and the fMRI (a constant is
        always included).
    runs : list of int, optional
        Run (story) lengths: each run's phases are randomised on its own.
    chunk_voxels : int
        Voxels per block (memory: about ``n_subjects``-independent ``16 n k`` bytes per voxel).
    cancel : threading.Event, optional
    memo : dict, optional
        Keeps each block's standardised group mean of the fMRI (which does not depend on
        the atoms) for the next call with the same ``fmri``, ``nuisance`` and
        ``chunk_voxels``: the caller's to key by those and to bound (``16 n`` bytes per voxel).

    Returns
    -------
    CalibratedMaps
    """
    from .._progress import check_cancel

    X = np.asarray(atoms, np.float64)
    fmri = list(fmri)
    if X.ndim != 2 or not fmri:
        raise ShapeError(f"'atoms' must be (n_volumes, k) and 'fmri' a non-empty list; got atoms {X.shape}.")
    n, k = X.shape
    for s, Y in enumerate(fmri):
        if Y.ndim != 2 or Y.shape[0] != n or Y.shape[1] != fmri[0].shape[1]:
            raise ShapeError(f"Subject {s}'s fMRI must be (n_volumes={n}, n_voxels={fmri[0].shape[1]}); "
                             f"got {Y.shape}.")
    N = np.ones((n, 1)) if nuisance is None else np.column_stack([np.ones(n), np.asarray(nuisance, np.float64)])
    Q = _orthonormal(N)
    Xr = X - Q @ (Q.T @ X)
    sd = Xr.std(0)
    Xr = Xr / np.where(sd > 0, sd, 1.0)
    Ginv = np.linalg.pinv(Xr.T @ Xr, hermitian=True)
    d = np.diag(Ginv)
    R = Xr @ Ginv / np.where(d > 0, d, np.inf)[None]  # unique parts r_j = M_-j x_j
    # the residual's power the other atoms' fit took, given back: the draws' spread when
    # every atom is phase-randomised together
    inflation = leverage_inflation(R, _orthonormal(np.column_stack([Q, Xr])), runs)
    n_vox = fmri[0].shape[1]
    z = np.zeros((k, n_vox), np.float32)
    effect = np.zeros((k, n_vox), np.float32)
    for start in range(0, n_vox, int(chunk_voxels)):
        check_cancel(cancel)
        cols = slice(start, min(n_vox, start + int(chunk_voxels)))
        ybar = None if memo is None else memo.get(start)
        if ybar is None:
            ybar = _standardised_mean(fmri, Q, cols)
            if memo is not None:
                memo[start] = ybar
        beta = Ginv @ (Xr.T @ ybar)
        resid = ybar - Xr @ beta
        T, mean, var, kappa4 = phase_null_moments(R, resid, runs, beta=beta, fourth=True, bin_weights=inflation)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(var > 0, (T - mean) / np.sqrt(var), 0.0)
            excess = np.where(var > 0, kappa4 / (var * var), 0.0)
        z[:, cols] = cornish_fisher_z(x, excess)
        effect[:, cols] = beta
    return CalibratedMaps(z, effect)
