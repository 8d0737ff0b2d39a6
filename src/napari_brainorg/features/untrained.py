"""An untrained model of the same architecture: a baseline for every claim about a model.

Its weights are drawn from the model's own configuration by the library's initialiser
(``transformers.AutoModel.from_config``) under a fixed torch seed: same layers, same
widths, same tokenizer, same nonlinearities, no training and no download. Whatever an
untrained network's ANs give (word-rate-like responses, smooth random mixtures of the
word embeddings' statistics, ...) is what the architecture gives by itself; a trained
model's result means something only beyond it.
"""

from __future__ import annotations

import dataclasses

from .models import LoadedModel, load_language_model, resolve_model

__all__ = ["load_untrained_model", "untrained_name"]


def untrained_name(name: str, seed: int) -> str:
    """The short name of the untrained twin of model ``name`` drawn with ``seed``."""
    return f"{name}-untrained-seed{int(seed)}"


def load_untrained_model(spec, seed: int = 0, device: str = "cpu", dtype: str = "auto") -> LoadedModel:
    """Load a model's tokenizer and configuration with freshly initialised weights.

    Parameters
    ----------
    spec : ModelSpec, or anything :func:`.models.resolve_model` takes
    seed : int
        Torch seed of the initialisation (the global torch random state is restored).
    device, dtype
        As in :func:`.models.load_language_model`.

    Returns
    -------
    LoadedModel
        ``spec.name`` is :func:`untrained_name` (so caches keyed by the name never mix
        it up with the trained model); ``extra["untrained"]`` is True and
        ``extra["init_seed"]`` the seed.
    """
    import torch
    from transformers import AutoModel

    from .models import _check_device, resolve_dtype

    device = _check_device(device)
    dtype = resolve_dtype(dtype, device)
    trained = load_language_model(resolve_model(spec), device="cpu", dtype="float32")
    config = trained.model.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = AutoModel.from_config(config)
    del trained.model
    model.eval()
    model.requires_grad_(False)
    model.to(device=device, dtype=getattr(torch, dtype))
    untrained_spec = dataclasses.replace(trained.spec, name=untrained_name(trained.spec.name, seed))
    return dataclasses.replace(trained, model=model, spec=untrained_spec, device=device, dtype=dtype,
                               extra={**trained.extra, "untrained": True, "init_seed": int(seed)})
