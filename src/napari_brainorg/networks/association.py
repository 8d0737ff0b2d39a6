"""Does this atom's *time course* drive this network? The stimulus-null association test.

For every atom × network the test asks whether the atom explains the network's
activity beyond the other atoms and the nuisance regressors, more than the same
atom would with its lock to the story broken. Per subject ``s`` and network ``n``:

1. the fMRI's drifts and confounds are projected out and each voxel is standardised;
   the network's time series is the mean over the network's voxels (``network_score
   "mean"``, default; ``"contrast"``: minus the mean over the other voxels of the
   mask), ``y_sn = Y_s c_n``. The score is linear in the map, so this is the
   unthresholded atom map's mean inside the network, computed without ever forming
   the maps; networks are made disjoint first (each voxel to the network with the
   highest value, as the atlas's label image shows them);
2. the atoms (drifts and confounds projected out too) are regressed together on
   ``y_sn``; the atom's **unique contribution** is its partial coefficient
   ``b_snj = r_j' y_sn / r_j' r_j``, with ``r_j`` the part of atom ``j`` that the other
   atoms and the nuisance do not explain (Frisch–Waugh–Lovell);
3. the group statistic is the Stouffer-like sum of the subjects' z-form values over
   ``sqrt(n_subjects)`` (fixed effects), or, with random effects (from
   :data:`~napari_brainorg.encoding.inference.MIN_SUBJECTS_RANDOM_EFFECTS` subjects),
   the subjects' mean effect over its between-subject standard error (below).

The null transforms the atoms' time courses with one draw ``P_d`` shared by every
subject (the story is shared): phase randomisation (default: any number of distinct
draws) or circular shifts. What a draw moves (``moved``):

- ``"all"`` (with fixed effects): every atom moves together. The Gram matrix is
  unchanged, so a draw's refitted coefficients are ``G^-1 (P_d X)' y`` for all atoms at
  once, on the observed scale; under stationary noise of any autocorrelation this is
  an exact draw when no atom drives the network, conservative when other atoms do.
- ``"conditional"`` (with random effects, default): a conditional randomisation test of
  atom ``j`` given the others. The draw replaces atom ``j``'s unique part ``r_j`` by
  ``P_d r_j`` and refits every subject with the other atoms and the nuisance unchanged:
  the moved regressor is ``u = M_-j P_d r_j`` (``M_-j``: residual-forming matrix of the
  drifts, confounds and the other atoms) and a subject's value is ``u' e_s``, with
  ``e_s = M_-j y_s`` the residual of the reduced model, which keeps the shared signal
  the other atoms leave. The statistic is the same function of the tested regressor
  for the observed atom and every draw, ``mean_s u' y_s / se(u)``, with
  ``se(u)^2 = sum_f w_f |U_f|^2 P_f / (n S)`` and ``P`` the spectrum of the subjects'
  deviations from their mean (:func:`~napari_brainorg.encoding.inference.between_subject_spectrum`):
  a random-effects variance (what differs between subjects) pooled over frequencies,
  and independent of the draw's numerator, so the stimulus-locked signal every subject
  shares neither inflates nor deflates it.
- ``"unique"`` (kept for comparison): only the tested atom's unique part moves, against
  the *full* model's residual (ter Braak), with a one-sample t over subjects. The
  observed value is computed from ``y``, the draws from a residual from which the tested
  atom's own chance fit was removed, so the draws miss the chance alignment of a random
  atom with the shared signal: liberal on strongly driven networks (64 collinear atoms,
  7 networks driven at R2 0.15, 8 subjects, 5 seeds of ``benchmarks/bench_association_null.py
  --planted-networks 7 --r2 0.15``: phase-randomised atoms' P(p <= 0.002) = 0.003-0.011,
  against 0.001-0.0045 with ``"conditional"``, and 5 declarations of real atoms that
  drive nothing, against none; in ``tests/networks/test_association.py`` it declares 2
  phase-randomised atoms).

The group statistic is recomputed for every draw. Everything is one cross-spectrum
per subject and one matrix product per batch of draws; every variant equals refitting
every subject with the moved regressors (``tests/networks/test_association.py``).

p-values are ``(1 + #{null >= observed}) / (1 + n_draws)``, one-sided in each
direction: "activated" tests a positive effect, "deactivated" a negative one (the
sign of the continuous effect; atoms oriented by a sign rule upstream). q is the
Benjamini–Hochberg FDR over all atoms × networks × both directions of one atlas;
:func:`family_fdr` extends the family to several models. Effect-size rules
(``min_effect``, ``min_relative_effect``, ``min_network_relative_effect``,
:func:`main_drivers`) and the resemblance rule (``min_network_relative_marginal``: the
atom must follow the network's time course, not only add to the other atoms) can only
remove declarations. Thresholded maps are for display
only: they do not enter the test.

Region data (a table of region time series instead of voxels) goes through the same
test with every region a network of its own (``networks = np.eye(n_regions)``).
"""

from __future__ import annotations

import numpy as np

from .._progress import check_cancel, report
from ..encoding.inference import (
    MIN_SUBJECTS_RANDOM_EFFECTS,
    NULLS,
    between_subject_spectrum,
    fdr,
    group_effects_method,
    run_null_phases,
)
from ..errors import ConfigError, ShapeError, check_choice

