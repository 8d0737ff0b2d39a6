"""The stimulus null of the association test of :mod:`napari_brainorg.networks.association`.

Every subject's regression of its network time series on the atoms
(:class:`SubjectFits`) gives the group statistic (:func:`group_statistic`); the null
is the same statistic after each draw of the atoms' time courses, one phase
randomisation or circular shift shared by every subject (:class:`StimulusNull`), and
the p-values count the draws at or beyond the observed statistic, in two stages
(:func:`two_stage_pvalues`). A draw's refit is never done by refitting: every inner
product a draw needs is a sum over real-FFT bins of cross-spectra computed once, so a
batch of draws is one matrix product. Every run (story) has its own bins, one run after
the other, so a draw turns each run's phases on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._progress import check_cancel, report
from ..encoding.inference import between_subject_spectrum, run_null_phases

__all__ = ["StimulusNull", "SubjectFits", "group_statistic", "two_stage_pvalues"]


def _rfft_weights(m: int) -> np.ndarray:
    """Weights of the real FFT's bins in an inner product: ``a' b = sum_f w_f Re(A_f conj(B_f)) / m``."""
    w = np.full(m // 2 + 1, 2.0)
    w[0] = 1.0
    if m % 2 == 0:
        w[-1] = 1.0
    return w


def _bounds(runs) -> list[tuple[int, int]]:
    ends = np.cumsum(runs)
    return [(int(e - m), int(e)) for e, m in zip(ends, runs)]


def _run_rfft(A: np.ndarray, runs, axis: int) -> np.ndarray:
    """Each run's real FFT along ``axis`` (the volumes), the runs' bins concatenated."""
    A = np.moveaxis(np.asarray(A), axis, 0)
    parts = [np.fft.rfft(A[a:b], axis=0) for a, b in _bounds(runs)]
    return np.moveaxis(np.concatenate(parts, axis=0), 0, axis)


@dataclass
class SubjectFits:
    """Every subject's network time series regressed on the atoms, drifts and confounds removed.

    Attributes
    ----------
    Q : ndarray of shape (n_volumes, n_nuisance)
        Orthonormal basis of the drifts and confounds.
    Xr : ndarray of shape (n_volumes, k)
        The atoms with ``Q`` projected out, each of unit SD.
    R : ndarray of shape (n_volumes, k)
        Regressors whose inner product with a series gives each atom's coefficient times
        ``norm2``: the atoms' unique parts ``r_j`` (``Xr`` itself for the marginal
        contribution).
    norm2 : ndarray of shape (k,)
    ys : ndarray of shape (n_subjects, n_volumes, n_networks)
        The subjects' network time series.
    coef : ndarray of shape (n_subjects, k, n_networks)
        Every subject's coefficient of each atom on each network.
    resid : ndarray of shape (n_subjects, n_volumes, n_networks)
        The residual of the full model (unique contribution), or ``ys`` (marginal).
    Ginv : ndarray of shape (k, k) or None
        Inverse Gram matrix of ``Xr`` (unique contribution), else None.
    effect : ndarray of shape (k, n_networks)
        The subjects' mean coefficient.
    marginal : ndarray of shape (k, n_networks)
        Each atom's correlation with the subjects' mean network time series.
    """

    Q: np.ndarray
    Xr: np.ndarray
    R: np.ndarray
    norm2: np.ndarray
    ys: np.ndarray
    coef: np.ndarray
    resid: np.ndarray
    Ginv: np.ndarray | None
    effect: np.ndarray
    marginal: np.ndarray


def group_statistic(b: np.ndarray, method: str) -> np.ndarray:
    """The group statistic of per-subject values in z form.

    Parameters
    ----------
    b : ndarray of shape (..., n_subjects, k, n_networks)
    method : {"fixed", "random"}
        ``"fixed"``: the subjects' sum over ``sqrt(n_subjects)`` (Stouffer-like);
        ``"random"``: the one-sample t over subjects (0 where the subjects agree exactly).

    Returns
    -------
    ndarray of shape (..., k, n_networks)
    """
    S = b.shape[-3]
    mean = b.mean(-3)
    if method == "fixed":
        return mean * np.sqrt(S)
    sdv = b.std(-3, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sdv > 0, mean / (sdv / np.sqrt(S)), 0.0)


@dataclass
class _CrossSpectra:
    """Cross-spectra of the moved regressors with what every draw's refit reads (bin-weighted)."""

    cross: np.ndarray  # (nf, S, k, n_net) complex64: moved regressors x (y or the residual)
    cross_mean: np.ndarray | None  # (nf, k, n_net): its mean over subjects, for the conditional test
    cross_q: np.ndarray  # (nf, k, n_nuisance): moved regressors x nuisance
    cross_x: np.ndarray | None  # (nf, k, k): moved regressors x atoms
    FQ: np.ndarray | None  # (nf, n_nuisance): the nuisance's spectra, for the conditional test
    FX: np.ndarray | None  # (nf, k): the atoms' spectra
    weighted_spectrum: np.ndarray | None  # (nf, n_net): between-subject spectrum x bin weights


