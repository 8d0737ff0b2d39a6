"""What each atom is made of: its member ANs and their distribution over layers.

An atom's members are the ANs whose code on it is non-zero (or larger than
``min_abs`` in absolute value): the sub-group of ANs, spread over layers, that
share that temporal response (METHOD §2). Codes come as the dictionary's
``codes_`` of shape (n_atoms, n_ans), dense or scipy.sparse; ``an_index`` is the
table of ANs in column order with columns ``layer``, ``unit``, ``site``.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd

from ..errors import ShapeError

__all__ = ["atom_members", "atoms_table", "layer_histogram", "orient_atoms"]


def _check_min_abs(min_abs) -> float:
    if isinstance(min_abs, bool) or not isinstance(min_abs, Real) or not np.isfinite(min_abs) or min_abs < 0:
        raise ValueError(f"'min_abs' must be a finite number >= 0; {min_abs!r} was provided.")
    return float(min_abs)


def _check_inputs(codes, an_index) -> tuple[int, int]:
    if not isinstance(an_index, pd.DataFrame):
        raise TypeError(
            f"'an_index' must be a pandas DataFrame with columns layer, unit, site; "
            f"a {type(an_index).__name__} was provided."
        )
    if "layer" not in an_index.columns:
        raise ShapeError(
            f"'an_index' must have a 'layer' column (columns layer, unit, site); it has "
            f"{list(an_index.columns)}."
        )
    shape = getattr(codes, "shape", None)
    if shape is None or len(shape) != 2:
        raise ShapeError(
            f"'codes' must be a 2D array of shape (n_atoms, n_ans); shape {shape} was provided."
        )
    n_atoms, n_ans = (int(s) for s in shape)
    if n_ans != len(an_index):
        hint = " Transpose it: codes are (n_atoms, n_ans)." if n_atoms == len(an_index) else ""
        raise ShapeError(
            f"'codes' must have one column per row of 'an_index': expected shape (n_atoms, "
            f"{len(an_index)}); shape {(n_atoms, n_ans)} was provided.{hint}"
        )
    return n_atoms, n_ans


def _members(codes, min_abs: float):
    """(atom, an, code) of every member, in atom order, then |code| descending."""
    import scipy.sparse as sp

    if sp.issparse(codes):
        coo = sp.coo_matrix(codes)
        rows, cols, vals = coo.row.astype(np.int64), coo.col.astype(np.int64), np.asarray(coo.data)
        keep = np.abs(vals) > min_abs
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    else:
        codes = np.asarray(codes)
        rows, cols = np.nonzero(np.abs(codes) > min_abs)
        vals = codes[rows, cols]
    order = np.lexsort((cols, -np.abs(vals), rows))
    return rows[order], cols[order], vals[order]


def _layer_positions(an_index: pd.DataFrame, layers=None):
    """Sorted layer labels and each AN's position among them."""
    an_layers = an_index["layer"].to_numpy()
    if layers is None:
        labels = np.unique(an_layers)
    else:
        labels = np.asarray(list(layers))
        missing = np.setdiff1d(np.unique(an_layers), labels)
        if missing.size:
            raise ValueError(
                f"'layers' must include every layer of 'an_index'; {missing[:5].tolist()} are missing."
            )
    pos = np.searchsorted(labels, an_layers) if layers is None else pd.Index(labels).get_indexer(an_layers)
    return labels, pos


def atom_members(codes, an_index: pd.DataFrame, min_abs: float = 0.0) -> list[pd.DataFrame]:
    """The member ANs of every atom.

    Parameters
    ----------
    codes : array or scipy.sparse matrix of shape (n_atoms, n_ans)
    an_index : DataFrame of n_ans rows
        Columns ``layer``, ``unit``, ``site`` (any other columns are carried along).
    min_abs : float, default 0.0
        An AN is a member when ``|code| > min_abs`` (0: every non-zero code).

    Returns
    -------
    list of DataFrame, one per atom
        Columns ``an`` (column of the AN in ``codes``), the columns of ``an_index``,
        and ``code``; sorted by ``|code|``, largest first. An atom with no member
        gets an empty frame with the same columns.
    """
    n_atoms, _ = _check_inputs(codes, an_index)
    min_abs = _check_min_abs(min_abs)
    rows, cols, vals = _members(codes, min_abs)
    table = an_index.iloc[cols].reset_index(drop=True)
    table.insert(0, "an", cols)
    table["code"] = vals
    bounds = np.searchsorted(rows, np.arange(n_atoms + 1))
    return [table.iloc[bounds[j]:bounds[j + 1]].reset_index(drop=True) for j in range(n_atoms)]


