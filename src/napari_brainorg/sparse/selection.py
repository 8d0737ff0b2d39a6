"""How many atoms, and how sparse: a sweep of k and λ with a stated rule.

For every (k, λ) and every seed, data are held out of the fit, by ``holdout``:

``"time"`` (default): bi-cross-validation (Owen & Perry 2009) over time and ANs. A
    contiguous block of volumes (``holdout_fraction`` of them, at a random place) is
    held out, with ``gap`` volumes left out on each side of it (the HRF and the
    signals' autocorrelation would otherwise leak across the border), and the ANs are
    split at random into fit ANs and evaluation ANs. The dictionary is learnt on the
    training volumes of the fit ANs; the evaluation ANs are coded on it from the
    training volumes only (:func:`~napari_brainorg.sparse.dictionary.sparse_encode`);
    the atoms' time courses in the held-out block are estimated from the fit ANs by
    least squares on their codes; the score is how well those time courses times the
    evaluation ANs' codes predict the evaluation ANs in the held-out block. Nothing
    the score is computed on (those volumes of those ANs) entered any fit.
``"ans"``: ANs only (the first versions of this sweep): the dictionary is learnt on
    training ANs and held-out ANs are coded on it over the same volumes. Atoms that
    fit noise of these volumes also fit the held-out ANs' noise there, so this
    favours large k; kept for comparison.

The sweep reports

- ``heldout_r2``: variance of the held-out data explained,
  ``1 - sum ||x - D a||^2 / sum ||x - mean(x)||^2`` (means over the held-out volumes),
  pooled over held-out ANs and averaged over seeds;
- ``stability``: the atoms of two seeds (different splits and initialisations)
  matched one to one by the Hungarian algorithm on ``|Pearson r|`` of their time
  courses, the mean matched ``|r|``, averaged over pairs of seeds; and
  ``reproducible_fraction``, the share of atoms whose matched ``|r|`` reaches 0.9.
  Atoms that fit noise, or that split a source differently from seed to seed,
  change between seeds, so too many atoms lowers both;
- ``nonzeros_per_an``: mean number of atoms a held-out AN uses;
- ``encoding_score``: optionally, a downstream score of the dictionary, e.g. the
  mean held-out R² of voxel-wise encoding with the atoms as regressors.

:func:`choose_k_lambda` picks a setting from that table by a documented rule.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd

from .._progress import check_cancel, report
from ..errors import BrainorgWarning, ShapeError, check_choice
from ._encode import sparse_encode
from ._learn import learn_dictionary
from ._objective import _rms_column_norm

__all__ = ["RULES", "choose_k_lambda", "match_atoms", "matched_correlation", "sweep_dictionary"]

#: Rules understood by :func:`choose_k_lambda`.
RULES = ("stable_r2", "parsimonious", "encoding")


def match_atoms(reference, atoms):
    """Match two sets of atoms one to one by ``|Pearson r|`` (Hungarian algorithm).

    Parameters
    ----------
    reference : array of shape (n_volumes, k1)
    atoms : array of shape (n_volumes, k2)

    Returns
    -------
    ref_idx, atom_idx : ndarray of int, shape (min(k1, k2),)
        Matched columns.
    abs_r : ndarray of shape (min(k1, k2),)
        ``|r|`` of each matched pair (the assignment maximises their sum).
    """
    from scipy.optimize import linear_sum_assignment

    reference = np.asarray(reference, dtype=np.float64)
    atoms = np.asarray(atoms, dtype=np.float64)
    if reference.ndim != 2 or atoms.ndim != 2 or reference.shape[0] != atoms.shape[0]:
        raise ShapeError(
            f"'reference' and 'atoms' must be 2D with the same number of volumes (rows); shapes "
            f"{reference.shape} and {atoms.shape} were provided."
        )

    def _unit(a):
        a = a - a.mean(0)
        n = np.linalg.norm(a, axis=0)
        return np.divide(a, n, out=np.zeros_like(a), where=n > 0)

    abs_corr = np.abs(_unit(reference).T @ _unit(atoms))
    rows, cols = linear_sum_assignment(-abs_corr)
    return rows, cols, abs_corr[rows, cols]


def matched_correlation(reference, atoms) -> float:
    """Mean matched ``|Pearson r|`` between two sets of atoms (see :func:`match_atoms`)."""
    return float(np.mean(match_atoms(reference, atoms)[2]))


def _match_common(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matched |r| of two dictionaries over the volumes both were learnt on (NaN rows: not)."""
    common = ~(np.isnan(a).any(1) | np.isnan(b).any(1))
    return match_atoms(a[common], b[common])[2]