class StimulusNull:
    """The group statistic of every atom x network, for the observed atoms and for draws of them.

    A draw ``P_d`` (per-bin phase rotations, the same for every subject) moves the
    regressors of ``moved`` and every subject is refitted:

    - ``"all"``: every atom moves together; the Gram matrix is unchanged, so the
      refitted coefficients are ``G^-1 (P_d X)' y``, on the observed scale;
    - ``"conditional"``: the tested atom's unique part ``r_j`` is replaced by
      ``u = M_-j P_d r_j``, the other atoms and the nuisance unchanged; the statistic is
      the subjects' mean ``u' y_s`` over ``se(u)``, from the between-subject spectrum;
    - ``"unique"``: ``P_d r_j`` against the full model's residual (ter Braak), in z form
      ``(P_d r_j)' e / ||M P_d r_j||``, and the group statistic over subjects.

    Parameters
    ----------
    fits : SubjectFits
    runs : list of int
        Run lengths, adding up to ``n_volumes``.
    moved : {"all", "conditional", "unique"}
    method : {"fixed", "random"}
        The group model (:func:`group_statistic`; the conditional test has its own).

    Notes
    -----
    Each ``_refit_*`` method takes one batch's per-bin rotations ``rot`` of shape
    (batch, n_bins), the atoms tested ``rows`` and their flattened cross-spectra
    (``_operands``), and returns the batch's statistics, of shape (batch, kr, n_networks).
    """

    def __init__(self, fits: SubjectFits, runs, moved: str, method: str):
        self.fits, self.runs, self.moved, self.method = fits, runs, moved, method
        self.conditional = moved == "conditional"
        # each run's bins weighted as in an inner product, so that a' b = sum_f scale_f Re(A_f conj(B_f))
        self.scale = np.concatenate([_rfft_weights(m) / m for m in runs])[:, None]  # (nf, 1)
        self.FR = _run_rfft(fits.Xr if moved == "all" else fits.R, runs, axis=0)  # (nf, k)
        self.spectrum = None
        if self.conditional:
            # the subjects' mean effect over its standard error from the between-subject
            # deviations' spectrum: a statistic of the moved regressor alone (no per-draw
            # between-subject SD, which the shared stimulus-locked signal would inflate)
            self.spectrum = np.concatenate([between_subject_spectrum(fits.ys[:, a:b])
                                            for a, b in _bounds(runs)])  # (nf, n_net)
        self._spectra = None

    def observed(self) -> np.ndarray:
        """The group statistic of the observed atoms, of shape (k, n_networks)."""
        f = self.fits
        if self.conditional:
            S = f.ys.shape[0]
            se_obs = np.sqrt((self.scale * np.abs(self.FR) ** 2).T @ self.spectrum / S)  # (k, n_net)
            return (f.coef * f.norm2[None, :, None]).mean(0) / np.maximum(se_obs, 1e-300)
        # every subject's value in z form, r_j' y / ||r_j||: under white noise its null
        # spread equals that of a draw, (P r_j)' e / ||M P r_j|| (M: residual-forming matrix
        # of the model), whose norm shrinks where the other regressors explain the moved part
        return group_statistic(f.coef * np.sqrt(f.norm2)[None, :, None], self.method)

    def _cross_spectra(self) -> _CrossSpectra:
        """Computed once, at the first draws: what the refits of every draw read."""
        f, runs, scale, FR = self.fits, self.runs, self.scale, self.FR
        joint = self.moved == "all"
        FE = _run_rfft(f.ys if joint else f.resid, runs, axis=1)  # (S, nf, n_net)
        cross = (np.einsum("fk,sfn->fskn", FR, np.conj(FE)) * scale[:, :, None, None]).astype(np.complex64)
        FQ = _run_rfft(f.Q, runs, axis=0)
        cross_q = np.einsum("fk,fq->fkq", FR, np.conj(FQ)) * scale[:, :, None]
        cross_x = FX = None
        if f.Ginv is not None and not joint:
            FX = _run_rfft(f.Xr, runs, axis=0)
            cross_x = np.einsum("fk,fi->fki", FR, np.conj(FX)) * scale[:, :, None]
        return _CrossSpectra(
            cross=cross, cross_mean=cross.mean(1) if self.conditional else None,  # the statistic reads the mean
            cross_q=cross_q, cross_x=cross_x, FQ=FQ if self.conditional else None, FX=FX,
            weighted_spectrum=(scale * self.spectrum).astype(np.float64) if self.conditional else None)

    def _operands(self, rows: np.ndarray) -> tuple:
        """The cross-spectra of the atoms ``rows``, flattened for one matrix product per batch of draws."""
        cs, nf = self._spectra, self.scale.shape[0]
        c = cs.cross if self.moved == "all" else cs.cross_mean[:, rows] if self.conditional else cs.cross[:, :, rows]
        return (c.reshape(nf, -1), cs.cross_q[:, rows].reshape(nf, -1),
                None if cs.cross_x is None else cs.cross_x[:, rows].reshape(nf, -1))

    def _refit_all(self, rot: np.ndarray, rows: np.ndarray, operands: tuple) -> np.ndarray:
        """Every atom moved together: the Gram matrix is unchanged, so the refitted
        coefficients are ``G^-1 (P X)' y``, on the observed scale."""
        f, (c_sub, _, _) = self.fits, operands
        num = (rot.astype(np.complex64) @ c_sub).real.reshape((len(rot),) + f.coef.shape)
        if f.Ginv is not None:
            num = np.einsum("jl,bsln->bsjn", f.Ginv[rows].astype(np.float32), num)
        else:
            num = num[:, :, rows]
        return group_statistic(num * (np.sqrt(f.norm2[rows]) if f.Ginv is not None else 1 / np.sqrt(f.norm2[rows]))
                               [None, None, :, None].astype(np.float32), self.method)

    def _refit_conditional(self, rot: np.ndarray, rows: np.ndarray, operands: tuple) -> np.ndarray:
        """The tested atom's unique part moved, every subject refitted with the other atoms unchanged."""
        f, cs, (c_sub, cq_sub, cx_sub) = self.fits, self._spectra, operands
        b_n, kr, (k, n_net), S = len(rot), len(rows), f.effect.shape, f.ys.shape[0]
        # the moved regressor u = M_-j P r_j replaces atom j's unique part; a
        # subject's value u' e_s with e_s = M_-j y_s = e_full + b_sj r_j, so the
        # subjects' mean is (P r_j)' mean(e) + mean(b_j) (P r_j)' r_j, where
        # (P r_j)' r_j = (G^-1 c)_j ||r_j||^2 with c = X' P r_j
        num = (rot.astype(np.complex64) @ c_sub).real.reshape(b_n, kr, n_net)
        cq = (rot @ cq_sub).real.reshape(b_n, kr, -1)  # Q' P r_j
        c = (rot @ cx_sub).real.reshape(b_n, kr, k)  # X' P r_j
        g = (c * f.Ginv[rows][None]).sum(-1) * f.norm2[rows][None]
        num = num + f.effect[rows][None] * g[..., None]
        # u's spectrum: P r_j less its fit on the drifts and on the other atoms,
        # gamma = G_-j^-1 c_-j = G^-1 c - (G^-1 c)_j G^-1 e_j / (G^-1)_jj
        gam = c @ f.Ginv - g[..., None] * f.Ginv[rows][None]
        fu = self.FR[:, rows].T[None] * rot[:, None, :] - cq @ cs.FQ.T - gam @ cs.FX.T  # (b, kr, nf)
        se = np.sqrt(np.maximum((fu.real ** 2 + fu.imag ** 2) @ cs.weighted_spectrum, 1e-300) / S)
        return num / se

    def _refit_unique(self, rot: np.ndarray, rows: np.ndarray, operands: tuple) -> np.ndarray:
        """The tested atom's unique part moved against the full model's residual (ter Braak)."""
        f, (c_sub, cq_sub, cx_sub) = self.fits, operands
        b_n, kr, (S, k, n_net) = len(rot), len(rows), f.coef.shape
        num = (rot.astype(np.complex64) @ c_sub).real.reshape(b_n, S, kr, n_net)
        # ||M P r_j||^2 = ||r_j||^2 - ||Q' P r_j||^2 - c' G^-1 c, c = X' P r_j
        cq = (rot @ cq_sub).real.reshape(b_n, kr, -1)
        moved2 = f.norm2[rows][None] - (cq * cq).sum(-1)
        if cx_sub is not None:
            c = (rot @ cx_sub).real.reshape(b_n, kr, k)
            moved2 = moved2 - np.einsum("dji,il,djl->dj", c, f.Ginv, c)
        moved2 = np.maximum(moved2, 1e-6 * f.norm2[rows][None])
        return group_statistic(num / np.sqrt(moved2)[:, None, :, None].astype(np.float32), self.method)

    def exceedances(self, phases: np.ndarray, rows: np.ndarray, observed: np.ndarray, *, batch_size: int,
                    label: str, progress=None, cancel=None) -> tuple[np.ndarray, np.ndarray]:
        """Null draws at or beyond the observed statistic of the atoms ``rows``, in each direction.

        Parameters
        ----------
        phases : ndarray of shape (n_draws, n_bins)
            Per-bin phase rotations of each draw (:func:`~napari_brainorg.encoding.inference.run_null_phases`).
        rows : ndarray of int, shape (kr,)
            The atoms tested.
        observed : ndarray of shape (k, n_networks)
            From :meth:`observed`.
        batch_size : int
            Draws per matrix product.
        label : str
            Progress stage.

        Returns
        -------
        hi, lo : ndarray of shape (kr, n_networks), int64
            Draws with a statistic ``>=`` (``hi``) or ``<=`` (``lo``) the observed one,
            within a relative tolerance of 1e-6 (ties are ties).
        """
        if self._spectra is None:
            self._spectra = self._cross_spectra()
        refit = {"all": self._refit_all, "conditional": self._refit_conditional,
                 "unique": self._refit_unique}[self.moved]
        operands = self._operands(rows)
        obs = observed[rows]
        tl = 1e-6 * np.maximum(1.0, np.abs(obs))
        hi = np.zeros(obs.shape, np.int64)
        lo = np.zeros(obs.shape, np.int64)
        for start in range(0, len(phases), batch_size):
            check_cancel(cancel)
            ph = phases[start:start + batch_size]
            stat = refit(np.exp(1j * ph), rows, operands)
            hi += (stat >= obs[None] - tl).sum(0)
            lo += (stat <= obs[None] + tl).sum(0)
            report(progress, label, start + len(ph), len(phases))
        return hi, lo


