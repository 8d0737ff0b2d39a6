"""Where each atom's artificial neurons live: histograms over layers.

An atom is a sub-group of ANs spread across layers (METHOD §2, §5): its members are
the ANs whose code for that atom is non-zero. This module counts them per layer,
normalises the counts, and summarises each histogram by its main layer and a
"layer spread" (the entropy of the distribution over layers).

Examples
--------
>>> import numpy as np, pandas as pd
>>> codes = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 2.0, -1.0]])
>>> an_index = pd.DataFrame({"layer": [0, 0, 1, 1], "unit": [0, 1, 0, 1]})
>>> layer_histogram(codes, an_index).to_numpy().tolist()
[[2, 0], [0, 2]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ShapeError, check_choice

SIGNS = ("any", "positive", "negative")
NORMALIZATIONS = (None, "atom", "layer")


def _layers_of(an_index) -> np.ndarray:
    if isinstance(an_index, pd.DataFrame):
        if "layer" not in an_index.columns:
            raise ShapeError(
                "'an_index' must have a 'layer' column (one row per AN); "
                f"columns {list(an_index.columns)} were provided."
            )
        return an_index["layer"].to_numpy()
    return np.asarray(an_index)


def membership(codes, *, threshold: float = 0.0, sign: str = "any") -> sp.csr_matrix:
    """Boolean membership of each AN in each atom.

    Parameters
    ----------
    codes : ndarray or scipy.sparse matrix of shape (n_atoms, n_ans)
        Sparse codes A of the dictionary (X ≈ D A).
    threshold : float
        An AN belongs to an atom when ``|code| > threshold``.
    sign : {"any", "positive", "negative"}
        Count all members, or only those with a positive (negative) code.

    Returns
    -------
    members : scipy.sparse.csr_matrix of bool, shape (n_atoms, n_ans)
    """
    check_choice("sign", sign, SIGNS)
    if threshold < 0:
        raise ValueError(f"'threshold' must be >= 0; {threshold!r} was provided.")
    A = sp.csr_matrix(codes) if not sp.issparse(codes) else codes.tocsr()
    if A.ndim != 2:
        raise ShapeError(f"'codes' must be 2D (n_atoms, n_ans); shape {A.shape} was provided.")
    data = A.data
    if sign == "positive":
        keep = data > threshold
    elif sign == "negative":
        keep = data < -threshold
    else:
        keep = np.abs(data) > threshold
    members = sp.csr_matrix((keep, A.indices, A.indptr), shape=A.shape, dtype=bool)
    members.eliminate_zeros()
    return members


def layer_histogram(
    codes,
    an_index,
    *,
    layers: Sequence | None = None,
    threshold: float = 0.0,
    sign: str = "any",
    normalize: str | None = None,
) -> pd.DataFrame:
    """Count each atom's member ANs per layer.

    Parameters
    ----------
    codes : ndarray or scipy.sparse matrix of shape (n_atoms, n_ans)
    an_index : DataFrame with a ``layer`` column, or array of shape (n_ans,)
        The layer of each AN (column of X, column of ``codes``).
    layers : sequence, optional
        The layers to report, in order (default: every layer in ``an_index``, sorted).
        Layers with no AN give zero columns, so models compare on the same axis.
    threshold, sign
        Membership rule, see :func:`membership`.
    normalize : {None, "atom", "layer"}
        ``None``: counts. ``"atom"``: each row sums to 1 (fraction of the atom's
        members in each layer). ``"layer"``: count divided by the number of ANs in
        that layer (fraction of the layer recruited by the atom), which is the fair
        comparison when layers differ in size.

    Returns
    -------
    hist : DataFrame of shape (n_atoms, n_layers)
        Index ``atom`` (0..n_atoms-1), columns the layers (name ``layer``).
        Atoms with no member have a row of zeros (NaN when ``normalize="atom"``).
    """
    check_choice("normalize", normalize, NORMALIZATIONS)
    an_layers = _layers_of(an_index)
    members = membership(codes, threshold=threshold, sign=sign)
    if an_layers.shape[0] != members.shape[1]:
        raise ShapeError(
            f"'an_index' has {an_layers.shape[0]} ANs but 'codes' has {members.shape[1]} "
            "columns; expected one AN per column of codes."
        )
    layer_values = np.unique(an_layers) if layers is None else np.asarray(list(layers))
    position = pd.Index(layer_values).get_indexer(an_layers)
    listed = position >= 0
    # One sparse product counts every atom's members in every layer at once.
    onehot = sp.csr_matrix(
        (np.ones(int(listed.sum())), (np.flatnonzero(listed), position[listed])),
        shape=(an_layers.shape[0], layer_values.shape[0]),
    )
    counts = np.asarray((members.astype(np.float64) @ onehot).todense()).round().astype(np.int64)
    out = pd.DataFrame(
        counts,
        index=pd.RangeIndex(counts.shape[0], name="atom"),
        columns=pd.Index(layer_values, name="layer"),
    )
    if normalize == "atom":
        total = out.sum(axis=1).replace(0, np.nan)
        out = out.div(total, axis=0)
    elif normalize == "layer":
        layer_sizes = np.bincount(position[listed], minlength=layer_values.shape[0]).astype(float)
        layer_sizes[layer_sizes == 0] = np.nan
        out = out / layer_sizes
    return out


def layer_spread(layer_hist: pd.DataFrame) -> pd.Series:
    """Normalised Shannon entropy of each atom's distribution over layers.

    0 when all members sit in one layer, 1 when they are spread evenly over all
    layers: ``H(p) / log(n_layers)`` with ``p`` the row of ``layer_hist``
    normalised to sum to 1. NaN for atoms with no member.

    Parameters
    ----------
    layer_hist : DataFrame of shape (n_atoms, n_layers)
        Counts (or any non-negative weights) from :func:`layer_histogram`.

    Returns
    -------
    spread : Series of shape (n_atoms,)
    """
    counts = layer_hist.to_numpy(dtype=float)
    n_layers = counts.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / counts.sum(axis=1, keepdims=True)
        entropy = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
        spread = entropy / np.log(n_layers) if n_layers > 1 else np.zeros_like(entropy)
    spread[counts.sum(axis=1) == 0] = np.nan
    return pd.Series(spread, index=layer_hist.index, name="layer_spread")


def layer_summary(layer_hist: pd.DataFrame) -> pd.DataFrame:
    """One row per atom: size, main layer and how spread the members are.

    Parameters
    ----------
    layer_hist : DataFrame of shape (n_atoms, n_layers)
        Counts from :func:`layer_histogram` (``normalize=None``).

    Returns
    -------
    summary : DataFrame indexed by atom with columns
        ``n_ans`` (members), ``main_layer`` (the layer with most members; ties go to
        the lowest layer), ``main_layer_fraction``, ``mean_layer`` (centroid of the
        distribution, layers taken as numbers when they are), ``layer_entropy``
        (nats), ``effective_layers`` (``exp(entropy)``: how many layers the atom
        effectively spans) and ``layer_spread`` (entropy / log(n_layers), 0..1).
    """
    counts = layer_hist.to_numpy(dtype=float)
    n_ans = counts.sum(axis=1)
    empty = n_ans == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / n_ans[:, None]
        entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    main_pos = counts.argmax(axis=1)
    main_values = np.asarray(layer_hist.columns)[main_pos]
    if np.issubdtype(main_values.dtype, np.integer):
        main_layer = pd.Series(pd.array(main_values, dtype="Int64"), index=layer_hist.index)
        main_layer[empty] = pd.NA
    else:
        main_layer = pd.Series(main_values, index=layer_hist.index, dtype=object)
        main_layer[empty] = None
    try:
        layer_numbers = np.asarray(layer_hist.columns, dtype=float)
        with np.errstate(invalid="ignore"):
            mean_layer = (p * layer_numbers).sum(axis=1)
    except (TypeError, ValueError):
        mean_layer = np.full(counts.shape[0], np.nan)
    main_fraction = np.where(empty, np.nan, counts.max(axis=1) / np.where(empty, 1, n_ans))
    entropy[empty] = np.nan
    mean_layer = np.where(empty, np.nan, mean_layer)
    return pd.DataFrame(
        {
            "n_ans": n_ans.astype(np.int64),
            "main_layer": main_layer,
            "main_layer_fraction": main_fraction,
            "mean_layer": mean_layer,
            "layer_entropy": entropy,
            "effective_layers": np.exp(entropy),
            "layer_spread": layer_spread(layer_hist).to_numpy(),
        },
        index=layer_hist.index,
    )
