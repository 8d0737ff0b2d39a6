"""Model-size control: the same number of ANs from every model, over repeated draws.

Models differ in how many artificial neurons (ANs) they have (bert-base 12 × 3,072,
Llama-2-7B 32 × 11,008), and more ANs give a dictionary more to fit. Before
comparing models (METHOD §5), draw equal numbers of ANs per model, or per layer,
learn the dictionary on each draw, and compare the spread over draws.

Three rules, chosen by the arguments of :func:`subsample_ans`:

- ``n_per_layer=n``: exactly ``n`` ANs from every layer (an error names a layer
  with fewer);
- ``n_total=n, by_layer=True``: ``n`` ANs spread as evenly as possible over the
  layers (``n // n_layers`` each, the remainder to layers drawn at random);
- ``n_total=n`` (default ``by_layer=False``): a simple random sample of ``n`` ANs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .._progress import check_cancel, report
from ..errors import ConfigError, ShapeError
from .layers import _layers_of



def subsample_ans(
    an_index,
    *,
    n_per_layer: int | None = None,
    n_total: int | None = None,
    by_layer: bool = False,
    n_draws: int = 10,
    layers: Sequence | None = None,
    random_state=None,
) -> list[np.ndarray]:
    """Draw equal-sized sets of ANs, repeatedly.

    Parameters
    ----------
    an_index : DataFrame with a ``layer`` column, or array of shape (n_ans,)
        One row per AN, in the column order of the AN responses X.
    n_per_layer : int, optional
        ANs drawn from each layer. Exclusive with ``n_total``.
    n_total : int, optional
        ANs drawn in all.
    by_layer : bool
        With ``n_total``: spread the draw evenly over the layers.
    n_draws : int
        Number of independent draws.
    layers : sequence, optional
        Only draw from these layers (default: all).
    random_state : int, Generator or None
        Seed; the same seed gives the same draws.

    Returns
    -------
    draws : list of ``n_draws`` int64 ndarrays
        Sorted column indices (positions in ``an_index``), without repeats within
        a draw.
    """
    if (n_per_layer is None) == (n_total is None):
        raise ConfigError(
            "Give exactly one of 'n_per_layer' or 'n_total'; "
            f"n_per_layer={n_per_layer!r} and n_total={n_total!r} were provided."
        )
    if n_draws < 1:
        raise ConfigError(f"'n_draws' must be >= 1; {n_draws!r} was provided.")
    an_layers = _layers_of(an_index)
    chosen = np.unique(an_layers) if layers is None else list(layers)
    pools = {}
    for layer in chosen:
        layer = layer.item() if isinstance(layer, np.generic) else layer
        pool = np.flatnonzero(an_layers == layer)
        if pool.size == 0:
            raise ConfigError(
                f"Layer {layer!r} has no AN; layers present: {np.unique(an_layers).tolist()}."
            )
        pools[layer] = pool
    rng = np.random.default_rng(random_state)

    if n_per_layer is not None:
        if n_per_layer < 1:
            raise ConfigError(f"'n_per_layer' must be >= 1; {n_per_layer!r} was provided.")
        short = {k: v.size for k, v in pools.items() if v.size < n_per_layer}
        if short:
            raise ConfigError(
                f"'n_per_layer'={n_per_layer} exceeds the ANs of layers {short} "
                "(layer: number of ANs); choose at most "
                f"{min(v.size for v in pools.values())}."
            )
        quotas = [{layer: n_per_layer for layer in pools} for _ in range(n_draws)]
    else:
        all_ans = np.concatenate(list(pools.values()))
        if not 1 <= n_total <= all_ans.size:
            raise ConfigError(
                f"'n_total' must lie in [1, {all_ans.size}] (the ANs available); "
                f"{n_total!r} was provided."
            )
        if not by_layer:
            return [np.sort(rng.choice(all_ans, size=n_total, replace=False)) for _ in range(n_draws)]
        n_layers = len(pools)
        base, extra = divmod(n_total, n_layers)
        names = list(pools)
        quotas = []
        for _ in range(n_draws):
            bonus = set(rng.choice(n_layers, size=extra, replace=False).tolist())
            quotas.append({name: base + (i in bonus) for i, name in enumerate(names)})
        short = {k: v.size for k, v in pools.items() if v.size < base + (1 if extra else 0)}
        if short:
            raise ConfigError(
                f"'n_total'={n_total} spread over {n_layers} layers needs up to "
                f"{base + (1 if extra else 0)} ANs per layer, but layers {short} have fewer."
            )
    draws = []
    for quota in quotas:
        picks = [rng.choice(pools[layer], size=n, replace=False) for layer, n in quota.items() if n]
        draws.append(np.sort(np.concatenate(picks)).astype(np.int64))
    return draws


def common_subsample_size(an_indices: Mapping[str, object], *, per_layer: bool = False) -> int:
    """The largest draw every model can supply.

    Parameters
    ----------
    an_indices : mapping of model name to its ``an_index``
    per_layer : bool
        True: the smallest layer over all models (for ``n_per_layer``);
        False: the smallest model (for ``n_total``).

    Returns
    -------
    n : int
    """
    if not an_indices:
        raise ConfigError("'an_indices' is empty; give at least one model.")
    sizes = []
    for name, index in an_indices.items():
        an_layers = _layers_of(index)
        if per_layer:
            sizes.append(int(np.unique(an_layers, return_counts=True)[1].min()))
        else:
            sizes.append(int(an_layers.shape[0]))
    return min(sizes)


def run_subsampled(
    an_responses,
    an_index,
    fit: Callable[[np.ndarray, pd.DataFrame | np.ndarray], object],
    *,
    n_per_layer: int | None = None,
    n_total: int | None = None,
    by_layer: bool = False,
    n_draws: int = 10,
    random_state=None,
    progress=None,
    cancel=None,
) -> list[dict]:
    """Call ``fit`` (e.g. dictionary learning) on each draw of equal-sized AN sets.

    Parameters
    ----------
    an_responses : ndarray of shape (n_volumes, n_ans)
    an_index : DataFrame or ndarray of shape (n_ans,)
    fit : callable ``fit(X_draw, an_index_draw) -> result``
        Typically learns the dictionary on the drawn columns and returns it.
    n_per_layer, n_total, by_layer, n_draws, random_state
        See :func:`subsample_ans`.
    progress, cancel
        Progress callback (stage ``"subsample"``) and cancel token.

    Returns
    -------
    results : list of dict
        One per draw: ``draw`` (number), ``columns`` (indices drawn) and
        ``result`` (what ``fit`` returned).
    """
    an_responses = np.asarray(an_responses)
    n_index = len(an_index)
    if an_responses.ndim != 2 or an_responses.shape[1] != n_index:
        raise ShapeError(
            f"'an_responses' must have shape (n_volumes, {n_index}) to match 'an_index'; "
            f"shape {an_responses.shape} was provided."
        )
    draws = subsample_ans(
        an_index, n_per_layer=n_per_layer, n_total=n_total, by_layer=by_layer,
        n_draws=n_draws, random_state=random_state,
    )
    results = []
    for i, columns in enumerate(draws):
        check_cancel(cancel)
        index_draw = an_index.iloc[columns].reset_index(drop=True) if isinstance(
            an_index, pd.DataFrame) else np.asarray(an_index)[columns]
        results.append({"draw": i, "columns": columns,
                        "result": fit(an_responses[:, columns], index_draw)})
        report(progress, "subsample", i + 1, len(draws))
    return results
