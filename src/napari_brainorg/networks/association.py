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
per subject and one matrix product per batch of draws
(:mod:`napari_brainorg.networks._association_null`); every variant equals refitting
every subject with the moved regressors (``tests/networks/test_association.py``).

p-values are one-sided Monte Carlo p-values in each direction: "activated" tests a
positive effect, "deactivated" a negative one (the sign of the continuous effect; atoms
oriented by a sign rule upstream). With phase randomisation they are sequential (Besag &
Clifford 1991, ``sequential_h = h``, default 20; circular shifts are few and come in
order, every cell makes every one): a cell stops drawing at the draw ``n`` that brings
its ``h``-th null statistic at or beyond the observed one and gets ``p = h / n``, so a
cell far from significance stops after a few hundred draws; a cell that does not reach
``h`` in the ``n_permutations`` first draws gets the usual
``p = (1 + #{null >= observed}) / (1 + n_permutations)``. With phase randomisation, a
cell that none of the first draws reached (p at its floor ``1 / (1 + n_permutations)``)
gets up to ``n_refine`` further draws (the same rule) and its p over all draws, unless
its decision is already taken at the floor (declared by the FDR with every floor cell at
the floor, the family counted ``fdr_models`` times over: more draws could only lower its
p). Every p stays valid (``P(p <= a) <= a`` under the null for every ``a``: each stage's
p is, and only cells at the floor, the smallest p of their stage, go on), and a strong
link is not stopped by the floor when FDR runs over thousands of tests. Each draw is
computed once for every cell still drawing, and draw ``d``'s phases come from the seed
and ``d`` alone (:class:`~napari_brainorg.networks._association_null.NullDraws`), so a
seed gives the same p whatever the batches or threads. ``sequential_h = 0`` is the
fixed-budget test: every cell makes every first draw, every floor cell every further
draw. q is the Benjamini–Hochberg FDR over all atoms × networks × both directions of
one atlas; :func:`family_fdr` extends the family to several models.

Effect-size rules (``min_effect``, ``min_relative_effect``,
``min_network_relative_effect``, :func:`main_drivers`) and the resemblance rule
(``min_network_relative_marginal``, :func:`follows_network`) can only remove
declarations. The resemblance rule asks the atom to follow the network's time course,
not only to add to the other atoms: the test credits each atom with its unique part,
and a network driven by a time course that is no single atom gives a unique
coefficient to every atom the course is made of, some of which do not follow the
network at all (suppressors: a unique effect against a marginal correlation near zero
or of the other sign); with power, those were most false declarations of the full demo
(sources mixed from ANs, four stories). Thresholded maps are for display only: they
do not enter the test.

Region data (a table of region time series instead of voxels) goes through the same
test with every region a network of its own (``networks = np.eye(n_regions)``).
"""

from __future__ import annotations

import numpy as np

from .._progress import check_cancel, report
from ..encoding.inference import MIN_SUBJECTS_RANDOM_EFFECTS, NULLS, fdr, group_effects_method
from ..errors import ConfigError, ShapeError, check_choice
from ._association_null import StimulusNull, SubjectFits, monte_carlo_pvalues

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
#: ``marginal`` column and the rule on it; 4: sequential p, draws keyed by the seed and their index).
TEST_REVISION = 4
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


# --------------------------------------------------------------------------- checks


def _checked_options(null, contribution, network_score, moved, n_permutations, n_refine, alpha, sequential_h=0,
                     fdr_models=1) -> None:
    """Raise on an option the test does not know, or a count or a rate out of its range."""
    check_choice("null", null, NULLS)
    check_choice("contribution", contribution, CONTRIBUTIONS)
    check_choice("network_score", network_score, NETWORK_SCORES)
    check_choice("moved", moved, MOVED)
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 0:
        raise ConfigError(f"'n_permutations' must be an integer >= 0; {n_permutations!r} was provided.")
    if isinstance(n_refine, bool) or not isinstance(n_refine, (int, np.integer)) or n_refine < 0:
        raise ConfigError(f"'n_refine' must be an integer >= 0; {n_refine!r} was provided.")
    if isinstance(sequential_h, bool) or not isinstance(sequential_h, (int, np.integer)) or sequential_h < 0:
        raise ConfigError(f"'sequential_h' must be an integer >= 0 (0: every cell makes every draw); "
                          f"{sequential_h!r} was provided.")
    if isinstance(fdr_models, bool) or not isinstance(fdr_models, (int, np.integer)) or fdr_models < 1:
        raise ConfigError(f"'fdr_models' must be an integer >= 1; {fdr_models!r} was provided.")
    if not 0 < alpha < 1:
        raise ConfigError(f"'alpha' must be a rate in (0, 1); {alpha!r} was provided.")


def _checked_data(atoms, fmri, networks, runs, null: str):
    """The atoms, the subjects' fMRI, the networks and the runs, checked against one another.

    Returns
    -------
    X : ndarray of shape (n_volumes, k), float64
    Ys : list of n_subjects arrays of shape (n_volumes, n_voxels)
    networks : ndarray of shape (n_networks, n_voxels), bool
    runs : list of int
        The run lengths (default: one run).
    """
    X = np.asarray(atoms, dtype=np.float64)
    if X.ndim != 2:
        raise ShapeError(f"'atoms' must have shape (n_volumes, k); got shape {X.shape}.")
    n = X.shape[0]
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
    return X, Ys, networks, runs


def _checked_names(network_names, atlas_names, atom_names, n_networks: int, k: int):
    """The networks', atlases' and atoms' names (defaults: ``"0"``..., ``"atlas"``, 0...), one per entry."""
    network_names = [str(i) for i in range(n_networks)] if network_names is None else list(network_names)
    atlas_names = ["atlas"] * n_networks if atlas_names is None else list(atlas_names)
    names = list(range(k)) if atom_names is None else list(atom_names)
    if len(network_names) != n_networks or len(atlas_names) != n_networks or len(names) != k:
        raise ShapeError("'network_names' and 'atlas_names' need one entry per network, 'atom_names' one per atom.")
    return network_names, atlas_names, names


def _resolved_moved(moved: str, method: str, contribution: str, n_subjects: int) -> str:
    """What a null draw moves: ``"auto"`` resolved for the group model, the conditional test's needs checked."""
    if moved == "auto":
        moved = "all" if method == "fixed" else ("conditional" if contribution == "unique" else "unique")
    if moved == "conditional" and (contribution != "unique" or n_subjects < 2):
        raise ConfigError("moved='conditional' tests an atom given the other atoms: it needs contribution='unique' "
                          f"and at least 2 subjects; contribution={contribution!r} with {n_subjects} subject(s) "
                          "was provided.")
    return moved


# --------------------------------------------------------------------------- residualise and fit


def _nuisance_basis(n_volumes: int, tr: float, highpass_cutoff, confounds) -> np.ndarray:
    """Orthonormal basis of the drifts and the confounds, of shape (n_volumes, n_nuisance)."""
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
        # (Y - Q Q'Y) / sd @ C without forming the residual: Y @ W - Q (Q'Y @ W), W = C / sd,
        # with the residual's variance from ||y||^2 - ||Q'y||^2 (Q orthonormal) less its mean^2
        R = np.asarray(Y[:, start:start + chunk], dtype=np.float64)
        QtR = Q.T @ R
        mean = (R.sum(0) - Q.sum(0) @ QtR) / n
        sq = np.einsum("tv,tv->v", R, R)
        sd = np.sqrt(np.maximum((sq - np.einsum("qv,qv->v", QtR, QtR)) / n - mean ** 2, 0.0))
        # a voxel the nuisance explains to rounding is constant: it carries no weight
        ok = sd > 1e-7 * np.sqrt(sq / n)
        W = np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)[:, None] * contrasts[start:start + chunk]
        out += R @ W - Q @ (QtR @ W)
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