def layer_histogram(codes, an_index: pd.DataFrame, *, min_abs: float = 0.0, weight: str = "count",
                    normalize: bool = False, layers=None) -> pd.DataFrame:
    """How each atom's members spread over the layers.

    Parameters
    ----------
    codes : array or scipy.sparse matrix of shape (n_atoms, n_ans)
    an_index : DataFrame of n_ans rows with a ``layer`` column
    min_abs : float, default 0.0
        Membership threshold on ``|code|`` (see :func:`atom_members`).
    weight : {"count", "abs"}, default "count"
        Count the members, or sum their ``|code|``.
    normalize : bool, default False
        Divide each atom's row by its total (an atom with no member stays at 0).
    layers : sequence, optional
        Layer labels to use as columns (all of ``an_index``'s layers must be among
        them); default: the layers present in ``an_index``, sorted.

    Returns
    -------
    DataFrame of shape (n_atoms, n_layers)
        Index ``atom`` (0..n_atoms-1), one column per layer label.
    """
    from ..errors import check_choice

    n_atoms, _ = _check_inputs(codes, an_index)
    min_abs = _check_min_abs(min_abs)
    check_choice("weight", weight, ("count", "abs"))
    labels, pos = _layer_positions(an_index, layers)
    rows, cols, vals = _members(codes, min_abs)
    n_layers = len(labels)
    w = None if weight == "count" else np.abs(vals).astype(np.float64)
    hist = np.bincount(rows * n_layers + pos[cols], weights=w, minlength=n_atoms * n_layers)
    hist = hist.reshape(n_atoms, n_layers)
    if weight == "count":
        hist = hist.astype(np.int64)
    if normalize:
        totals = hist.sum(1, keepdims=True).astype(np.float64)
        hist = np.divide(hist, totals, out=np.zeros(hist.shape), where=totals > 0)
    return pd.DataFrame(hist, index=pd.RangeIndex(n_atoms, name="atom"),
                        columns=pd.Index(labels, name="layer"))


def _main_layers(counts: np.ndarray, labels: np.ndarray, share: float) -> list[str]:
    """Per atom: the fewest layers (most members first) that hold ``share`` of its members."""
    order = np.argsort(-counts, axis=1, kind="stable")  # ties: the lower layer first
    sorted_counts = np.take_along_axis(counts, order, axis=1)
    totals = counts.sum(1)
    cum = np.cumsum(sorted_counts, axis=1)
    n_needed = (cum < share * totals[:, None] - 1e-9).sum(1) + 1
    out = []
    for j in range(counts.shape[0]):  # one string per atom
        if totals[j] == 0:
            out.append("")
            continue
        chosen = np.sort(labels[order[j, : n_needed[j]]])
        out.append(",".join(str(x) for x in chosen))
    return out


def atoms_table(codes, an_index: pd.DataFrame, *, min_abs: float = 0.0,
                main_share: float = 0.5) -> pd.DataFrame:
    """One row per atom: how many ANs use it and in which layers they sit.

    Parameters
    ----------
    codes : array or scipy.sparse matrix of shape (n_atoms, n_ans)
    an_index : DataFrame of n_ans rows with a ``layer`` column
    min_abs : float, default 0.0
        Membership threshold on ``|code|`` (see :func:`atom_members`).
    main_share : float in (0, 1], default 0.5
        ``main_layers`` lists the fewest layers, taken from the most populated down
        (ties: the lower layer first), that together hold at least this share of
        the atom's members, in ascending order, e.g. ``"3,4"``.

    Returns
    -------
    DataFrame with columns
        ``atom``, ``n_ans`` (members), ``fraction_ans`` (members / n_ans),
        ``n_positive``, ``n_negative`` (members by the sign of their code),
        ``n_layers_spanned`` (layers with at least one member), ``peak_layer`` (the
        layer with the most members; empty if none), ``main_layers``,
        ``mean_abs_code`` (mean |code| over members; 0 if none).
    """
    n_atoms, n_ans = _check_inputs(codes, an_index)
    min_abs = _check_min_abs(min_abs)
    if isinstance(main_share, bool) or not isinstance(main_share, Real) or not 0 < main_share <= 1:
        raise ValueError(f"'main_share' must be a number in (0, 1]; {main_share!r} was provided.")
    labels, pos = _layer_positions(an_index)
    rows, cols, vals = _members(codes, min_abs)
    n_layers = len(labels)
    counts = np.bincount(rows * n_layers + pos[cols], minlength=n_atoms * n_layers).reshape(n_atoms, n_layers)
    n_members = counts.sum(1)
    abs_sum = np.bincount(rows, weights=np.abs(vals).astype(np.float64), minlength=n_atoms)
    n_pos = np.bincount(rows, weights=(vals > 0).astype(np.float64), minlength=n_atoms).astype(np.int64)
    peak = np.where(n_members > 0, labels[counts.argmax(1)].astype(object), "") if n_layers else \
        np.full(n_atoms, "", dtype=object)
    return pd.DataFrame({
        "atom": np.arange(n_atoms),
        "n_ans": n_members.astype(np.int64),
        "fraction_ans": n_members / max(n_ans, 1),
        "n_positive": n_pos,
        "n_negative": n_members.astype(np.int64) - n_pos,
        "n_layers_spanned": (counts > 0).sum(1).astype(np.int64),
        "peak_layer": peak,
        "main_layers": _main_layers(counts, labels, float(main_share)) if n_layers else [""] * n_atoms,
        "mean_abs_code": np.divide(abs_sum, n_members, out=np.zeros(n_atoms), where=n_members > 0),
    })


