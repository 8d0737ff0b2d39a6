"""Where artificial neurons (ANs) are read in a transformer: hook sites.

An AN is one unit of one layer at a named site:

``ffn_hidden`` (default)
    The feed-forward network's hidden units after the nonlinearity, i.e. the input of
    the FFN's second linear layer. BERT: ``GELU(intermediate.dense(h))``, the input of
    ``layer.output.dense``; Llama: ``act(gate_proj(h)) * up_proj(h)``, the input of
    ``mlp.down_proj``. This is the paper's AN.
``ffn_out``
    The output of the FFN's second linear layer (before dropout, the residual sum and,
    in BERT, the LayerNorm).
``residual``
    The layer's output hidden state (the residual stream after the block).

Values are captured with forward (pre-)hooks registered for the duration of a ``with``
block (:func:`capture_site`) and removed afterwards, even on error. Layers are
numbered from 0 (the block closest to the embeddings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, check_choice

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["DEFAULT_SITE", "SITES", "SiteHook", "an_index", "capture_site", "layer_modules", "site_hooks"]

#: Names of the hook sites.
SITES = ("ffn_hidden", "ffn_out", "residual")
DEFAULT_SITE = "ffn_hidden"

# Dotted paths tried in order; the first that exists wins. Families share layouts:
# BERT-like (bert, roberta, xlm-roberta, camembert, electra), Llama-like (llama,
# mistral, qwen2/3, gemma, phi3, olmo...), GPT-2, DistilBERT.
_LAYER_LISTS = ("encoder.layer", "layers", "model.layers", "h", "transformer.layer", "transformer.h",
                "decoder.layers")
_FFN_SECOND_LINEAR = ("output.dense", "mlp.down_proj", "mlp.c_proj", "ffn.lin2", "mlp.fc2",
                      "mlp.dense_4h_to_h")


def _get(module: Any, dotted: str) -> Any | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def layer_modules(model: Any, architecture: str = "") -> list:
    """The transformer blocks of ``model``, first to last.

    Raises
    ------
    ConfigError
        For a model whose layout is not known.
    """
    for path in _LAYER_LISTS:
        layers = _get(model, path)
        if layers is not None and hasattr(layers, "__len__") and len(layers):
            return list(layers)
    raise ConfigError(
        f"Cannot find the transformer layers of a {architecture or type(model).__name__!r} "
        f"model (looked for {list(_LAYER_LISTS)}); supported families: BERT-like and "
        "Llama-like models, GPT-2, DistilBERT."
    )


def _second_linear(layer: Any, architecture: str, index: int) -> tuple[Any, str]:
    for path in _FFN_SECOND_LINEAR:
        module = _get(layer, path)
        if module is not None and hasattr(module, "weight"):
            return module, path
    raise ConfigError(
        f"Cannot find the feed-forward network's second linear layer in layer {index} of a "
        f"{architecture!r} model (looked for {list(_FFN_SECOND_LINEAR)})."
    )


def _linear_sizes(module: Any) -> tuple[int, int]:
    """(in, out) features of an ``nn.Linear`` or a GPT-2 ``Conv1D``."""
    if hasattr(module, "in_features"):
        return int(module.in_features), int(module.out_features)
    weight = module.weight  # Conv1D stores (in, out)
    return int(weight.shape[0]), int(weight.shape[1])


@dataclass(frozen=True)
class SiteHook:
    """One layer's hook: which module, pre- or post-forward, how many units.

    Attributes
    ----------
    layer : int
    module : torch.nn.Module
    kind : {"pre", "post"}
        ``"pre"`` reads the module's first input, ``"post"`` its output.
    n_units : int
    path : str
        The module's dotted path inside the layer (``""`` for the layer itself).
    """

    layer: int
    module: Any
    kind: str
    n_units: int
    path: str


def site_hooks(model: Any, architecture: str = "", site: str = DEFAULT_SITE) -> list[SiteHook]:
    """The modules to hook for ``site`` in every layer of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
    architecture : str
        ``config.model_type``, used in error messages.
    site : {"ffn_hidden", "ffn_out", "residual"}

    Returns
    -------
    list of SiteHook, one per layer
    """
    check_choice("site", site, SITES)
    hooks = []
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    for index, layer in enumerate(layer_modules(model, architecture)):
        if site == "residual":
            if hidden is None:
                _, hidden = _linear_sizes(_second_linear(layer, architecture, index)[0])
            hooks.append(SiteHook(index, layer, "post", int(hidden), ""))
            continue
        module, path = _second_linear(layer, architecture, index)
        n_in, n_out = _linear_sizes(module)
        if site == "ffn_hidden":
            hooks.append(SiteHook(index, module, "pre", n_in, path))
        else:
            hooks.append(SiteHook(index, module, "post", n_out, path))
    return hooks


@contextmanager
def capture_site(
    model: Any, architecture: str, site: str, sink: Callable[[int, Any], None]
) -> Iterator[list[SiteHook]]:
    """Call ``sink(layer, activations)`` for every layer during forward passes.

    Parameters
    ----------
    model : torch.nn.Module
    architecture : str
    site : {"ffn_hidden", "ffn_out", "residual"}
    sink : callable
        Called as ``sink(layer, tensor)`` with a tensor of shape
        (batch, n_tokens, n_units) in the model's dtype and device. It must not keep a
        reference to the tensor beyond what it needs (the point of streaming).

    Yields
    ------
    list of SiteHook
        The hooked modules, for the caller's bookkeeping (unit counts).
    """
    hooks = site_hooks(model, architecture, site)
    handles = []

    def make(layer: int, kind: str):
        if kind == "pre":
            def pre_hook(_module, args):
                sink(layer, args[0])

            return pre_hook

        def post_hook(_module, _args, output):
            sink(layer, output[0] if isinstance(output, (tuple, list)) else output)

        return post_hook

    try:
        for hook in hooks:
            if hook.kind == "pre":
                handles.append(hook.module.register_forward_pre_hook(make(hook.layer, "pre")))
            else:
                handles.append(hook.module.register_forward_hook(make(hook.layer, "post")))
        yield hooks
    finally:
        for handle in handles:
            handle.remove()


def an_index(n_layers: int, n_units: int | list[int], site: str) -> pandas.DataFrame:
    """One row per AN, in column order: ``layer, unit, site``.

    Parameters
    ----------
    n_layers : int
    n_units : int or list of int
        Units per layer (one number when every layer has the same width).
    site : str
    """
    import numpy as np
    import pandas as pd

    units = [int(n_units)] * n_layers if np.isscalar(n_units) else [int(u) for u in n_units]
    if len(units) != n_layers:
        raise ConfigError(f"'n_units' must give {n_layers} layer widths; got {len(units)}.")
    layer = np.repeat(np.arange(n_layers, dtype=np.int32), units)
    unit = np.concatenate([np.arange(u, dtype=np.int32) for u in units]) if units else np.zeros(0, np.int32)
    return pd.DataFrame({"layer": layer, "unit": unit, "site": np.full(len(layer), site, dtype=object)})