__all__ = ["CONTRIBUTIONS", "NETWORK_SCORES", "disjoint_networks", "family_fdr", "follows_network", "main_drivers",
           "network_contrasts", "network_time_series", "stimulus_association"]

#: What the atom is credited with: its partial effect, or its marginal effect.
CONTRIBUTIONS = ("unique", "marginal")
#: What a null draw moves: every atom together, or the tested atom's unique part (a conditional
#: randomisation test, or ter Braak's residual draws).
MOVED = ("auto", "all", "conditional", "unique")
#: Revision of the test's algorithm, part of the networks step's cache key: results of an
#: earlier revision in a result folder are recomputed, never reused (2: the conditional
#: randomisation test with random effects, each story's phases drawn on their own; 3: the
#: ``marginal`` column and the rule on it).
TEST_REVISION = 3
#: Continuous network scores of an unthresholded map (both linear in the map).
NETWORK_SCORES = ("mean", "contrast")


def _orthonormal(N: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(N)
    d = np.abs(np.diag(r))
    return q[:, d > 1e-10 * max(d.max(), 1e-300)]


def network_contrasts(networks, score: str = "mean") -> np.ndarray:
    """Voxel weights of the network scores, one column per network.

    Parameters
    ----------
    networks : array of shape (n_networks, n_voxels), bool
    score : {"mean", "contrast"}
        ``"mean"``: the mean inside the network (``1 / |inside|`` inside, 0 elsewhere).
        ``"contrast"``: the mean inside minus the mean over every other mask voxel; an
        atom that drives one network then lowers the contrast of every other network
        (its signal sits in their "outside"), so with strong signals every network
        but the driven one comes out "deactivated".

    Returns
    -------
    C : ndarray of shape (n_voxels, n_networks)
        A network with no voxel (or, for ``"contrast"``, covering the whole mask) gets
        a column of zeros.
    """
    check_choice("network_score", score, NETWORK_SCORES)
    networks = np.asarray(networks, dtype=bool)
    if networks.ndim != 2:
        raise ShapeError(f"'networks' must have shape (n_networks, n_voxels); got shape {networks.shape}.")
    inside = networks.sum(1).astype(np.float64)
    outside = networks.shape[1] - inside
    if score == "mean":
        C = np.where(networks, 1.0 / np.maximum(inside, 1)[:, None], 0.0)
        return C.T
    ok = (inside > 0) & (outside > 0)
    C = np.where(networks, 1.0 / np.maximum(inside, 1)[:, None], -1.0 / np.maximum(outside, 1)[:, None])
    C[~ok] = 0.0
    return C.T


def disjoint_networks(maps, masks) -> np.ndarray:
    """Each voxel to at most one network: the one with the highest value where masks overlap.

    Parameters
    ----------
    maps : array of shape (n_networks, n_voxels)
        Network values (a map atlas's z, or 0/1 labels).
    masks : array of shape (n_networks, n_voxels), bool

    Returns
    -------
    ndarray of shape (n_networks, n_voxels), bool
        The networks as the atlas's label image shows them.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] == 0:
        return masks
    scored = np.where(masks, np.asarray(maps, dtype=np.float64), -np.inf)
    best = np.argmax(scored, axis=0)
    out = np.zeros_like(masks)
    covered = masks.any(0)
    out[best[covered], np.flatnonzero(covered)] = True
    return out


def _nuisance_basis(n_volumes: int, tr: float, highpass_cutoff, confounds) -> np.ndarray:
    from ..encoding.preprocessing import drift_basis

    parts = [drift_basis(n_volumes, tr, highpass_cutoff)]
    if confounds is not None:
        c = np.asarray(confounds, dtype=np.float64)
        c = c[:, None] if c.ndim == 1 else c
        if c.shape[0] != n_volumes:
            raise ShapeError(f"'confounds' must have {n_volumes} rows (volumes); got shape {c.shape}.")
        parts.append(c)
    return _orthonormal(np.column_stack(parts))


def network_time_series(Y, contrasts, Q) -> np.ndarray:
    """A subject's network contrast time series from voxels standardised after nuisance removal.

    Parameters
    ----------
    Y : array of shape (n_volumes, n_voxels)
    contrasts : array of shape (n_voxels, n_networks)
    Q : array of shape (n_volumes, n_nuisance), orthonormal

    Returns
    -------
    ndarray of shape (n_volumes, n_networks)
    """
    n = Y.shape[0]
    out = np.zeros((n, contrasts.shape[1]))
    chunk = max(1, int(2e7 // max(n, 1)))
    for start in range(0, Y.shape[1], chunk):
        R = np.asarray(Y[:, start:start + chunk], dtype=np.float64)
        R = R - Q @ (Q.T @ R)
        sd = R.std(0)
        R = np.where(sd > 0, R / np.where(sd > 0, sd, 1.0), 0.0)
        out += R @ contrasts[start:start + chunk]
    return out


def _unique_parts(X: np.ndarray, contribution: str) -> tuple[np.ndarray, np.ndarray]:
    """Regressors whose inner product with y gives each atom's (partial) coefficient × norm.

    Returns ``R`` (n_volumes, k) and ``norm2`` (k,) with ``b_j = R_j' y / norm2_j``.
    """
    if contribution == "marginal":
        return X, (X * X).sum(0)
    G = X.T @ X
    Ginv = np.linalg.pinv(G, hermitian=True)
    d = np.diag(Ginv)
    if np.any(d <= 1e-12 * np.abs(Ginv).max()):
        raise ShapeError("The atoms are collinear with one another and the nuisance regressors; "
                         "an atom's unique contribution is undefined.")
    R = X @ Ginv / d[None]  # r_j, orthogonal to every other atom (FWL)
    return R, 1.0 / d


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


def stimulus_association(atoms, fmri, networks, *, tr: float, network_names=None, atlas_names=None,
                         confounds=None, highpass_cutoff: float | None = 128.0, null: str = "phase",
                         n_permutations: int = 10_000, n_refine: int = 90_000, min_shift: int | None = None,
                         runs=None,
                         contribution: str = "unique", moved: str = "auto", network_score: str = "mean",
                         group_effects: str = "auto",
                         min_subjects_random: int = MIN_SUBJECTS_RANDOM_EFFECTS, alpha: float = 0.05,
                         min_effect: float = 0.0, min_relative_effect: float = 0.0,
                         min_network_relative_effect: float = 0.0, min_network_relative_marginal: float = 0.0,
                         atom_names=None, batch_size: int = 256,
                         random_state=None, progress=None, cancel=None):
    """Test every atom × network for a drive of the network by the atom's time course.

    Parameters
    ----------
    atoms : array of shape (n_volumes, k)
        The atoms' time courses, shared by every subject (one story).
    fmri : sequence of arrays of shape (n_volumes, n_voxels)
        One array per subject, on the same mask as ``networks``.
    networks : array of shape (n_networks, n_voxels), bool
        Network masks (several atlases may be stacked; see ``atlas_names``).
    tr : float
    network_names : list of str, optional
    atlas_names : list of str, optional
        The atlas of each row of ``networks``; FDR families are atlases.
    confounds : array of shape (n_volumes, n_confounds), optional
        Nuisance regressors (word rate, word length/frequency, pauses), projected out
        of the fMRI and of the atoms with the drifts.
    highpass_cutoff : float or None
        Drift basis cut-off (s), as in the encoding.
    null : {"phase", "shift"}, default "phase"
        Phase randomisation (same random phases for every atom and subject) or circular
        shifts (same shift for every atom and subject).
    n_permutations : int, default 10000
        Null draws (circular shifts: at most ``n_volumes - 2 min_shift + 1``). 0: no
        test (p, q NaN, nothing associated).
    n_refine : int, default 90000
        With ``null="phase"``: further draws for the atoms with a cell that none of the
        first ``n_permutations`` draws reached (p at its floor ``1 / (1 + n_permutations)``);
        those cells get ``p = (1 + #null >= observed) / (1 + n_permutations + n_refine)``
        over all draws, every other cell keeps its first p. The two-stage p stays valid
        (``P(p <= a) <= a`` under the null for every ``a``, the argument of Besag & Clifford's
        sequential Monte Carlo p), and a strong link is no longer stopped by the floor
        when FDR runs over thousands of tests. 0: off.
    min_shift : int, optional
        For ``null="shift"`` (default ``n_volumes // 10``).
    runs : list of int, optional
        Lengths of the runs (stories) stacked in ``atoms`` and ``fmri``, in order (default:
        one run). A phase draw turns each run's phases on its own (the same draw for every
        subject), so no draw carries one story's time course into another, and the
        between-subject spectrum is each run's own. Drifts per run belong in ``confounds``
        (with ``highpass_cutoff=None``).
    moved : {"auto", "all", "conditional", "unique"}, default "auto"
        ``"all"``: a draw moves every atom together (the Gram matrix, hence the
        coefficients' covariance, is unchanged, so the refitted coefficients
        ``G^-1 (P X)' y`` are exact draws under stationary noise of any autocorrelation
        when no atom drives the network, and conservative when other atoms do).
        ``"conditional"``: a conditional randomisation test of the tested atom given the
        others: its unique part is moved and every subject refitted with the other atoms
        and the nuisance unchanged; the statistic is the subjects' mean effect over the
        between-subject standard error of the moved regressor (module docstring); needs
        ``contribution="unique"`` and 2 or more subjects. ``"unique"``: the tested atom's
        unique part moved against the full model's residual (ter Braak) with the t over
        subjects; liberal where networks are strongly driven (module docstring), kept for
        comparison. ``"auto"``: ``"conditional"`` with random effects, ``"all"`` with
        fixed effects.
    network_score : {"mean", "contrast"}, default "mean"
        The continuous score of the unthresholded map: its mean inside the network, or
        inside minus outside (:func:`network_contrasts`). Networks should not overlap
        (:func:`disjoint_networks`), or an effect in shared voxels counts for each.
    contribution : {"unique", "marginal"}, default "unique"
        ``"unique"``: the atom's partial effect beyond the other atoms and the nuisance;
        ``"marginal"``: its effect beyond the nuisance alone (atoms overlap: a network is
        then shared by every atom correlated with the driver).
    group_effects : {"auto", "random", "fixed"}
        ``"random"``: the statistic is the one-sample t over subjects of the per-subject
        effects; ``"fixed"``: their mean; ``"auto"``: random from
        ``min_subjects_random`` subjects.
    alpha : float
        FDR level.
    min_effect : float, default 0.0
        An association also needs ``|effect| >= min_effect`` (SD of the network's mean
        voxel per SD of the atom).
    min_relative_effect : float, default 0.0
        An association also needs ``|effect|`` at least this fraction of the atom's
        largest ``|effect|`` over all networks given (every atlas): a network the atom's
        signal reaches only as a spill from its main network (overlapping templates,
        spatial smoothness) is not called a link. Both rules only remove declarations,
        so the FDR control of the test is kept.
    min_network_relative_effect : float, default 0.0
        An association also needs ``|effect|`` at least this fraction of the largest
        ``|effect|`` among the atoms declared for the same network (either direction):
        the network's main drivers are named, not the atoms that explain a small
        remainder of a driver they do not match (a source spread over several atoms,
        an HRF that differs from the atoms' canonical one). See :func:`main_drivers`.
    min_network_relative_marginal : float, default 0.0
        An association also needs the atom's *marginal* correlation with the network's
        time series (the subjects' mean, drifts and confounds removed; ``marginal`` in the
        table) to have the sign of the direction tested and to reach this fraction of the
        largest ``|marginal|`` of any atom for that network. The test credits each atom
        with its unique part, and a network driven by a time course that is no single atom
        gives a unique coefficient to every atom the course is made of, some of which do
        not follow the network at all (suppressors: a unique effect against a marginal
        correlation near zero or of the other sign); with power, those were most false
        declarations of the full demo (sources mixed from ANs, four stories). A link then
        names atoms that both follow the network and add to the others. 0: off.
    atom_names : list, optional
    batch_size : int
        Null draws per matrix product.
    random_state : int or numpy Generator, optional
    progress, cancel
        See :mod:`napari_brainorg._progress`.

    Returns
    -------
    pandas.DataFrame
        One row per atom × network × direction: ``atom``, ``atlas``, ``network``,
        ``direction`` ("activated"/"deactivated"), ``statistic`` (the group statistic
        tested), ``effect`` (mean over subjects of the unique coefficient contrast:
        inside minus outside, in SD of the voxels per SD of the atom's unique part),
        ``marginal`` (the atom's correlation with the subjects' mean network time series),
        ``p``, ``q``, ``associated`` (``q < alpha`` in this direction and ``effect_ok``),
        ``effect_ok`` (the rules ``min_effect`` / ``min_relative_effect`` /
        ``min_network_relative_marginal`` hold, so that a correction over a larger family, :func:`family_fdr`, can
        declare again), ``test``.
        ``attrs``: ``criterion``, ``n_permutations``, ``null``, ``group_effects``,
        ``contribution``, ``alpha``.
    """
    import pandas as pd

    check_choice("null", null, NULLS)
    check_choice("contribution", contribution, CONTRIBUTIONS)
    check_choice("network_score", network_score, NETWORK_SCORES)
    check_choice("moved", moved, MOVED)
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 0:
        raise ConfigError(f"'n_permutations' must be an integer >= 0; {n_permutations!r} was provided.")
    if isinstance(n_refine, bool) or not isinstance(n_refine, (int, np.integer)) or n_refine < 0:
        raise ConfigError(f"'n_refine' must be an integer >= 0; {n_refine!r} was provided.")
    if not 0 < alpha < 1:
        raise ConfigError(f"'alpha' must be a rate in (0, 1); {alpha!r} was provided.")
    X = np.asarray(atoms, dtype=np.float64)
    if X.ndim != 2:
        raise ShapeError(f"'atoms' must have shape (n_volumes, k); got shape {X.shape}.")
    n, k = X.shape
    runs = [n] if runs is None else [int(m) for m in runs]
    if sum(runs) != n or min(runs) < 2:
        raise ShapeError(f"'runs' must be run lengths of at least 2 volumes adding up to the atoms' {n} volumes; "
                         f"{runs!r} was provided.")
    if null == "shift" and len(runs) > 1:
        raise ConfigError("null='shift' moves one series; with several runs (stories) use null='phase', which "
                          "turns each run's phases on its own.")
    Ys = list(fmri)
    if not Ys:
        raise ShapeError("'fmri' must hold at least one subject.")
    networks = np.asarray(networks, dtype=bool)
    networks = networks[None] if networks.ndim == 1 else networks
    for i, Y in enumerate(Ys):
        if np.ndim(Y) != 2 or np.shape(Y)[0] != n or np.shape(Y)[1] != networks.shape[1]:
            raise ShapeError(
                f"subject {i}: fMRI of shape {np.shape(Y)}; expected ({n}, {networks.shape[1]}) "
                "(the atoms' volumes, the networks' voxels).")
    n_net = networks.shape[0]
    network_names = [str(i) for i in range(n_net)] if network_names is None else list(network_names)
    atlas_names = ["atlas"] * n_net if atlas_names is None else list(atlas_names)
    names = list(range(k)) if atom_names is None else list(atom_names)
    if len(network_names) != n_net or len(atlas_names) != n_net or len(names) != k:
        raise ShapeError("'network_names' and 'atlas_names' need one entry per network, 'atom_names' one per atom.")
    S = len(Ys)
    method = group_effects_method(S, group_effects, min_random=min_subjects_random)
    if moved == "auto":
        moved = "all" if method == "fixed" else ("conditional" if contribution == "unique" else "unique")
    if moved == "conditional" and (contribution != "unique" or S < 2):
        raise ConfigError("moved='conditional' tests an atom given the other atoms: it needs contribution='unique' "
                          f"and at least 2 subjects; contribution={contribution!r} with {S} subject(s) was provided.")
    conditional = moved == "conditional"

    Q = _nuisance_basis(n, tr, highpass_cutoff, confounds)
    Xr = X - Q @ (Q.T @ X)
    sd = Xr.std(0)
    if np.any(sd <= 1e-12 * max(1.0, np.abs(X).max())):
        raise ShapeError("An atom is constant once drifts and confounds are removed; it cannot be tested.")
    Xr = Xr / sd
    R, norm2 = _unique_parts(Xr, contribution)
    C = network_contrasts(networks, network_score)
    stage = "networks: stimulus null"
    ys = []
    for s, Y in enumerate(Ys):
        check_cancel(cancel)
        ys.append(network_time_series(Y, C, Q))  # (n, n_net)
        report(progress, "networks: network time series", s + 1, S)
    ys = np.stack(ys)  # (S, n, n_net)
    # how well each atom follows each network: its correlation with the subjects' mean series
    ybar = ys.mean(0) - ys.mean((0, 1))
    ysd = ybar.std(0)
    xc = Xr - Xr.mean(0)
    marginal = (xc.T @ np.where(ysd > 0, ybar / np.where(ysd > 0, ysd, 1.0), 0.0)) / (n * xc.std(0)[:, None])
    # per-subject coefficients (the "effect") and residuals: of the full model for the
    # unique contribution (ter Braak: the draws then carry no signal of the atom tested,
    # which keeps the power of a random-effects t), of the nuisance alone for "marginal"
    coef = np.einsum("tk,stn->skn", R, ys) / norm2[None, :, None]  # (S, k, n_net)
    if contribution == "unique":
        beta = np.linalg.lstsq(Xr, ys.transpose(1, 0, 2).reshape(n, -1), rcond=None)[0]
        resid = ys - np.einsum("tk,skn->stn", Xr, beta.reshape(k, S, n_net).transpose(1, 0, 2))
        Ginv = np.linalg.pinv(Xr.T @ Xr, hermitian=True)
    else:
        resid = ys
        Ginv = None
    # every subject's value in z form, r_j' y / ||r_j||: under white noise its null
    # spread equals that of a draw, (P r_j)' e / ||M P r_j|| (M: residual-forming matrix
    # of the model), whose norm shrinks where the other regressors explain the moved part

    def group_stat(b):  # b (..., S, k, n_net) -> (..., k, n_net)
        mean = b.mean(-3)
        if method == "fixed":
            return mean * np.sqrt(S)
        sdv = b.std(-3, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sdv > 0, mean / (sdv / np.sqrt(S)), 0.0)

    # every run's own real-FFT bins, one after the other: a draw turns each run's phases
    # independently (the same draw for every subject), and every inner product is a sum
    # over the bins of all runs
    scale = np.concatenate([_rfft_weights(m) / m for m in runs])[:, None]
    nf = scale.shape[0]
    FR = _run_rfft(Xr if moved == "all" else R, runs, axis=0)  # (nf, k)
    if conditional:
        # the subjects' mean effect over its standard error from the between-subject
        # deviations' spectrum: a statistic of the moved regressor alone (no per-draw
        # between-subject SD, which the shared stimulus-locked signal would inflate)
        spectrum = np.concatenate([between_subject_spectrum(ys[:, a:b]) for a, b in _bounds(runs)])  # (nf, n_net)
        se_obs = np.sqrt((scale * np.abs(FR) ** 2).T @ spectrum / S)  # (k, n_net)
        observed = (coef * norm2[None, :, None]).mean(0) / np.maximum(se_obs, 1e-300)
    else:
        observed = group_stat(coef * np.sqrt(norm2)[None, :, None])
    effect = coef.mean(0)
    used = 0
    refined = 0
    exceed_hi = np.zeros((k, n_net), np.int64)
    exceed_lo = np.zeros((k, n_net), np.int64)
    p_hi = p_lo = np.full((k, n_net), np.nan)
    if n_permutations > 0:
        joint = moved == "all"
        FE = _run_rfft(ys if joint else resid, runs, axis=1)  # (S, nf, n_net)
        cross = (np.einsum("fk,sfn->fskn", FR, np.conj(FE)) * scale[:, :, None, None]).astype(np.complex64)
        cross_mean = cross.mean(1) if conditional else None  # (nf, k, n_net): the statistic reads the mean
        cross_q = np.einsum("fk,fq->fkq", FR, np.conj(_run_rfft(Q, runs, axis=0))) * scale[:, :, None]
        cross_x = None
        if Ginv is not None and not joint:
            FX = _run_rfft(Xr, runs, axis=0)
            cross_x = np.einsum("fk,fi->fki", FR, np.conj(FX)) * scale[:, :, None]
        if conditional:
            FQ = _run_rfft(Q, runs, axis=0)
            weighted_spectrum = (scale * spectrum).astype(np.float64)  # (nf, n_net)
        tol = 1e-6 * np.maximum(1.0, np.abs(observed))

        def count(phases, rows, label):
            """Null draws at or beyond the observed statistic of the atoms ``rows``."""
            kr = len(rows)
            c_sub = (cross if joint else cross_mean[:, rows] if conditional else cross[:, :, rows]).reshape(nf, -1)
            cq_sub = cross_q[:, rows].reshape(nf, -1)
            cx_sub = None if cross_x is None else cross_x[:, rows].reshape(nf, -1)
            obs, tl = observed[rows], tol[rows]
            hi = np.zeros((kr, n_net), np.int64)
            lo = np.zeros((kr, n_net), np.int64)
            for start in range(0, len(phases), batch_size):
                check_cancel(cancel)
                ph = phases[start:start + batch_size]
                b_n = len(ph)
                rot = np.exp(1j * ph)
                if joint:
                    # every atom moved together: the Gram matrix is unchanged, so the refitted
                    # coefficients are G^-1 (P X)' y, on the observed scale
                    num = (rot.astype(np.complex64) @ c_sub).real.reshape(b_n, S, k, n_net)
                    if Ginv is not None:
                        num = np.einsum("jl,bsln->bsjn", Ginv[rows].astype(np.float32), num)
                    else:
                        num = num[:, :, rows]
                    stat = group_stat(num * (np.sqrt(norm2[rows]) if Ginv is not None else 1 / np.sqrt(norm2[rows]))
                                      [None, None, :, None].astype(np.float32))
                elif conditional:
                    # the moved regressor u = M_-j P r_j replaces atom j's unique part; a
                    # subject's value u' e_s with e_s = M_-j y_s = e_full + b_sj r_j, so the
                    # subjects' mean is (P r_j)' mean(e) + mean(b_j) (P r_j)' r_j, where
                    # (P r_j)' r_j = (G^-1 c)_j ||r_j||^2 with c = X' P r_j
                    num = (rot.astype(np.complex64) @ c_sub).real.reshape(b_n, kr, n_net)
                    cq = (rot @ cq_sub).real.reshape(b_n, kr, -1)  # Q' P r_j
                    c = (rot @ cx_sub).real.reshape(b_n, kr, k)  # X' P r_j
                    g = (c * Ginv[rows][None]).sum(-1) * norm2[rows][None]
                    num = num + effect[rows][None] * g[..., None]
                    # u's spectrum: P r_j less its fit on the drifts and on the other atoms,
                    # gamma = G_-j^-1 c_-j = G^-1 c - (G^-1 c)_j G^-1 e_j / (G^-1)_jj
                    gam = c @ Ginv - g[..., None] * Ginv[rows][None]
                    fu = FR[:, rows].T[None] * rot[:, None, :] - cq @ FQ.T - gam @ FX.T  # (b, kr, nf)
                    se = np.sqrt(np.maximum((fu.real ** 2 + fu.imag ** 2) @ weighted_spectrum, 1e-300) / S)
                    stat = num / se
                else:
                    num = (rot.astype(np.complex64) @ c_sub).real.reshape(b_n, S, kr, n_net)
                    # ||M P r_j||^2 = ||r_j||^2 - ||Q' P r_j||^2 - c' G^-1 c, c = X' P r_j
                    cq = (rot @ cq_sub).real.reshape(b_n, kr, -1)
                    moved2 = norm2[rows][None] - (cq * cq).sum(-1)
                    if cx_sub is not None:
                        c = (rot @ cx_sub).real.reshape(b_n, kr, k)
                        moved2 = moved2 - np.einsum("dji,il,djl->dj", c, Ginv, c)
                    moved2 = np.maximum(moved2, 1e-6 * norm2[rows][None])
                    stat = group_stat(num / np.sqrt(moved2)[:, None, :, None].astype(np.float32))
                hi += (stat >= obs[None] - tl).sum(0)
                lo += (stat <= obs[None] + tl).sum(0)
                report(progress, label, start + b_n, len(phases))
            return hi, lo

        phases = run_null_phases(null, runs, n_permutations, min_shift=min_shift, random_state=random_state)
        used = phases.shape[0]
        report(progress, stage, 0, used)
        exceed_hi, exceed_lo = count(phases, np.arange(k), stage)
        p_hi = (1.0 + exceed_hi) / (1.0 + used)
        p_lo = (1.0 + exceed_lo) / (1.0 + used)
        # cells that no draw reached sit at the floor 1 / (1 + draws): more draws for them
        # alone (two-stage Monte Carlo p: a cell keeps its first p unless none of its first
        # draws reached it; P(p <= a) <= a still holds, as for Besag & Clifford's sequential p)
        floor_hi, floor_lo = exceed_hi == 0, exceed_lo == 0
        rows = np.flatnonzero(floor_hi.any(1) | floor_lo.any(1))
        if null == "phase" and n_refine > 0 and rows.size:
            if isinstance(random_state, np.random.Generator) or random_state is None:
                rng = np.random.default_rng(random_state)  # a Generator goes on past the first draws
            else:
                rng = np.random.default_rng([int(random_state), 1])  # not the first draws again
            more = run_null_phases(null, runs, n_refine, random_state=rng)
            refined = more.shape[0]
            label = f"{stage} (more draws for {rows.size} atoms at the floor)"
            report(progress, label, 0, refined)
            hi2, lo2 = count(more, rows, label)
            for p, floor, extra in ((p_hi, floor_hi, hi2), (p_lo, floor_lo, lo2)):
                sub = floor[rows]
                p[rows] = np.where(sub, (1.0 + extra) / (1.0 + used + refined), p[rows])
    tested = used > 0
    q_hi = np.full((k, n_net), np.nan)
    q_lo = np.full((k, n_net), np.nan)
    if tested:
        for atlas in dict.fromkeys(atlas_names):
            cols = np.array([a == atlas for a in atlas_names])
            _, q = fdr(np.stack([p_hi[:, cols], p_lo[:, cols]]), alpha)
            q_hi[:, cols], q_lo[:, cols] = q[0], q[1]
    null_desc = ("phase randomisation (the same random phases for every atom and subject)" if null == "phase"
                 else "circular shifts (the same shift for every atom and subject)")
    test = f"stimulus-{null}/{contribution}/{network_score}/{method}-effects/moved-{moved}"
    strong = np.abs(effect) >= min_effect
    if min_relative_effect > 0:
        # relative to the atom's strongest network effect in any atlas: a network of one
        # atlas that only partly covers the atom's main target elsewhere is spill
        peak = np.abs(effect).max(1, keepdims=True)
        strong &= np.abs(effect) >= min_relative_effect * peak
    frames = []
    for direction, p, q in (("activated", p_hi, q_hi), ("deactivated", p_lo, q_lo)):
        frames.append(pd.DataFrame({
            "atom": np.repeat(np.asarray(names, dtype=object), n_net),
            "atlas": np.tile(np.asarray(atlas_names, dtype=object), k),
            "network": np.tile(np.asarray(network_names, dtype=object), k),
            "direction": direction,
            "statistic": observed.ravel(),
            "effect": effect.ravel(),
            "marginal": marginal.ravel(),
            "p": p.ravel(),
            "q": q.ravel(),
            "associated": ((np.nan_to_num(q, nan=1.0) < alpha) & strong).ravel() if tested else False,
            "effect_ok": strong.ravel(),
            "test": test,
        }))
    table = pd.concat(frames, ignore_index=True)
    if atom_names is None:
        table["atom"] = table["atom"].astype(int)
    if min_network_relative_marginal > 0:
        follows = follows_network(table, min_network_relative_marginal)
        table["effect_ok"] &= follows
        table["associated"] &= follows
    if tested and min_network_relative_effect > 0:
        table["associated"] = main_drivers(table, min_network_relative_effect)
    stat_desc = ("the mean over subjects over its between-subject standard error (deviations' spectrum)"
                 if conditional else "the one-sample t over subjects" if method == "random" else "the mean over subjects")
    criterion = (
        f"associated = q < {alpha:g}, Benjamini-Hochberg FDR over atoms x networks x both directions of "
        f"one atlas; statistic = {stat_desc} of each atom's {contribution} coefficient on the network's "
        f"time series ({'mean of the standardised voxels inside the network' if network_score == 'mean' else 'mean of the standardised voxels inside the network minus outside'}; drifts "
        f"and confounds removed)"
        + (f"; and |effect| >= {min_effect:g}" if min_effect > 0 else "")
        + (f"; and |effect| >= {min_relative_effect:g} x the atom's largest |effect| over every atlas's networks"
           if min_relative_effect > 0 else "")
        + (f"; and the atom's correlation with the network's mean time series has the direction's sign and "
           f"|r| >= {min_network_relative_marginal:g} x the largest |r| of any atom with that network"
           if min_network_relative_marginal > 0 else "")
        + (f"; and |effect| >= {min_network_relative_effect:g} x the largest |effect| of the atoms declared for "
           "the network" if min_network_relative_effect > 0 else "")
        + f"; p = (1 + #null >= observed) / (1 + {used}) one-sided, from {used} draws "
        f"of {null_desc}, each re-estimating every subject's effects"
        + (f"; cells that none of them reached: over {used + refined} draws (the {refined} further draws "
           "made for those atoms only)." if refined else ".")
        if tested else "no test (n_permutations = 0): nothing associated.")
    table.attrs.update({"criterion": criterion, "n_permutations": used, "n_refine": refined,
                        "null": null if tested else "none",
                        "group_effects": method, "contribution": contribution, "alpha": alpha,
                        "n_subjects": S, "test": test, "network_score": network_score, "moved": moved,
                        "min_network_relative_effect": float(min_network_relative_effect),
                        "min_network_relative_marginal": float(min_network_relative_marginal)})
    return table


def follows_network(table, fraction: float):
    """The rows whose atom follows the network: its correlation with the network has the row's sign and is large.

    Parameters
    ----------
    table : DataFrame
        Rows of one model: ``atlas``, ``network``, ``direction``, ``marginal`` (the atom's
        correlation with the subjects' mean network time series).
    fraction : float in [0, 1]
        ``|marginal|`` must reach this fraction of the largest ``|marginal|`` of any atom
        with the same network.

    Returns
    -------
    ndarray of bool
        True where ``marginal`` has the sign of ``direction`` ("activated": positive) and
        reaches the fraction. A rule that only removes declarations.
    """
    import pandas as pd

    marginal = table["marginal"].to_numpy(float)
    keys = pd.MultiIndex.from_arrays([table["atlas"].astype(str), table["network"].astype(str)])
    peak = pd.Series(np.abs(marginal), index=keys).groupby(level=[0, 1]).max().reindex(keys).to_numpy()
    sign = np.where(table["direction"].astype(str).to_numpy() == "activated", 1.0, -1.0)
    return (sign * marginal > 0) & (np.abs(marginal) >= fraction * peak - 1e-12)


def main_drivers(table, fraction: float):
    """Keep the declarations whose effect is at least ``fraction`` of the network's strongest declared one.

    A network driven by a time course that is no single atom (a mix of several, or
    seen through an HRF that differs from the atoms' canonical one) gives every atom
    that explains part of it a unique coefficient: the one or few atoms that carry
    most of it have large effects, the atoms that take up the remainder small ones.
    Naming only the main drivers removes declarations and never adds one, so the FDR
    control of the test is kept.

    Parameters
    ----------
    table : DataFrame
        Rows of one model: ``atlas``, ``network``, ``effect``, ``associated``.
    fraction : float in [0, 1]

    Returns
    -------
    ndarray of bool
        The new ``associated`` column.
    """
    import pandas as pd

    declared = table["associated"].astype(bool).to_numpy()
    if fraction <= 0 or not declared.any():
        return declared
    size = table["effect"].abs().to_numpy(float)
    keys = pd.MultiIndex.from_arrays([table["atlas"].astype(str), table["network"].astype(str)])
    peak = pd.Series(np.where(declared, size, 0.0), index=keys).groupby(level=[0, 1]).max()
    return declared & (size >= fraction * peak.reindex(keys).to_numpy() - 1e-12)


def family_fdr(tables, *, alpha: float = 0.05, min_network_relative_effect: float = 0.0):
    """Benjamini–Hochberg over several models' tests, one family per atlas.

    The question "which atoms of which model drive which network" is asked of every
    model at once, so its false discoveries are controlled over atoms × networks ×
    both directions × models (per atlas, as in :func:`stimulus_association`).

    Parameters
    ----------
    tables : mapping model -> DataFrame
        Each with ``atlas``, ``p`` and ``effect_ok`` (rows of every direction; several
        frames of one model, e.g. activated and deactivated, may be given as a list).
    alpha : float
    min_network_relative_effect : float
        Applied per model after the correction (:func:`main_drivers`).

    Returns
    -------
    dict model -> DataFrame (or list of DataFrames, as given)
        Copies with ``q_model`` (the model's own q, as the test computed it), ``q``
        (over the family) and ``associated = q < alpha & effect_ok`` (and the main-driver
        rule).
    """
    import pandas as pd

    if not 0 < alpha < 1:
        raise ConfigError(f"'alpha' must be a rate in (0, 1); {alpha!r} was provided.")
    flat = []
    for model, frames in tables.items():
        for i, df in enumerate(frames if isinstance(frames, list) else [frames]):
            missing = {"atlas", "p", "effect_ok"} - set(df.columns)
            if missing:
                raise ShapeError(f"The association table of {model!r} lacks columns {sorted(missing)}.")
            flat.append((model, i, df.copy()))
    for model, i, df in flat:
        if "q_model" not in df.columns:
            df["q_model"] = df["q"] if "q" in df.columns else np.nan
        df["q"] = np.nan
    atlases = pd.unique(pd.concat([df["atlas"].astype(str) for _, _, df in flat])) if flat else []
    for atlas in atlases:
        parts = [(df, (df["atlas"].astype(str) == atlas).to_numpy() & df["p"].notna().to_numpy())
                 for _, _, df in flat]
        p = np.concatenate([df["p"].to_numpy(float)[m] for df, m in parts])
        if not p.size:
            continue
        _, q = fdr(p, alpha)
        start = 0
        for df, m in parts:
            n = int(m.sum())
            df.loc[m, "q"] = q[start:start + n]
            start += n
    out: dict = {}
    for model, i, df in flat:
        df["associated"] = (np.nan_to_num(df["q"].to_numpy(float), nan=1.0) < alpha) & df["effect_ok"].astype(bool)
        out.setdefault(model, []).append(df)
    if min_network_relative_effect > 0:
        for model, frames in out.items():
            both = pd.concat(frames, keys=range(len(frames)))
            keep = main_drivers(both, min_network_relative_effect)
            start = 0
            for df in frames:
                df["associated"] = keep[start:start + len(df)]
                start += len(df)
    return {m: (out[m] if isinstance(tables[m], list) else out[m][0]) for m in out}
