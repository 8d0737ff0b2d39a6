"""Step ``baselines``: pseudo-models that go through the same encoding and tests.

Reads
    the baseline model's atoms (``features.baseline_model``, default the first model),
    the story step's nuisance regressors, and the untrained twin's atoms (learned by the
    caller with the features and atoms steps, like a model's).
Writes
    ``atoms/<baseline>/atoms.npy``, ``codes.npz`` and ``dictionary.json`` for each of
    ``features.baselines``: phase-randomised atoms, the untrained twin, the nuisance
    regressors as atoms.
Key
    the kind, the upstream step's key (atoms or story), the story runs and the seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..._progress import check_cancel
from ...errors import ConfigError
from .._state import key_of
from ..context import StepContext, baseline_slugs, model_slug
from ..study import study_runs


def step_baselines(ctx: StepContext, per_model: dict,
                   learn_untrained: Callable[[str], tuple]) -> dict[str, dict]:
    """Pseudo-models that go through the same encoding and association tests (METHOD §4):
    phase-randomised atoms of the baseline model, its untrained twin (random weights from
    its configuration; ANs extracted and atoms learned exactly like the model's), and the
    nuisance regressors as atoms. Their folders are written like a model's.

    Parameters
    ----------
    ctx : StepContext
    per_model : dict
        The models' results so far (slug -> dict with ``atoms``, ``codes``, ``index``).
    learn_untrained : callable
        ``learn_untrained(model)`` -> ``(ans, (atoms, codes, index))``: the untrained twin's
        AN responses and dictionary, made by the features and atoms steps (called only when
        the untrained baseline is asked for, in its place among ``features.baselines``).

    Returns
    -------
    dict
        Baseline slug -> the same fields as a model's entry, plus ``baseline`` (its kind).
    """
    import pandas as pd
    import scipy.sparse as sp

    cfg = ctx.config
    fc = cfg.features
    if not fc.baselines:
        return {}
    source_name = fc.baseline_model or fc.models[0]
    source = model_slug(source_name)
    if source not in per_model:
        raise ConfigError(f"features.baseline_model {fc.baseline_model!r} is not among features.models {fc.models}.")
    out: dict[str, dict] = {}
    for kind, slug in baseline_slugs(cfg).items():
        check_cancel(ctx.cancel)
        if kind == "untrained":
            ans, (atoms, codes, index) = learn_untrained(source_name)
            out[slug] = {"model": f"untrained {source_name} (random weights from its configuration, seed {cfg.seed})",
                         "atoms": atoms, "codes": codes, "index": index, "n_ans": ans.responses.shape[1],
                         "dropped": len(ans.dropped), "an": None, "baseline": kind}
            continue
        if kind == "phase_randomised":
            from ...encoding.inference import phase_randomise

            src = per_model[source]
            lengths = [r[1] for r in study_runs(cfg)]
            atoms = phase_randomise(src["atoms"], random_state=cfg.seed, runs=lengths).astype(np.float32)
            codes, index = src["codes"], src["index"]
            label = (f"{source_name} atoms, Fourier phases randomised (the same phases for every atom"
                     + (", each story's on its own" if len(lengths) > 1 else "") + f"), seed {cfg.seed}")
            upstream = [ctx.keys[f"atoms/{source}"], "phases per story run", lengths]
        else:  # nuisance
            conf = ctx.confounds
            atoms = np.asarray(conf.to_numpy(), np.float64)
            atoms = (atoms / np.linalg.norm(atoms, axis=0)).astype(np.float32)
            codes = sp.identity(atoms.shape[1], format="csr", dtype=np.float32)
            index = pd.DataFrame({"layer": np.zeros(atoms.shape[1], int), "unit": np.arange(atoms.shape[1]),
                                  "site": [f"nuisance:{c}" for c in conf.columns]})
            label = f"nuisance regressors as atoms: {', '.join(conf.columns)}"
            upstream = ctx.keys["story"]
        rel = f"atoms/{slug}"
        ctx.keys[rel] = key_of(rel, kind, upstream, cfg.seed)
        ctx.writer.write_npy(f"{rel}/atoms.npy", atoms)
        ctx.writer.write_npz_sparse(f"{rel}/codes.npz", sp.csr_matrix(codes))
        ctx.writer.write_json(f"{rel}/dictionary.json", {"baseline": kind, "source": label,
                                                        "n_atoms": int(atoms.shape[1])})
        out[slug] = {"model": label, "atoms": atoms, "codes": codes, "index": index, "n_ans": codes.shape[1],
                     "dropped": 0, "an": None, "baseline": kind}
    return out