def _check_values(name: str, values, kind, minimum, strict: bool) -> list:
    values = list(np.atleast_1d(values).tolist()) if not isinstance(values, (list, tuple)) else list(values)
    if not values:
        raise ValueError(f"{name!r} must hold at least one value; an empty sequence was provided.")
    for v in values:
        ok = isinstance(v, kind) and not isinstance(v, bool) and (v > minimum if strict else v >= minimum)
        if not ok or (isinstance(v, float) and not math.isfinite(v)):
            rel = ">" if strict else ">="
            raise ValueError(f"{name!r} must hold numbers {rel} {minimum}; {v!r} was provided.")
    return values


def sweep_dictionary(X, ks: Sequence[int], lams: Sequence[float], *, n_seeds: int = 3,
                     holdout_fraction: float = 0.2, random_state=None, lam_scale: str = "none",
                     encoding_score: Callable[[np.ndarray], float] | None = None,
                     match_threshold: float = 0.9, init: str = "random", max_iter: int = 200,
                     tol: float = 1e-6, holdout: str = "time", gap: int = 5,
                     backend: str = "numpy", device=None, dtype: str = "float32",
                     progress=None, cancel=None) -> pd.DataFrame:
    """Held-out reconstruction, stability and sparsity of the atoms for each (k, λ).

    Parameters
    ----------
    X : array of shape (n_volumes, n_ans)
        AN responses (z-scored columns).
    ks : sequence of int
        Numbers of atoms to try.
    lams : sequence of float
        Penalties to try: λ of the objective when ``lam_scale="none"``, or relative
        values ``alpha`` with ``λ = alpha * rms column norm of X`` when
        ``lam_scale="rms"`` (the estimator's ``alpha``).
    n_seeds : int, default 3
        Repetitions per setting, each with its own split of the ANs and its own
        initialisation; the same splits serve every setting, so settings are
        compared on the same ANs. Stability needs ``n_seeds >= 2``.
    holdout_fraction : float in (0, 1), default 0.2
        Share of ANs held out of the fit (and, for ``holdout="time"``, share of the
        volumes in the held-out block).
    holdout : {"time", "ans"}, default "time"
        What is held out (see the module's description).
    gap : int, default 5
        ``holdout="time"``: volumes left out of the training on each side of the
        held-out block.
    random_state : int or None
        Seeds the splits and the fits.
    lam_scale : {"none", "rms"}, default "none"
    encoding_score : callable, optional
        ``encoding_score(D) -> float`` for atoms ``D`` of shape (n_volumes, k) (for
        ``holdout="time"``, the atoms' time courses on every volume estimated from the
        fit ANs' codes), e.g.
        the mean cross-validated R² of voxel-wise encoding; averaged over seeds.
    match_threshold : float, default 0.9
        ``|r|`` at which a matched atom counts as reproduced (``reproducible_fraction``).
    init, max_iter, tol, backend, device, dtype
        Passed to :func:`~napari_brainorg.sparse.dictionary.learn_dictionary`.
        ``init="random"`` (default) makes each seed start from different ANs, so
        stability reflects both the data split and the start.
    progress : callable, optional
        ``progress("dictionary sweep", fits_done, n_fits)``.
    cancel : object with ``is_set()``, optional

    Returns
    -------
    DataFrame, one row per (k, λ)
        ``k``, ``lam``, ``alpha`` (λ / rms column norm of X), ``heldout_r2``,
        ``heldout_r2_sd`` (over seeds), ``stability`` (mean matched ``|r|``; NaN if
        ``n_seeds < 2``), ``reproducible_fraction`` (share of atoms whose matched
        ``|r|`` reaches ``match_threshold``, averaged over pairs of seeds),
        ``nonzeros_per_an``, ``encoding_score`` (NaN without a callable),
        ``n_iter`` (mean alternations), ``time_s`` (mean seconds per fit), ``n_seeds``.
    """
    X, ks, lams, n_block, n_test = _check_sweep(X, ks, lams, n_seeds, holdout_fraction, lam_scale, holdout, gap)
    n_volumes = X.shape[0]
    rms = _rms_column_norm(X)
    splits, fit_seeds = _seed_splits(random_state, n_seeds, X.shape, n_block, n_test, gap)
    fit_kw = dict(init=init, max_iter=max_iter, tol=tol, backend=backend, device=device, dtype=dtype,
                  cancel=cancel)
    rows = []
    n_fits = len(ks) * len(lams) * n_seeds
    done = 0
    report(progress, "dictionary sweep", 0, n_fits)
    for k in ks:
        for lam_value in lams:
            lam = float(lam_value) * rms if lam_scale == "rms" else float(lam_value)
            r2s, nnz, scores, iters, times, dicts = [], [], [], [], [], []
            for split, fit_seed in zip(splits, fit_seeds):
                check_cancel(cancel)
                t0 = time.perf_counter()
                fit = (_fit_heldout_ans if holdout == "ans" else _fit_heldout_time)(X, int(k), lam, split, fit_seed,
                                                                                  fit_kw)
                r2s.append(_heldout_r2(fit["X_test"], fit["resid"]))
                nnz.append(float((fit["A_test"] != 0).sum(0).mean()))
                scores.append(float(encoding_score(fit["atoms_all"])) if encoding_score is not None else np.nan)
                iters.append(fit["n_iter"])
                times.append(time.perf_counter() - t0)
                full = np.full((n_volumes, fit["D"].shape[1]), np.nan)
                full[fit["fit_volumes"]] = fit["D"]
                dicts.append(full)
                done += 1
                report(progress, "dictionary sweep", done, n_fits)
            stability, reproducible = _stability(dicts, n_seeds, match_threshold)
            rows.append({
                "k": int(k),
                "lam": lam,
                "alpha": lam / rms if rms > 0 else np.nan,
                "heldout_r2": float(np.mean(r2s)),
                "heldout_r2_sd": float(np.std(r2s, ddof=1)) if n_seeds > 1 else np.nan,
                "stability": stability,
                "reproducible_fraction": reproducible,
                "nonzeros_per_an": float(np.mean(nnz)),
                "encoding_score": float(np.mean(scores)),
                "n_iter": float(np.mean(iters)),
                "time_s": float(np.mean(times)),
                "n_seeds": n_seeds,
            })
    return pd.DataFrame(rows)


