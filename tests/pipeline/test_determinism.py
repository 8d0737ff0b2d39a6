"""A seeded run gives the same numbers, and declares the same links, whatever the number
of threads: every subject encoded on one thread, or two subjects side by side."""

from __future__ import annotations

import json
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.pipeline import demo_config, run_pipeline

from _runs import shared_steps_of

pytestmark = pytest.mark.slow


def test_one_thread_and_subjects_side_by_side_give_the_same_run(quick_result, tmp_path, monkeypatch):
    import napari_brainorg.pipeline.steps.encoding as encoding
    from napari_brainorg._backend import blas_limit

    chosen = {}
    runs = {}
    for name, threads in (("one thread", 1), ("side by side", 2)):
        out = tmp_path / name.replace(" ", "_")
        shared_steps_of(quick_result.path, out)
        monkeypatch.setattr(encoding, "subject_threads",
                            lambda n, shape, k=threads, name=name: chosen.setdefault(name, min(k, n)))
        # one thread: BLAS, the ridge's chunks and the solvers' workers all on one thread
        with blas_limit(1) if threads == 1 else nullcontext():
            runs[name] = run_pipeline(demo_config(out, quick=True))
    assert chosen == {"one thread": 1, "side by side": 2}
    a, b = (runs[n].path for n in ("one thread", "side by side"))
    subjects = sorted((a / "encoding/minilm/subjects").glob("*.npz"))
    assert len(subjects) >= 2
    for path in subjects:
        with np.load(path) as x, np.load(b / path.relative_to(a)) as y:
            assert x.files == y.files
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{path.name}:{key}")
    for rel in ("networks/minilm/association_activated.tsv", "networks/minilm/association_deactivated.tsv"):
        x, y = pd.read_csv(a / rel, sep="\t"), pd.read_csv(b / rel, sep="\t")
        # the group steps' products run on one BLAS thread or on every core: their sums
        # round differently in the last bits; every draw, p-value and decision is the same
        pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-9, atol=1e-12)
        for column in ("p", "n_draws", "q", "associated"):
            assert x[column].tolist() == y[column].tolist(), (rel, column)
    rec_a, rec_b = (json.loads((p / "recovery.json").read_text()) for p in (a, b))
    assert rec_a == rec_b
    assert rec_a["tp"] >= 1  # the run declares planted links: the comparison is not of two empty sets
