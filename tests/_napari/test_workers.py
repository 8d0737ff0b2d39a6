"""Overall progress of a pipeline run from its per-stage reports (no Qt needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("qtpy")

from napari_brainorg._napari.workers import OverallProgress  # noqa: E402


def test_overall_progress_follows_the_pipeline_order_and_gives_an_eta():
    now = [0.0]
    overall = OverallProgress(n_models=1, clock=lambda: now[0])
    reports = [("load minilm", 1, 1), ("minilm ANs", 957, 957), ("dictionary", 15, 30), ("dictionary", 30, 30),
               ("top words", 957, 957), ("simulate", 5, 10), ("simulate", 10, 10), ("encoding minilm", 3, 6),
               ("encoding minilm", 6, 6), ("networks minilm", 1, 2), ("networks minilm", 2, 2)]
    fractions = []
    for i, report in enumerate(reports):
        now[0] = 10.0 * (i + 1)
        fractions.append(overall.update(*report))
    assert fractions == sorted(fractions), fractions  # never goes back
    assert fractions[0] < 0.3 and fractions[4] < 0.6 < fractions[8] and fractions[-1] == pytest.approx(1.0)
    now[0] = 50.0
    overall = OverallProgress(n_models=1, clock=lambda: now[0])
    now[0] = 100.0
    overall.update("dictionary", 30, 30)  # features and atoms done: 6 of 12.5 weight units in 50 s
    assert overall.eta_seconds() == pytest.approx(50.0 * (1 - 6 / 12.5) / (6 / 12.5))
    assert "left" in overall.text() and "%" in overall.text()