def _residual_atoms(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The atoms with the drifts and confounds projected out, each scaled to unit SD.

    Parameters
    ----------
    X : ndarray of shape (n_volumes, k)
    Q : ndarray of shape (n_volumes, n_nuisance), orthonormal

    Returns
    -------
    ndarray of shape (n_volumes, k)
    """
    Xr = X - Q @ (Q.T @ X)
    sd = Xr.std(0)
    if np.any(sd <= 1e-12 * max(1.0, np.abs(X).max())):
        raise ShapeError("An atom is constant once drifts and confounds are removed; it cannot be tested.")
    return Xr / sd


def _subject_network_series(Ys, contrasts: np.ndarray, Q: np.ndarray, progress=None, cancel=None) -> np.ndarray:
    """Every subject's network time series (:func:`network_time_series`), of shape (n_subjects, n_volumes, n_networks)."""
    ys = []
    for s, Y in enumerate(Ys):
        check_cancel(cancel)
        ys.append(network_time_series(Y, contrasts, Q))  # (n, n_net)
        report(progress, "networks: network time series", s + 1, len(Ys))
    return np.stack(ys)


def _marginal_correlations(Xr: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """How well each atom follows each network: its correlation with the subjects' mean series.

    Parameters
    ----------
    Xr : ndarray of shape (n_volumes, k)
    ys : ndarray of shape (n_subjects, n_volumes, n_networks)

    Returns
    -------
    ndarray of shape (k, n_networks)
        0 for a network whose mean series is constant.
    """
    ybar = ys.mean(0) - ys.mean((0, 1))
    ysd = ybar.std(0)
    xc = Xr - Xr.mean(0)
    return (xc.T @ np.where(ysd > 0, ybar / np.where(ysd > 0, ysd, 1.0), 0.0)) / (Xr.shape[0] * xc.std(0)[:, None])


def _subject_coefficients(Xr: np.ndarray, R: np.ndarray, norm2: np.ndarray, ys: np.ndarray, contribution: str):
    """Every subject's coefficients, the residuals the null draws are tested against, and ``G^-1``.

    The residual is the full model's for the unique contribution (ter Braak: the draws
    then carry no signal of the atom tested, which keeps the power of a random-effects
    t), the nuisance's alone (``ys`` itself) for the marginal one.

    Parameters
    ----------
    Xr, R : ndarray of shape (n_volumes, k)
    norm2 : ndarray of shape (k,)
    ys : ndarray of shape (n_subjects, n_volumes, n_networks)
    contribution : {"unique", "marginal"}

    Returns
    -------
    coef : ndarray of shape (n_subjects, k, n_networks)
    resid : ndarray of shape (n_subjects, n_volumes, n_networks)
    Ginv : ndarray of shape (k, k), or None for the marginal contribution
    """
    S, n, n_net = ys.shape
    k = Xr.shape[1]
    coef = np.einsum("tk,stn->skn", R, ys) / norm2[None, :, None]
    if contribution != "unique":
        return coef, ys, None
    beta = np.linalg.lstsq(Xr, ys.transpose(1, 0, 2).reshape(n, -1), rcond=None)[0]
    resid = ys - np.einsum("tk,skn->stn", Xr, beta.reshape(k, S, n_net).transpose(1, 0, 2))
    return coef, resid, np.linalg.pinv(Xr.T @ Xr, hermitian=True)


def _fit_subjects(X, Ys, networks, *, tr: float, highpass_cutoff, confounds, contribution: str, network_score: str,
                  progress=None, cancel=None) -> SubjectFits:
    """Residualise the atoms and the fMRI on the nuisance and regress each subject's network series on the atoms.

    Parameters
    ----------
    X : ndarray of shape (n_volumes, k)
    Ys : list of arrays of shape (n_volumes, n_voxels)
    networks : ndarray of shape (n_networks, n_voxels), bool
    tr, highpass_cutoff, confounds, contribution, network_score
        As in :func:`stimulus_association`.

    Returns
    -------
    SubjectFits
    """
    Q = _nuisance_basis(X.shape[0], tr, highpass_cutoff, confounds)
    Xr = _residual_atoms(X, Q)
    R, norm2 = _unique_parts(Xr, contribution)
    ys = _subject_network_series(Ys, network_contrasts(networks, network_score), Q, progress, cancel)
    coef, resid, Ginv = _subject_coefficients(Xr, R, norm2, ys, contribution)
    return SubjectFits(Q=Q, Xr=Xr, R=R, norm2=norm2, ys=ys, coef=coef, resid=resid, Ginv=Ginv,
                       effect=coef.mean(0), marginal=_marginal_correlations(Xr, ys))


# --------------------------------------------------------------------------- decide


def _atlas_fdr(p_hi: np.ndarray, p_lo: np.ndarray, atlas_names, alpha: float):
    """Benjamini–Hochberg q over atoms × networks × both directions, one family per atlas.

    Parameters
    ----------
    p_hi, p_lo : ndarray of shape (k, n_networks)
    atlas_names : list of str, one per network

    Returns
    -------
    q_hi, q_lo : ndarray of shape (k, n_networks)
    """
    q_hi = np.full(p_hi.shape, np.nan)
    q_lo = np.full(p_lo.shape, np.nan)
    for atlas in dict.fromkeys(atlas_names):
        cols = np.array([a == atlas for a in atlas_names])
        _, q = fdr(np.stack([p_hi[:, cols], p_lo[:, cols]]), alpha)
        q_hi[:, cols], q_lo[:, cols] = q[0], q[1]
    return q_hi, q_lo


def _declared_at_floor(p_hi: np.ndarray, p_lo: np.ndarray, atlas_names, alpha: float, fdr_models: int):
    """The cells that Benjamini–Hochberg declares with the p given, over a family ``fdr_models`` times larger.

    Read with every cell at the floor at its floor p: more draws could only lower such a
    cell's p (or, rarely, raise it above the floor), and with the family ``fdr_models``
    times larger the declaration holds in a correction pooled over that many models
    whatever their tests add (BH declares at least the cells it declares with the other
    models' tests all at p = 1).

    Returns
    -------
    pair of ndarray of shape (k, n_networks), bool
    """
    q_hi, q_lo = _atlas_fdr(p_hi, p_lo, atlas_names, alpha)
    return q_hi * fdr_models < alpha, q_lo * fdr_models < alpha


def _effect_size_rule(effect: np.ndarray, min_effect: float, min_relative_effect: float) -> np.ndarray:
    """Where ``|effect|`` reaches ``min_effect`` and ``min_relative_effect`` × the atom's largest ``|effect|``.

    Parameters
    ----------
    effect : ndarray of shape (k, n_networks)

    Returns
    -------
    ndarray of shape (k, n_networks), bool
    """
    strong = np.abs(effect) >= min_effect
    if min_relative_effect > 0:
        # relative to the atom's strongest network effect in any atlas: a network of one
        # atlas that only partly covers the atom's main target elsewhere is spill
        peak = np.abs(effect).max(1, keepdims=True)
        strong &= np.abs(effect) >= min_relative_effect * peak
    return strong


def _association_table(names, atlas_names, network_names, *, statistic, effect, marginal, p, n_draws, q, effect_ok,
                       alpha: float, tested: bool, test: str, integer_atoms: bool):
    """One row per atom × network × direction, ``associated`` where ``q < alpha`` and the effect rules hold.

    Parameters
    ----------
    names, atlas_names, network_names : list
        One per atom, per network, per network.
    statistic, effect, marginal, effect_ok : ndarray of shape (k, n_networks)
    p, n_draws, q : pair of ndarray of shape (k, n_networks)
        The "activated" then the "deactivated" direction's.
    tested : bool
        False: nothing is associated.
    integer_atoms : bool
        The ``atom`` column as integers (the default names).

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    k, n_net = effect.shape
    frames = []
    for direction, p_d, n_d, q_d in zip(("activated", "deactivated"), p, n_draws, q):
        frames.append(pd.DataFrame({
            "atom": np.repeat(np.asarray(names, dtype=object), n_net),
            "atlas": np.tile(np.asarray(atlas_names, dtype=object), k),
            "network": np.tile(np.asarray(network_names, dtype=object), k),
            "direction": direction,
            "statistic": statistic.ravel(),
            "effect": effect.ravel(),
            "marginal": marginal.ravel(),
            "p": p_d.ravel(),
            "n_draws": n_d.ravel(),
            "q": q_d.ravel(),
            "associated": ((np.nan_to_num(q_d, nan=1.0) < alpha) & effect_ok).ravel() if tested else False,
            "effect_ok": effect_ok.ravel(),
            "test": test,
        }))
    table = pd.concat(frames, ignore_index=True)
    if integer_atoms:
        table["atom"] = table["atom"].astype(int)
    return table


def _network_rules(table, *, tested: bool, min_network_relative_marginal: float, min_network_relative_effect: float):
    """The resemblance rule (:func:`follows_network`) and the main-driver rule (:func:`main_drivers`), in place.

    Both only remove declarations. The resemblance rule also clears ``effect_ok``, so
    that a correction over a larger family (:func:`family_fdr`) keeps it.
    """
    if min_network_relative_marginal > 0:
        follows = follows_network(table, min_network_relative_marginal)
        table["effect_ok"] &= follows
        table["associated"] &= follows
    if tested and min_network_relative_effect > 0:
        table["associated"] = main_drivers(table, min_network_relative_effect)
    return table


def _criterion(*, tested: bool, null: str, contribution: str, network_score: str, moved: str, method: str,
               alpha: float, min_effect: float, min_relative_effect: float, min_network_relative_marginal: float,
               min_network_relative_effect: float, used: int, refined: int, sequential_h: int = 0) -> str:
    """The test and its declaration rule, in words."""
    if not tested:
        return "no test (n_permutations = 0): nothing associated."
    null_desc = ("phase randomisation (the same random phases for every atom and subject)" if null == "phase"
                 else "circular shifts (the same shift for every atom and subject)")
    stat_desc = ("the mean over subjects over its between-subject standard error (deviations' spectrum)"
                 if moved == "conditional" else "the one-sample t over subjects" if method == "random"
                 else "the mean over subjects")
    return (
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
        + (f", a cell stopping at the draw n that brought its {sequential_h}th draw at or beyond the observed "
           f"statistic with p = {sequential_h} / n (Besag & Clifford's sequential p)"
           if sequential_h and null == "phase" else "")
        + (f"; cells that none of them reached: over {'up to ' if sequential_h else ''}{used + refined} draws "
           f"(the {refined} further draws "
           "made for those cells only" + (", where the FDR did not already declare them at the floor)."
                                           if sequential_h else ").") if refined else "."))


def _test_attrs(*, tested: bool, null: str, contribution: str, network_score: str, moved: str, method: str,
                alpha: float, min_effect: float, min_relative_effect: float, min_network_relative_marginal: float,
                min_network_relative_effect: float, used: int, refined: int, n_subjects: int, test: str,
                sequential_h: int = 0) -> dict:
    """The table's ``attrs``: the criterion in words, the draws made and the options the test ran with."""
    criterion = _criterion(
        tested=tested, null=null, contribution=contribution, network_score=network_score, moved=moved, method=method,
        alpha=alpha, min_effect=min_effect, min_relative_effect=min_relative_effect,
        min_network_relative_marginal=min_network_relative_marginal,
        min_network_relative_effect=min_network_relative_effect, used=used, refined=refined, sequential_h=sequential_h)
    return {"criterion": criterion, "n_permutations": used, "n_refine": refined, "sequential_h": int(sequential_h),
            "null": null if tested else "none",
            "group_effects": method, "contribution": contribution, "alpha": alpha,
            "n_subjects": n_subjects, "test": test, "network_score": network_score, "moved": moved,
            "min_network_relative_effect": float(min_network_relative_effect),
            "min_network_relative_marginal": float(min_network_relative_marginal)}


def stimulus_association(atoms, fmri, networks, *, tr: float, network_names=None, atlas_names=None, confounds=None,
                         highpass_cutoff: float | None = 128.0, null: str = "phase", n_permutations: int = 10_000,
                         n_refine: int = 90_000, sequential_h: int = 20, fdr_models: int = 1,
                         min_shift: int | None = None, runs=None, contribution: str = "unique",
                         moved: str = "auto", network_score: str = "mean", group_effects: str = "auto",
                         min_subjects_random: int = MIN_SUBJECTS_RANDOM_EFFECTS, alpha: float = 0.05,
                         min_effect: float = 0.0, min_relative_effect: float = 0.0,
                         min_network_relative_effect: float = 0.0, min_network_relative_marginal: float = 0.0,
                         atom_names=None, batch_size: int = 256, random_state=None, progress=None, cancel=None):
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
        With ``null="phase"``: further draws, at most, for the cells that none of the
        first draws reached, p over all their draws (a valid two-stage p). 0: off.
    sequential_h : int, default 20
        With ``null="phase"``: a cell stops at its ``h``-th draw at or beyond the observed
        statistic, ``p = h / n``; a floor cell declared at the floor draws no further. 0: fixed budget.
    fdr_models : int, default 1
        Models whose tests :func:`family_fdr` pools (the floor cells' check counts them).
    min_shift : int, optional
        For ``null="shift"`` (default ``n_volumes // 10``).
    runs : list of int, optional
        Lengths of the runs (stories) stacked in ``atoms`` and ``fmri``, in order (default:
        one run). A phase draw turns each run's phases on its own (the same draw for every
        subject), so no draw carries one story's time course into another, and the
        between-subject spectrum is each run's own. Drifts per run belong in ``confounds``
        (with ``highpass_cutoff=None``).
    moved : {"auto", "all", "conditional", "unique"}, default "auto"
        What a draw moves (module docstring). ``"all"``: every atom together, exact when
        no atom drives the network. ``"conditional"``: the tested atom's unique part, every
        subject refitted with the other atoms and the nuisance unchanged (a conditional
        randomisation test; needs ``contribution="unique"`` and 2 or more subjects).
        ``"unique"``: the tested atom's unique part against the full model's residual
        (ter Braak), liberal where networks are strongly driven, kept for comparison.
        ``"auto"``: ``"conditional"`` with random effects, ``"all"`` with fixed effects.
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
        spatial smoothness) is not called a link.
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
        largest ``|marginal|`` of any atom for that network: the atom must follow the
        network, not only add to the other atoms (the resemblance rule, module
        docstring). 0: off.
    atom_names : list, optional
    batch_size : int
        Null draws per matrix product (the p do not depend on it).
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
        ``p``, ``n_draws`` (the null draws the p counted), ``q``, ``associated`` (``q < alpha``
        in this direction and ``effect_ok``), ``effect_ok`` (the rules ``min_effect`` /
        ``min_relative_effect`` / ``min_network_relative_marginal`` hold, so that a correction
        over a larger family, :func:`family_fdr`, can declare again), ``test``. ``attrs``: ``criterion`` (the test and its rule in words),
        ``n_permutations``, ``n_refine`` (budgets), ``n_draws`` (cell draws made) and the options.
    """
    _checked_options(null, contribution, network_score, moved, n_permutations, n_refine, alpha, sequential_h,
                     fdr_models)
    X, Ys, networks, runs = _checked_data(atoms, fmri, networks, runs, null)
    k, n_net, S = X.shape[1], networks.shape[0], len(Ys)
    network_names, atlas_names, names = _checked_names(network_names, atlas_names, atom_names, n_net, k)
    method = group_effects_method(S, group_effects, min_random=min_subjects_random)
    moved = _resolved_moved(moved, method, contribution, S)
    # residualise and fit: every subject's network series on the atoms, nuisance removed
    fits = _fit_subjects(X, Ys, networks, tr=tr, highpass_cutoff=highpass_cutoff, confounds=confounds,
                         contribution=contribution, network_score=network_score, progress=progress, cancel=cancel)
    # combine: the group statistic of the observed atoms; draw and refit: the same for every null draw
    model = StimulusNull(fits, runs, moved, method)
    observed = model.observed()
    mc = monte_carlo_pvalues(
        model, observed, null=null, n_permutations=n_permutations, n_refine=n_refine, sequential_h=sequential_h,
        min_shift=min_shift, random_state=random_state, batch_size=batch_size, stage="networks: stimulus null",
        settled=lambda *p: _declared_at_floor(*p, atlas_names, alpha, fdr_models), progress=progress, cancel=cancel)
    p_hi, p_lo, used, refined = mc.p_hi, mc.p_lo, mc.used, mc.refined
    # decide: FDR per atlas, then rules that only remove declarations
    tested = used > 0
    q_hi, q_lo = (_atlas_fdr(p_hi, p_lo, atlas_names, alpha) if tested
                  else (np.full((k, n_net), np.nan), np.full((k, n_net), np.nan)))
    test = f"stimulus-{null}/{contribution}/{network_score}/{method}-effects/moved-{moved}"
    table = _association_table(
        names, atlas_names, network_names, statistic=observed, effect=fits.effect, marginal=fits.marginal,
        p=(p_hi, p_lo), n_draws=(mc.draws_hi, mc.draws_lo), q=(q_hi, q_lo), alpha=alpha, tested=tested, test=test,
        effect_ok=_effect_size_rule(fits.effect, min_effect, min_relative_effect), integer_atoms=atom_names is None)
    _network_rules(table, tested=tested, min_network_relative_marginal=min_network_relative_marginal,
                   min_network_relative_effect=min_network_relative_effect)
    table.attrs.update(_test_attrs(
        tested=tested, null=null, contribution=contribution, network_score=network_score, moved=moved, method=method,
        alpha=alpha, min_effect=min_effect, min_relative_effect=min_relative_effect,
        min_network_relative_marginal=min_network_relative_marginal,
        min_network_relative_effect=min_network_relative_effect, used=used, refined=refined, n_subjects=S, test=test,
        sequential_h=sequential_h), n_draws=mc.n_draws)
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
