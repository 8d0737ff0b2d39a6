"""The stimulus null of the association test of :mod:`napari_brainorg.networks.association`.

Every subject's regression of its network time series on the atoms
(:class:`SubjectFits`) gives the group statistic (:func:`group_statistic`); the null
is the same statistic after each draw of the atoms' time courses, one phase
randomisation or circular shift shared by every subject (:class:`StimulusNull`), and
the p-values count the draws at or beyond the observed statistic
(:func:`monte_carlo_pvalues`): a cell stops drawing once ``h`` draws reached it (Besag &
Clifford's sequential p), the cells that none of the first draws reached get further
draws. A draw's refit is never done by refitting: every inner product a draw needs is a
sum over real-FFT bins of cross-spectra computed once, so a batch of draws is one matrix
product. Every run (story) has its own bins, one run after
the other, so a draw turns each run's phases on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._progress import check_cancel, report
from ..encoding.inference import between_subject_spectrum, run_null_phases

__all__ = ["DRAW_BLOCK", "MonteCarloP", "NullDraws", "StimulusNull", "SubjectFits", "group_statistic",
           "monte_carlo_pvalues"]

#: Phase draws made together from one generator, seeded by the seed and the block's index: draw
#: ``d`` is the same whatever the batches, the threads or the cells still drawing.
DRAW_BLOCK = 1000


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
    B_re: np.ndarray | None = None  # (n_nuisance + k, nf) float32: real part of [FQ, FX]', for the conditional test
    B_im: np.ndarray | None = None  # (n_nuisance + k, nf) float32: its imaginary part


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
    (batch, n_bins) (complex; the conditional refit their real and imaginary parts), the
    atoms tested ``rows`` and the flattened cross-spectra of these
    atoms and the networks ``cols`` (``_operands``), and returns the batch's statistics, of
    shape (batch, kr, nc): a draw is computed once for every cell still drawing.
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
        cross_mean = FB = None
        if self.conditional:
            FB = np.concatenate([FQ, FX], axis=1)  # what u is fitted on: the nuisance, then the atoms
            # the statistic reads the subjects' mean, in double precision
            cross_mean = np.einsum("fk,fn->fkn", FR, np.conj(FE.mean(0))) * scale[:, :, None]
        return _CrossSpectra(
            cross=cross, cross_mean=cross_mean,
            cross_q=cross_q, cross_x=cross_x, FQ=FQ if self.conditional else None, FX=FX,
            weighted_spectrum=(scale * self.spectrum).astype(np.float64) if self.conditional else None,
            B_re=None if FB is None else np.ascontiguousarray(FB.real.T, np.float32),
            B_im=None if FB is None else np.ascontiguousarray(FB.imag.T, np.float32))

    def _operands(self, rows: np.ndarray, cols: np.ndarray) -> tuple:
        """The cross-spectra of the atoms ``rows`` and networks ``cols``, flattened for one matrix
        product per batch of draws, and ``cols``."""
        cs, nf = self._spectra, self.scale.shape[0]
        if self.conditional:
            c = np.concatenate([cs.cross_mean[:, rows][..., cols].reshape(nf, -1),
                                np.concatenate([cs.cross_q[:, rows], cs.cross_x[:, rows]], axis=2).reshape(nf, -1)],
                               axis=1)
            return np.concatenate([c.real, c.imag], axis=0), cols
        c = cs.cross[..., cols] if self.moved == "all" else cs.cross[:, :, rows][..., cols]
        return (c.reshape(nf, -1), cs.cross_q[:, rows].reshape(nf, -1),
                None if cs.cross_x is None else cs.cross_x[:, rows].reshape(nf, -1), cols)

    def _refit_all(self, rot: np.ndarray, rows: np.ndarray, operands: tuple) -> np.ndarray:
        """Every atom moved together: the Gram matrix is unchanged, so the refitted
        coefficients are ``G^-1 (P X)' y``, on the observed scale."""
        f, (c_sub, _, _, cols) = self.fits, operands
        num = (rot.astype(np.complex64) @ c_sub).real.reshape((len(rot),) + f.coef.shape[:2] + (len(cols),))
        if f.Ginv is not None:
            num = np.einsum("jl,bsln->bsjn", f.Ginv[rows].astype(np.float32), num)
        else:
            num = num[:, :, rows]
        return group_statistic(num * (np.sqrt(f.norm2[rows]) if f.Ginv is not None else 1 / np.sqrt(f.norm2[rows]))
                               [None, None, :, None].astype(np.float32), self.method)

    def _refit_conditional(self, rot: np.ndarray, rows: np.ndarray, operands: tuple) -> np.ndarray:
        """The tested atom's unique part moved, every subject refitted with the other atoms unchanged.

        In real arithmetic: ``Re(rot @ C) = [Re rot, -Im rot] @ [Re C; Im C]``, one product for
        every inner product a draw needs (the moved regressors with the residual's mean, the
        nuisance and the atoms), and u's spectrum from real products of its real and
        imaginary parts."""
        f, cs, (stacked, cols) = self.fits, self._spectra, operands
        cos, sin = rot  # the draws' rotations, real and imaginary parts
        b_n, kr, k, n_net, S = len(cos), len(rows), f.effect.shape[0], len(cols), f.ys.shape[0]
        n_q = cs.FQ.shape[1]
        prods = np.concatenate([cos, -sin], axis=1) @ stacked
        # the moved regressor u = M_-j P r_j replaces atom j's unique part; a
        # subject's value u' e_s with e_s = M_-j y_s = e_full + b_sj r_j, so the
        # subjects' mean is (P r_j)' mean(e) + mean(b_j) (P r_j)' r_j, where
        # (P r_j)' r_j = (G^-1 c)_j ||r_j||^2 with c = X' P r_j
        num = prods[:, :kr * n_net].reshape(b_n, kr, n_net)
        beta = prods[:, kr * n_net:].reshape(b_n, kr, n_q + k)  # Q' P r_j, then c = X' P r_j
        c = beta[..., n_q:]
        g = (c * f.Ginv[rows][None]).sum(-1) * f.norm2[rows][None]
        num = num + f.effect[rows][:, cols][None] * g[..., None]
        # u's spectrum: P r_j less its fit on the drifts and on the other atoms,
        # gamma = G_-j^-1 c_-j = G^-1 c - (G^-1 c)_j G^-1 e_j / (G^-1)_jj
        beta[..., n_q:] = c @ f.Ginv - g[..., None] * f.Ginv[rows][None]
        # the denominator, a weighted sum of squares (no cancellation), in single precision:
        # its relative error ~1e-6 moves no draw across an observed statistic in practice
        fr = self.FR[:, rows].T[None]  # (1, kr, nf)
        fr_re, fr_im = fr.real.astype(np.float32), fr.imag.astype(np.float32)
        rr, ri = cos.astype(np.float32)[:, None, :], sin.astype(np.float32)[:, None, :]
        beta = beta.astype(np.float32)
        u_re = fr_re * rr
        u_re -= fr_im * ri
        u_re -= beta @ cs.B_re  # (b, kr, nf): P r_j less its fit on [Q, X]
        u_im = fr_re * ri
        u_im += fr_im * rr
        u_im -= beta @ cs.B_im
        power = np.square(u_re, out=u_re)
        power += np.square(u_im, out=u_im)
        se = np.sqrt(np.maximum(power.astype(np.float64) @ cs.weighted_spectrum[:, cols], 1e-300) / S)
        return num / se

    def _refit_unique(self, rot: np.ndarray, rows: np.ndarray, operands: tuple) -> np.ndarray:
        """The tested atom's unique part moved against the full model's residual (ter Braak)."""
        f, (c_sub, cq_sub, cx_sub, cols) = self.fits, operands
        b_n, kr, (S, k, _), n_net = len(rot), len(rows), f.coef.shape, len(cols)
        num = (rot.astype(np.complex64) @ c_sub).real.reshape(b_n, S, kr, n_net)
        # ||M P r_j||^2 = ||r_j||^2 - ||Q' P r_j||^2 - c' G^-1 c, c = X' P r_j
        cq = (rot @ cq_sub).real.reshape(b_n, kr, -1)
        moved2 = f.norm2[rows][None] - (cq * cq).sum(-1)
        if cx_sub is not None:
            c = (rot @ cx_sub).real.reshape(b_n, kr, k)
            moved2 = moved2 - np.einsum("dji,il,djl->dj", c, f.Ginv, c)
        moved2 = np.maximum(moved2, 1e-6 * f.norm2[rows][None])
        return group_statistic(num / np.sqrt(moved2)[:, None, :, None].astype(np.float32), self.method)

    def statistics(self, phases: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The group statistics of one batch of draws for the atoms ``rows`` and networks ``cols``.

        Parameters
        ----------
        phases : ndarray of shape (batch, n_bins)
            Per-bin phase rotations of the draws (:class:`NullDraws`).
        rows, cols : ndarray of int, shapes (kr,) and (nc,)

        Returns
        -------
        ndarray of shape (batch, kr, nc)
        """
        if self._spectra is None:
            self._spectra = self._cross_spectra()
        key = (rows.tobytes(), cols.tobytes())
        if getattr(self, "_operands_key", None) != key:  # the cells still drawing change at batch ends only
            self._operands_key, self._operands_cache = key, self._operands(rows, cols)
        if self.conditional:
            return self._refit_conditional((np.cos(phases), np.sin(phases)), rows, self._operands_cache)
        refit = self._refit_all if self.moved == "all" else self._refit_unique
        return refit(np.exp(1j * phases), rows, self._operands_cache)


def _seed_of(random_state) -> int:
    """An integer seed for the draws: the seed itself, else one drawn from the generator (or fresh entropy)."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    return int(np.random.default_rng(random_state).integers(2 ** 63))


class NullDraws:
    """The stimulus null's draws by index: phase draw ``d`` depends on the seed and ``d`` only.

    Phase draws are made in blocks of :data:`DRAW_BLOCK`, block ``b`` from a generator
    seeded with ``[seed, b]``, so the same draws come in the same order whatever the
    batch size, the threads or the cells still drawing. Circular shifts are a finite set:
    the ``n_max`` (at most every allowed shift) are drawn at once.

    Parameters
    ----------
    null : {"phase", "shift"}
    runs : list of int
    n_max : int
        Draws that may be asked for (shifts: at most the distinct ones).
    min_shift : int or None
    random_state : int, numpy Generator or None
    """

    def __init__(self, null: str, runs, n_max: int, *, min_shift=None, random_state=None):
        self.null, self.runs = null, list(runs)
        self._blocks: dict[int, np.ndarray] = {}
        if null == "shift":
            self._shifts = run_null_phases(null, runs, n_max, min_shift=min_shift, random_state=random_state)
            self.n_max = self._shifts.shape[0]
        else:
            self._seed, self.n_max = _seed_of(random_state), n_max

    def _block(self, b: int) -> np.ndarray:
        if b not in self._blocks:
            if len(self._blocks) > 4:  # batches move forward: older blocks are not read again
                self._blocks.pop(min(self._blocks))
            self._blocks[b] = run_null_phases("phase", self.runs, DRAW_BLOCK,
                                              random_state=np.random.default_rng([self._seed, b]))
        return self._blocks[b]

    def phases(self, start: int, stop: int) -> np.ndarray:
        """The phases of draws ``start`` to ``stop - 1``, of shape (stop - start, n_bins)."""
        if self.null == "shift":
            return self._shifts[start:stop]
        blocks = range(start // DRAW_BLOCK, (stop - 1) // DRAW_BLOCK + 1)
        rows = np.concatenate([self._block(b) for b in blocks])
        offset = blocks[0] * DRAW_BLOCK
        return rows[start - offset:stop - offset]


@dataclass
class MonteCarloP:
    """One-sided Monte Carlo p-values of every atom x network and the draws behind them.

    Attributes
    ----------
    p_hi, p_lo : ndarray of shape (k, n_networks)
        p of a positive, of a negative effect.
    draws_hi, draws_lo : ndarray of shape (k, n_networks), int64
        Null draws each p counted.
    used, refined : int
        The first draws' budget (made for the cells that did not stop earlier) and the
        further draws' budget (0 where no cell got further draws).
    """

    p_hi: np.ndarray
    p_lo: np.ndarray
    draws_hi: np.ndarray
    draws_lo: np.ndarray
    used: int
    refined: int

    @property
    def n_draws(self) -> int:
        """Cell draws made over both directions (a draw counted once per cell that read it)."""
        return int(self.draws_hi.sum() + self.draws_lo.sum())


def _count_exceedances(model: StimulusNull, observed: np.ndarray, draws: NullDraws, start: int, stop: int,
                       active: tuple[np.ndarray, np.ndarray], h: int, *, batch_size: int, label: str,
                       progress=None, cancel=None) -> tuple[np.ndarray, ...]:
    """Draws ``start`` to ``stop - 1`` for the active cells; a cell stops at the draw that brings it ``h`` exceedances.

    A batch's draws are computed once for every atom with a cell still drawing and every
    network with such a cell (the other cells of those atoms are computed and not counted);
    a cell's count stops at the exact draw of its ``h``-th exceedance, so the result does
    not depend on the batch size.

    Parameters
    ----------
    active : pair of ndarray of shape (k, n_networks), bool
        The cells that draw, "activated" (``>=``) then "deactivated" (``<=``); updated in place.
    h : int
        Exceedances that stop a cell (0: none, every active cell makes every draw).

    Returns
    -------
    count_hi, count_lo : ndarray of shape (k, n_networks), int64
        Exceedances counted.
    drawn_hi, drawn_lo : ndarray of shape (k, n_networks), int64
        Draws made by each cell.
    """
    tl = 1e-6 * np.maximum(1.0, np.abs(observed))
    counts = (np.zeros(observed.shape, np.int64), np.zeros(observed.shape, np.int64))
    drawn = (np.zeros(observed.shape, np.int64), np.zeros(observed.shape, np.int64))
    for b0 in range(start, stop, batch_size):
        check_cancel(cancel)
        either = active[0] | active[1]
        rows = np.flatnonzero(either.any(1))
        if not rows.size:
            break
        cols = np.flatnonzero(either[rows].any(0))
        b1 = min(b0 + batch_size, stop)
        stat = model.statistics(draws.phases(b0, b1), rows, cols)
        cell = np.ix_(rows, cols)
        obs, tol = observed[cell][None], tl[cell][None]
        for hit, act, count, made in zip((stat >= obs - tol, stat <= obs + tol), active, counts, drawn):
            on = act[cell]
            running = count[cell][None] + np.cumsum(hit, 0)  # exceedances after each draw of the batch
            n_made = np.full(on.shape, b1 - b0, np.int64)
            if h:
                reached = running >= h
                stops = reached.any(0) & on
                n_made = np.where(stops, np.argmax(reached, 0) + 1, n_made)
                act[cell] = on & ~stops
            count[cell] = np.where(on, running[n_made - 1, np.arange(on.shape[0])[:, None],
                                              np.arange(on.shape[1])[None]], count[cell])
            made[cell] += np.where(on, n_made, 0)
        report(progress, label, b1 - start, stop - start)
    return counts + drawn


def monte_carlo_pvalues(model: StimulusNull, observed: np.ndarray, *, null: str, n_permutations: int,
                        n_refine: int, sequential_h: int, min_shift: int | None, random_state, batch_size: int,
                        stage: str, settled=None, progress=None, cancel=None) -> MonteCarloP:
    """One-sided Monte Carlo p-values of every atom x network: sequential, further draws for the floor cells.

    First draws (``n_permutations``): with ``sequential_h = h > 0`` a cell stops at the
    draw ``n`` that brings its ``h``-th draw at or beyond the observed statistic and gets
    ``p = h / n`` (Besag & Clifford 1991); a cell that does not reach ``h`` gets
    ``p = (1 + #{null >= observed}) / (1 + n_permutations)`` ("activated"; ``<=`` for
    "deactivated"; with ``null="phase"``: circular shifts are few and come in order, every
    cell makes every one). A cell that no first draw reached sits at the floor
    ``1 / (1 + n_permutations)``; with ``null="phase"`` it gets up to ``n_refine`` further
    draws (the same sequential rule) and its p over all draws, unless ``settled`` says its
    decision is already taken at the floor. ``P(p <= a) <= a`` holds under the null for
    every ``a``: each stage's p is valid, and only cells at the floor, the smallest p of
    their stage, go on (which cells go on may depend on the data). ``sequential_h = 0``:
    every cell makes every first draw, every floor cell every further draw.

    Parameters
    ----------
    model : StimulusNull
    observed : ndarray of shape (k, n_networks)
    null : {"phase", "shift"}
    n_permutations, n_refine : int
        First and further draws (circular shifts: at most the distinct ones). No first
        draws: no test (p NaN).
    sequential_h : int
    min_shift : int or None
    random_state : int, numpy Generator or None
    batch_size : int
        Draws per matrix product.
    stage : str
        Progress stage.
    settled : callable, optional
        ``settled(p_hi, p_lo) -> (bool array, bool array)``, each of shape (k, n_networks):
        the cells whose decision the further draws cannot change (read only with
        ``sequential_h > 0``).

    Returns
    -------
    MonteCarloP
    """
    k, n_net = observed.shape
    if n_permutations == 0:
        nan, zero = np.full(observed.shape, np.nan), np.zeros(observed.shape, np.int64)
        return MonteCarloP(nan, nan.copy(), zero, zero.copy(), 0, 0)
    more = n_refine if null == "phase" else 0
    draws = NullDraws(null, model.runs, n_permutations + more, min_shift=min_shift, random_state=random_state)
    used = min(n_permutations, draws.n_max)
    # circular shifts come in order (neighbours alike) and are few: every cell makes every draw
    h = int(sequential_h) if null == "phase" else 0
    active = (np.ones((k, n_net), bool), np.ones((k, n_net), bool))
    report(progress, stage, 0, used)
    hi, lo, made_hi, made_lo = _count_exceedances(model, observed, draws, 0, used, active, h, batch_size=batch_size,
                                                  label=stage, progress=progress, cancel=cancel)
    p = [_pvalue(c, n, h, used) for c, n in ((hi, made_hi), (lo, made_lo))]
    floor = (hi == 0, lo == 0)
    if more and h and settled is not None:
        done = settled(*p)
        floor = (floor[0] & ~done[0], floor[1] & ~done[1])
    refined = more if more and (floor[0].any() or floor[1].any()) else 0
    made = [made_hi, made_lo]
    if refined:
        label = f"{stage} (more draws for {int(floor[0].sum() + floor[1].sum())} cells at the floor)"
        report(progress, label, 0, refined)
        active = (floor[0].copy(), floor[1].copy())
        hi2, lo2, m_hi, m_lo = _count_exceedances(model, observed, draws, used, used + refined, active, h,
                                                  batch_size=batch_size, label=label, progress=progress, cancel=cancel)
        for i, (c, m) in enumerate(((hi2, m_hi), (lo2, m_lo))):
            # the floor cells had no exceedance in the first draws: their counts start here
            p[i] = np.where(floor[i], _pvalue(c, made[i] + m, h, used + refined), p[i])
            made[i] = made[i] + m
    return MonteCarloP(p[0], p[1], made[0], made[1], used, refined)


def _pvalue(count: np.ndarray, drawn: np.ndarray, h: int, budget: int) -> np.ndarray:
    """Besag & Clifford's p: ``h / n`` where the ``h``-th exceedance stopped the cell at draw ``n``,
    else ``(1 + count) / (1 + budget)``."""
    stopped = count >= h if h else np.zeros(count.shape, bool)  # a stopped cell counted exactly h
    return np.where(stopped, h / np.maximum(drawn, 1), (1.0 + count) / (1.0 + budget))