def orient_atoms(atoms, codes):
    """Orient every atom so that most of its member ANs have positive codes.

    ``X ~ D A`` is unchanged when an atom's time course (column of ``D``) and its codes
    (row of ``A``) change sign together, so the sign of an atom is arbitrary until a
    rule fixes it. The rule: an atom is flipped when more of its members have a
    negative code than a positive one (the median member code is negative); on a tie,
    when the sum of its member codes is negative; on a second tie (or no members), when
    its time course's largest absolute value is negative. After it, a positive atom
    time course means that most of its ANs respond more than their mean, so a voxel
    map's positive ("activated") part is where the brain follows the ANs' increases.

    Parameters
    ----------
    atoms : ndarray of shape (n_volumes, n_atoms)
    codes : ndarray or scipy.sparse matrix of shape (n_atoms, n_ans)

    Returns
    -------
    atoms : ndarray of shape (n_volumes, n_atoms)
        Oriented copy.
    codes : same type as ``codes``, shape (n_atoms, n_ans)
        Oriented copy.
    flipped : ndarray of shape (n_atoms,), bool
        The atoms whose sign was changed.
    """
    import scipy.sparse as sp

    atoms = np.asarray(atoms)
    if atoms.ndim != 2 or getattr(codes, "shape", (None,))[0] != atoms.shape[1]:
        raise ShapeError(
            f"'atoms' (n_volumes, n_atoms) and 'codes' (n_atoms, n_ans) must agree on n_atoms; shapes "
            f"{atoms.shape} and {getattr(codes, 'shape', None)} were provided."
        )
    n_atoms = atoms.shape[1]
    if sp.issparse(codes):
        coo = sp.coo_matrix(codes)
        rows, vals = coo.row.astype(np.int64), np.asarray(coo.data, dtype=np.float64)
    else:
        dense = np.asarray(codes)
        rows, cols = np.nonzero(dense)
        vals = dense[rows, cols].astype(np.float64)
    majority = np.bincount(rows, weights=np.sign(vals), minlength=n_atoms)
    total = np.bincount(rows, weights=vals, minlength=n_atoms)
    peak = atoms[np.abs(atoms).argmax(0), np.arange(n_atoms)] if atoms.shape[0] else np.zeros(n_atoms)
    sign = np.where(majority != 0, np.sign(majority), np.where(total != 0, np.sign(total), np.sign(peak)))
    flipped = sign < 0
    factor = np.where(flipped, -1.0, 1.0)
    out_atoms = atoms * factor.astype(atoms.dtype)
    if sp.issparse(codes):
        out_codes = (sp.diags(factor.astype(codes.dtype)) @ codes).asformat(codes.format)
    else:
        out_codes = np.asarray(codes) * factor[:, None].astype(np.asarray(codes).dtype)
    return out_atoms, out_codes, flipped


def atoms_on_new_volumes(an_responses, codes) -> np.ndarray:
    """The atoms' time courses on volumes the dictionary was not learned on.

    With the codes ``C`` fixed (which ANs make each atom, with what weight), the atoms'
    time courses ``D`` on new volumes are the least-squares solution of
    ``X_new ≈ D C``: ``D = X_new C' (C C')^+``, on the same scale as the learned atoms
    (``X ≈ D C`` on the training volumes).

    Parameters
    ----------
    an_responses : ndarray of shape (n_new_volumes, n_ans)
        The ANs' responses on the new volumes (the columns of ``codes``).
    codes : ndarray or scipy.sparse matrix of shape (k, n_ans)

    Returns
    -------
    atoms : ndarray of shape (n_new_volumes, k), float64
        An atom that no AN uses is 0.
    """
    X = np.asarray(an_responses, dtype=np.float64)
    C = codes.toarray() if hasattr(codes, "toarray") else np.asarray(codes, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if C.shape[1] != X.shape[1]:
        raise ShapeError(f"'codes' has {C.shape[1]} ANs; 'an_responses' has {X.shape[1]}.")
    return (X @ C.T) @ np.linalg.pinv(C @ C.T, hermitian=True)