def _check_sweep(X, ks, lams, n_seeds, holdout_fraction, lam_scale, holdout, gap):
    """Check :func:`sweep_dictionary`'s arguments; the held-out block's and test set's sizes.

    Returns
    -------
    X : ndarray of shape (n_volumes, n_ans)
    ks, lams : list
    n_block : int
        Volumes in the held-out block (``holdout="time"``).
    n_test : int
        Held-out ANs.
    """
    if not hasattr(X, "shape") or len(X.shape) != 2:
        raise ShapeError(f"'X' must be a 2D array of shape (n_volumes, n_ans); shape "
                         f"{getattr(X, 'shape', None)} was provided.")
    X = np.asarray(X)
    n_volumes, n_ans = X.shape
    ks = _check_values("ks", ks, Integral, 0, strict=True)
    lams = _check_values("lams", lams, Real, 0, strict=False)
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, Integral) or n_seeds < 1:
        raise ValueError(f"'n_seeds' must be an integer >= 1; {n_seeds!r} was provided.")
    if not isinstance(holdout_fraction, Real) or not 0 < holdout_fraction < 1:
        raise ValueError(f"'holdout_fraction' must be a number in (0, 1); {holdout_fraction!r} was provided.")
    check_choice("lam_scale", lam_scale, ("none", "rms"))
    check_choice("holdout", holdout, ("time", "ans"))
    if isinstance(gap, bool) or not isinstance(gap, Integral) or gap < 0:
        raise ValueError(f"'gap' must be an integer >= 0 (volumes); {gap!r} was provided.")
    n_block = int(round(holdout_fraction * n_volumes))
    if holdout == "time" and (n_block < 2 or n_volumes - n_block - 2 * gap < max(ks) + 1):
        raise ValueError(
            f"'holdout_fraction'={holdout_fraction} and 'gap'={gap} leave a held-out block of {n_block} "
            f"volumes and at most {n_volumes - n_block - 2 * gap} training volumes out of {n_volumes}; "
            f"the block needs at least 2 and the training more than the largest k ({max(ks)})."
        )
    n_test = int(round(holdout_fraction * n_ans))
    if n_test < 1 or n_ans - n_test < 1:
        raise ValueError(
            f"'holdout_fraction'={holdout_fraction} leaves {n_test} held-out and {n_ans - n_test} "
            f"training ANs out of {n_ans}; both need at least one."
        )
    return X, ks, lams, n_block, n_test