def _refinement_generator(random_state) -> np.random.Generator:
    """The generator of the further draws: never the first draws again."""
    if isinstance(random_state, np.random.Generator) or random_state is None:
        return np.random.default_rng(random_state)  # a Generator goes on past the first draws
    return np.random.default_rng([int(random_state), 1])


def two_stage_pvalues(model: StimulusNull, observed: np.ndarray, *, null: str, n_permutations: int,
                      n_refine: int, min_shift: int | None, random_state, batch_size: int, stage: str,
                      progress=None, cancel=None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One-sided Monte Carlo p-values of every atom x network, with more draws for the cells at the floor.

    ``p = (1 + #{null >= observed}) / (1 + n_draws)`` ("activated"; ``<=`` for
    "deactivated"). A cell that none of the first draws reached sits at the floor
    ``1 / (1 + n_draws)``; with ``null="phase"`` its atom gets ``n_refine`` further draws
    and the cell ``p`` over all draws, every other cell keeping its first p (a two-stage
    Monte Carlo p: ``P(p <= a) <= a`` still holds, as for Besag & Clifford's sequential p).

    Parameters
    ----------
    model : StimulusNull
    observed : ndarray of shape (k, n_networks)
    null : {"phase", "shift"}
    n_permutations, n_refine : int
        First and further draws (circular shifts: at most the distinct ones). No first
        draws: no test (p NaN).
    min_shift : int or None
    random_state : int, numpy Generator or None
    batch_size : int
    stage : str
        Progress stage.

    Returns
    -------
    p_hi, p_lo : ndarray of shape (k, n_networks)
        p of a positive, of a negative effect.
    used, refined : int
        First draws made, further draws made.
    """
    if n_permutations == 0:
        return np.full(observed.shape, np.nan), np.full(observed.shape, np.nan), 0, 0
    k = observed.shape[0]
    runs = model.runs
    phases = run_null_phases(null, runs, n_permutations, min_shift=min_shift, random_state=random_state)
    used = phases.shape[0]
    report(progress, stage, 0, used)
    exceed_hi, exceed_lo = model.exceedances(phases, np.arange(k), observed, batch_size=batch_size, label=stage,
                                             progress=progress, cancel=cancel)
    p_hi = (1.0 + exceed_hi) / (1.0 + used)
    p_lo = (1.0 + exceed_lo) / (1.0 + used)
    floor_hi, floor_lo = exceed_hi == 0, exceed_lo == 0
    rows = np.flatnonzero(floor_hi.any(1) | floor_lo.any(1))
    refined = 0
    if null == "phase" and n_refine > 0 and rows.size:
        more = run_null_phases(null, runs, n_refine, random_state=_refinement_generator(random_state))
        refined = more.shape[0]
        label = f"{stage} (more draws for {rows.size} atoms at the floor)"
        report(progress, label, 0, refined)
        hi2, lo2 = model.exceedances(more, rows, observed, batch_size=batch_size, label=label,
                                     progress=progress, cancel=cancel)
        for p, floor, extra in ((p_hi, floor_hi, hi2), (p_lo, floor_lo, lo2)):
            sub = floor[rows]
            p[rows] = np.where(sub, (1.0 + extra) / (1.0 + used + refined), p[rows])
    return p_hi, p_lo, used, refined
