"""Step ``atoms/<model>``: the sparse dictionary over a model's ANs.

Reads
    the features step's AN responses (optionally equal-sized draws of ANs per layer, and
    only the stories of ``atoms.stories``).
Writes
    ``atoms/<model>/atoms.npy`` (n_volumes, k), ``codes.npz`` (k, n_ANs, sparse),
    ``columns.npy`` (the ANs used), ``layer_hist.tsv``, ``dictionary.json`` (options,
    objective, atom reproducibility over other starts, the size-control spread) and
    ``restart_atoms.npy`` (n_restarts, n_volumes, k: the other starts' atoms matched to these).
    ``atoms.tsv`` is written later by the networks step (it annotates the atoms).
Key
    the ``atoms`` options and the features step's key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ConfigError
from ..context import StepContext
from ..study import study_runs


def step_atoms(ctx: StepContext, ans, slug: str):
    """The dictionary of ``slug`` learned on ``ans`` (or read back from its stamp).

    Parameters
    ----------
    ctx : StepContext
    ans : ANResponses
        The features step's responses, (n_volumes, n_ans).
    slug : str
        The model's folder name (``atoms/<slug>/``).

    Returns
    -------
    atoms : ndarray of shape (n_volumes, k)
        Unit-norm time courses (every story's volumes, also those not learned on).
    codes : scipy.sparse.csr_matrix of shape (k, n_ans_used)
    index : DataFrame
        ``layer, unit, site`` of the ANs used (the codes' columns).
    """
    import pandas as pd
    import scipy.sparse as sp

    from ...sparse.atoms import layer_histogram
    from ...sparse.dictionary import SparseDictionary

    cfg = ctx.config.atoms
    rel = f"atoms/{slug}"
    # atoms.tsv is not an output of this step: the networks step rewrites it (annotated)
    outputs = [f"{rel}/atoms.npy", f"{rel}/codes.npz", f"{rel}/dictionary.json", f"{rel}/layer_hist.tsv",
               f"{rel}/columns.npy"] + ([f"{rel}/restart_atoms.npy"] if cfg.n_restarts else [])
    step = f"atoms/{slug}"
    if ctx.cached(step, [cfg.model_dump(mode="json"), ctx.keys[f"features/{slug}"]], outputs):
        atoms = np.load(ctx.out / outputs[0])
        codes = sp.load_npz(ctx.out / outputs[1])
        columns = np.load(ctx.out / outputs[4])
        return atoms, codes, ans.index.iloc[columns].reset_index(drop=True)

    X = ans.responses
    index = ans.index
    columns = np.arange(X.shape[1])
    draws = None
    if cfg.ans_per_layer or cfg.ans_total:
        from ...analyses.subsample import subsample_ans

        try:
            draws = subsample_ans(index, n_per_layer=cfg.ans_per_layer, n_total=cfg.ans_total,
                                  by_layer=cfg.ans_by_layer, n_draws=cfg.size_draws, random_state=cfg.seed)
        except ValueError as exc:
            raise ConfigError(f"atoms: model {slug!r} ({X.shape[1]} ANs): {exc}") from None
        columns = np.sort(np.asarray(draws[0]))
        X = X[:, columns]
        index = index.iloc[columns].reset_index(drop=True)
    backend = cfg.backend
    # several stories: the dictionary may be learned on some of them (atoms.stories)
    rows = None
    if cfg.stories is not None and ctx.config.multi_story:
        from ...encoding.stories import run_rows

        rows = run_rows(study_runs(ctx.config), cfg.stories)
    X_all = X
    if rows is not None:
        X = X[rows]
    est = SparseDictionary(n_atoms=cfg.n_atoms, alpha=cfg.alpha, max_iter=cfg.max_iter, tol=cfg.tol,
                           init=cfg.init, random_state=cfg.seed, backend=backend)
    est.fit(X.T, progress=ctx.progress, cancel=ctx.cancel)
    atoms = np.asarray(est.atoms_, dtype=np.float32)
    codes = sp.csr_matrix(est.codes_)
    if rows is not None:
        from ...sparse.atoms import atoms_on_new_volumes

        # the other stories' atom time courses: their ANs projected on the codes
        full = atoms_on_new_volumes(X_all, codes).astype(np.float32)
        full[rows] = atoms
        atoms = full
    flipped = np.zeros(atoms.shape[1], bool)
    if cfg.orient == "members":
        from ...sparse.atoms import orient_atoms

        atoms, codes, flipped = orient_atoms(atoms, codes)
    reproducibility, restarts = _atom_reproducibility(ctx, X, atoms, X_all=X_all, rows=rows)
    size_control = _size_control_spread(ctx, ans.responses, draws, atoms) if draws is not None else None
    hist = layer_histogram(codes, index)
    hist_df = hist.copy()
    hist_df.insert(0, "atom", np.arange(len(hist_df)))
    w = ctx.writer
    w.write_npy(outputs[0], atoms)
    w.write_npz_sparse(outputs[1], codes)
    w.write_table(outputs[3], pd.DataFrame(hist_df))
    w.write_npy(outputs[4], columns)
    if restarts is not None:  # the networks step asks whether each link recurs with them
        w.write_npy(f"{rel}/restart_atoms.npy", restarts)
    w.write_json(f"{rel}/dictionary.json", {
        "n_atoms": cfg.n_atoms, "alpha": float(getattr(est, "alpha", np.nan)) if not isinstance(getattr(est, "alpha", None), str) else est.alpha,
        "n_iter": int(getattr(est, "n_iter_", -1)),
        "objective": [float(v) for v in np.atleast_1d(getattr(est, "objective_", []))],
        "n_ans": int(X.shape[1]), "mean_nonzero_per_an": float(codes.getnnz() / max(X.shape[1], 1)),
        "init": cfg.init, "seed": cfg.seed,
        "orient": cfg.orient, "n_flipped": int(flipped.sum()),
        "stories": ([r[0] for r in ctx.runs] if cfg.stories is None else list(cfg.stories)),
        "other_stories": (None if rows is None else
                          "atom time courses = least-squares projection of the story's ANs on the codes"),
        "reproducibility": reproducibility,
        "size_control": size_control,
    })
    ctx.done(step)
    return atoms, codes, index


def _size_control_spread(ctx: StepContext, X_all: np.ndarray, draws: list, atoms: np.ndarray) -> dict:
    """Dictionary of every draw of equal-sized AN sets: the spread over draws of the share
    of variance explained, codes per AN and atoms matched to the first draw's."""
    from ...sparse.dictionary import SparseDictionary
    from ...sparse.selection import match_atoms

    cfg = ctx.config.atoms
    rows = []
    for i, columns in enumerate(draws):
        ctx.stage("size control draws", i, len(draws))
        X = np.ascontiguousarray(X_all[:, np.sort(columns)].T)
        est = SparseDictionary(n_atoms=cfg.n_atoms, alpha=cfg.alpha, max_iter=cfg.max_iter, tol=cfg.tol,
                               init=cfg.init, random_state=cfg.seed, backend=cfg.backend)
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, cancel=ctx.cancel)
        codes = np.asarray(est.codes_, np.float64)
        resid = X - codes.T @ est.components_
        rows.append({
            "explained_variance": float(1 - (resid ** 2).sum() / ((X - X.mean(1, keepdims=True)) ** 2).sum()),
            "codes_per_an": float((codes != 0).sum(0).mean()),
            "matched_to_first": float((match_atoms(atoms, est.atoms_)[2] >= 0.9).mean()),
        })
    out: dict[str, Any] = {"rule": ("ans_total" if cfg.ans_total else "ans_per_layer"),
                           "n_ans_per_draw": int(len(draws[0])), "n_draws": len(draws),
                           "by_layer": bool(cfg.ans_by_layer) if cfg.ans_total else True}
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        out[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "values": [float(v) for v in values]}
    return out


def _atom_reproducibility(ctx: StepContext, X: np.ndarray, atoms: np.ndarray, *, X_all: np.ndarray,
                          rows=None) -> tuple[dict | None, np.ndarray | None]:
    """Learn the dictionary again from ``n_restarts`` other starts (seeds seed+1, ...):
    each atom's matched |r| (Hungarian, mean over restarts; ``per_atom``, the
    ``reproducibility`` column of atoms.tsv) and the fraction matched at |r| >= 0.9.

    Also returns the restarts' atoms aligned with ``atoms``, shape (n_restarts, n_volumes,
    k): column j of restart i is the atom matched to atom j, its sign turned to correlate
    positively (every volume: with ``rows``, the dictionary's volumes, the others projected
    as for the atoms), or None without restarts."""
    from ...sparse.dictionary import SparseDictionary
    from ...sparse.selection import match_atoms

    cfg = ctx.config.atoms
    if not cfg.n_restarts:
        return None, None
    learned_on = atoms if rows is None else atoms[rows]
    best = np.zeros((cfg.n_restarts, atoms.shape[1]))
    aligned = np.zeros((cfg.n_restarts, *atoms.shape), np.float32)
    for i in range(cfg.n_restarts):
        ctx.stage("atom reproducibility", i, cfg.n_restarts)
        other = SparseDictionary(n_atoms=cfg.n_atoms, alpha=cfg.alpha, max_iter=cfg.max_iter, tol=cfg.tol,
                                 init=cfg.init, random_state=cfg.seed + 1 + i, backend=cfg.backend)
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the kept start warns already
            other.fit(X.T, cancel=ctx.cancel)
        ref_idx, other_idx, abs_r = match_atoms(learned_on, other.atoms_)
        best[i, ref_idx] = abs_r
        courses = np.asarray(other.atoms_, np.float64)
        if rows is not None:
            from ...sparse.atoms import atoms_on_new_volumes

            full = atoms_on_new_volumes(X_all, other.codes_)
            full[rows] = courses
            courses = full
        for j, m in zip(ref_idx, other_idx):
            sign = 1.0 if np.corrcoef(learned_on[:, j], other.atoms_[:, m])[0, 1] >= 0 else -1.0
            aligned[i, :, j] = sign * courses[:, m]
    fractions = (best >= 0.9).mean(1)
    return {"n_restarts": cfg.n_restarts, "seeds": [cfg.seed + 1 + i for i in range(cfg.n_restarts)],
            "threshold": 0.9, "fraction_reproduced": [float(f) for f in fractions],
            "mean_fraction_reproduced": float(fractions.mean()),
            "rule": "each atom matched one to one to another start's atoms by |Pearson r| (Hungarian)",
            "per_atom": [float(v) for v in best.mean(0)]}, aligned