def _seed_splits(random_state, n_seeds: int, shape: tuple[int, int], n_block: int, n_test: int, gap: int):
    """Each seed's split of the ANs and of the volumes, and the seed of its fit.

    Every (k, λ) uses the same splits, so settings are compared on the same ANs.

    Returns
    -------
    splits : list of ((fit_ans, test_ans), (train_volumes, block)) int arrays
        ``block``: the held-out volumes (``holdout="time"``); ``train_volumes``: the
        volumes outside it and its ``gap`` on each side.
    fit_seeds : list of int
    """
    n_volumes, n_ans = shape
    seeds = np.random.SeedSequence(random_state).spawn(n_seeds)
    splits, fit_seeds = [], []
    for ss in seeds:
        rng = np.random.default_rng(ss)
        perm = rng.permutation(n_ans)
        ans_split = (np.sort(perm[n_test:]), np.sort(perm[:n_test]))
        start = int(rng.integers(0, n_volumes - n_block + 1))
        block = np.arange(start, start + n_block)
        train_vol = np.setdiff1d(np.arange(n_volumes), np.arange(start - gap, start + n_block + gap))
        splits.append((ans_split, (train_vol, block)))
        fit_seeds.append(int(rng.integers(2**31 - 1)))
    return splits, fit_seeds


def _fit_heldout_ans(X, k: int, lam: float, split, fit_seed: int, fit_kw: dict) -> dict:
    """``holdout="ans"``: learn on the fit ANs, code the held-out ANs over the same volumes.

    Returns
    -------
    dict
        ``D`` (n_volumes, k) the atoms and ``fit_volumes`` the volumes they cover
        (all); ``atoms_all`` what ``encoding_score`` gets (``D``); ``X_test``
        (n_volumes, n_test) the held-out data, ``A_test`` (k, n_test) their codes
        and ``resid`` their residual, float64; ``n_iter`` the alternations.
    """
    (train, test), _ = split
    D, _, info = learn_dictionary(X[:, train], k, lam, random_state=fit_seed, **fit_kw)
    X_test = X[:, test].astype(np.float64)
    A_test = sparse_encode(X_test, D, lam, backend=fit_kw["backend"], device=fit_kw["device"],
                           dtype=fit_kw["dtype"], cancel=fit_kw["cancel"]).astype(np.float64)
    resid = X_test - D.astype(np.float64) @ A_test
    return dict(D=D, fit_volumes=np.arange(X.shape[0]), atoms_all=D, X_test=X_test, A_test=A_test,
                resid=resid, n_iter=info["n_iter"])


def _fit_heldout_time(X, k: int, lam: float, split, fit_seed: int, fit_kw: dict) -> dict:
    """``holdout="time"``: bi-cross-validation over the volumes and the ANs.

    The dictionary is learnt on the training volumes of the fit ANs; the held-out
    ANs are coded on it from the training volumes; the atoms' time courses in the
    held-out block are estimated from the fit ANs by (ridge-stabilised) least
    squares on their codes, and predict the held-out ANs there.

    Returns
    -------
    dict
        ``D`` (n_train_volumes, k) the atoms and ``fit_volumes`` the volumes they
        cover; ``atoms_all`` (n_volumes, k) the atoms' time courses on every volume,
        from the fit ANs' codes (what ``encoding_score`` gets); ``X_test``
        (n_block, n_test) the held-out block of the held-out ANs, ``A_test``
        (k, n_test) their codes and ``resid`` their residual, float64; ``n_iter``.
    """
    (train, test), (train_vol, block) = split
    n_volumes = X.shape[0]
    # λ keeps its correlation scale on the shorter training series
    lam_t = lam * math.sqrt(len(train_vol) / n_volumes)
    X_fit = np.ascontiguousarray(X[np.ix_(train_vol, train)])
    D, A_fit, info = learn_dictionary(X_fit, k, lam_t, random_state=fit_seed, **fit_kw)
    A_test = sparse_encode(np.ascontiguousarray(X[np.ix_(train_vol, test)]), D, lam_t,
                           backend=fit_kw["backend"], device=fit_kw["device"], dtype=fit_kw["dtype"],
                           cancel=fit_kw["cancel"]).astype(np.float64)
    A_fit = A_fit.astype(np.float64)
    # the atoms in the held-out block, from the fit ANs (ridge-stabilised LS)
    gram = A_fit @ A_fit.T
    gram[np.diag_indices_from(gram)] += 1e-6 * max(float(np.trace(gram)) / max(k, 1), 1e-12)
    # (all volumes: the block's rows are what the score uses; the whole series
    # serves encoding_score, which needs the atoms on every volume)
    D_all = np.linalg.solve(gram, A_fit @ X[:, train].astype(np.float64).T).T
    D_block = D_all[block]
    X_test = X[np.ix_(block, test)].astype(np.float64)
    resid = X_test - D_block @ A_test
    return dict(D=D, fit_volumes=train_vol, atoms_all=D_all, X_test=X_test, A_test=A_test, resid=resid,
                n_iter=info["n_iter"])


def _heldout_r2(X_test: np.ndarray, resid: np.ndarray) -> float:
    """``1 - ||resid||^2 / ||X_test - mean||^2`` (means over the held-out volumes); NaN if flat.

    ``X_test`` and ``resid`` of shape (n_heldout_volumes, n_test), float64.
    """
    total = X_test - X_test.mean(0)
    ss_tot = float(np.einsum("ij,ij->", total, total))
    return 1.0 - float(np.einsum("ij,ij->", resid, resid)) / ss_tot if ss_tot > 0 else np.nan


def _stability(dicts: list, n_seeds: int, match_threshold: float) -> tuple[float, float]:
    """Mean matched ``|r|`` of the atoms over pairs of seeds, and the share reaching ``match_threshold``.

    ``dicts``: each seed's atoms of shape (n_volumes, k), NaN on the volumes its fit
    did not see; a pair is matched over the volumes both saw. NaN for one seed.
    """
    pairs = [_match_common(dicts[a], dicts[b])
             for a in range(n_seeds) for b in range(a + 1, n_seeds)]
    stability = float(np.mean([p.mean() for p in pairs])) if pairs else np.nan
    reproducible = float(np.mean([(p >= match_threshold).mean() for p in pairs])) if pairs else np.nan
    return stability, reproducible


def choose_k_lambda(table: pd.DataFrame, rule: str = "stable_r2", *, min_stability: float = 0.8,
                    min_reproducible: float = 0.9, tolerance: float = 0.01) -> pd.Series:
    """Pick (k, λ) from a :func:`sweep_dictionary` table by a stated rule.

    Every rule first keeps the *stable* settings: ``stability >= min_stability``
    (mean matched ``|r|`` of the atoms across seeds) and ``reproducible_fraction >=
    min_reproducible`` (at least that share of the atoms comes back, matched one to
    one with ``|r| >= 0.9``, from other splits of the ANs and other starts). The
    second condition matters: a few atoms that fit noise barely move the mean
    ``|r|`` of a large dictionary, and held-out R² keeps creeping up with more
    atoms (less shrinkage of the codes), so neither alone stops k from growing.
    Then:

    - ``"stable_r2"`` (default): the stable setting with the largest held-out R².
    - ``"parsimonious"``: the simplest stable setting whose held-out R² is within
      ``tolerance`` of the best stable one: the fewest atoms, then, at that k, the
      largest λ (the sparsest codes).
    - ``"encoding"``: the stable setting with the largest ``encoding_score``.

    If no setting is stable, the one with the largest ``reproducible_fraction``
    (then ``stability``) is returned with a
    :class:`~napari_brainorg.errors.BrainorgWarning`.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`sweep_dictionary`.
    rule : {"stable_r2", "parsimonious", "encoding"}
    min_stability : float, default 0.8
    min_reproducible : float, default 0.9
    tolerance : float, default 0.01
        Held-out R² a simpler setting may give up under the ``"parsimonious"`` rule.

    Returns
    -------
    Series
        The chosen row (``k``, ``lam``, ``alpha``, scores...), its index label as name.
    """
    check_choice("rule", rule, RULES)
    needed = {"k", "lam", "heldout_r2", "stability", "reproducible_fraction"}
    if rule == "encoding":
        needed.add("encoding_score")
    missing = needed - set(table.columns)
    if missing:
        raise ShapeError(f"'table' must be a sweep_dictionary table; columns {sorted(missing)} are missing.")
    if table.empty:
        raise ValueError("'table' has no rows; run sweep_dictionary with at least one k and λ.")
    if table["stability"].isna().all():
        raise ValueError("'table' has no stability (n_seeds=1); sweep with n_seeds >= 2 to choose by this rule.")
    if rule == "encoding" and table["encoding_score"].isna().all():
        raise ValueError("rule 'encoding' needs an encoding_score; pass encoding_score= to sweep_dictionary.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or tolerance < 0:
        raise ValueError(f"'tolerance' must be a number >= 0; {tolerance!r} was provided.")
    stable = table[(table["stability"] >= min_stability)
                   & (table["reproducible_fraction"] >= min_reproducible)]
    if stable.empty:
        best = table.sort_values(["reproducible_fraction", "stability"], ascending=False,
                                 kind="stable").iloc[0]
        warnings.warn(
            f"No (k, lambda) reaches stability {min_stability} with {min_reproducible:.0%} of atoms "
            f"reproduced (best: {best['reproducible_fraction']:.0%} reproduced, stability "
            f"{best['stability']:.3f} at k={int(best['k'])}, lam={best['lam']:.4g}); returning "
            f"the most stable setting.",
            BrainorgWarning,
            stacklevel=2,
        )
        return best
    if rule == "stable_r2":
        return stable.loc[stable["heldout_r2"].idxmax()]
    if rule == "encoding":
        return stable.loc[stable["encoding_score"].idxmax()]
    near = stable[stable["heldout_r2"] >= stable["heldout_r2"].max() - tolerance]
    at_k = near[near["k"] == near["k"].min()]
    return at_k.loc[at_k["lam"].idxmax()]
