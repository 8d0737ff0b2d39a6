"""Chance levels of held-out r by circular shifts of a feature set (alpha chosen again)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainorg.encoding.chance import held_out_chance, summary_voxels
from napari_brainorg.encoding.ridge import contiguous_folds, cv_ridge_scores

ALPHAS = np.array([1.0, 100.0, 10_000.0])


def _smooth(rng, n, p, width=6):
    """Autocorrelated series (moving average of white noise), z-scored columns."""
    x = rng.standard_normal((n + width, p))
    kernel = np.ones(width) / width
    x = np.stack([np.convolve(x[:, j], kernel, mode="valid")[:n] for j in range(p)], 1)
    return (x - x.mean(0)) / x.std(0)


def test_summary_voxels_are_all_voxels_or_a_fixed_sorted_draw():
    assert np.array_equal(summary_voxels(50, 100), np.arange(50))
    draw = summary_voxels(10_000, 300, random_state=3)
    assert draw.shape == (300,) and np.all(np.diff(draw) > 0) and draw.max() < 10_000
    assert np.array_equal(draw, summary_voxels(10_000, 300, random_state=3))
    assert not np.array_equal(draw, summary_voxels(10_000, 300, random_state=4))
    with pytest.raises(ValueError, match="max_voxels"):
        summary_voxels(10, 0)


def test_a_locked_signal_is_far_above_its_chance_level_and_noise_is_not(rng):
    n = 240
    folds = contiguous_folds(n, 4, 3)
    X = _smooth(rng, n, 3)
    noise = _smooth(rng, n, 40)
    driven = X @ rng.standard_normal((3, 40)) + 1.5 * noise
    ch = held_out_chance(X, driven, folds, ALPHAS, n_shifts=12, gap=3, random_state=0)
    assert ch.median > 0.3
    assert ch.draws.shape == (12,) and ch.draws.max() < ch.median - 0.2
    assert abs(ch.chance) < 0.15
    # the observed scores are the nested CV's own
    assert np.allclose(ch.observed, cv_ridge_scores(X, driven, folds, ALPHAS, gap=3).r)
    free = held_out_chance(X, _smooth(rng, n, 40), folds, ALPHAS, n_shifts=12, gap=3, random_state=0)
    assert free.draws.min() - 0.1 < free.median < free.draws.max() + 0.1


def test_only_the_named_columns_move_and_the_reference_is_subtracted(rng):
    n = 200
    folds = contiguous_folds(n, 4, 3)
    X = _smooth(rng, n, 4)
    Y = X[:, :2] @ rng.standard_normal((2, 30)) + _smooth(rng, n, 30)
    still = held_out_chance(X, Y, folds, ALPHAS, n_shifts=5, shifted=np.zeros(4, bool), gap=3, random_state=1)
    # nothing shifted: every draw is the observed fit again
    assert np.allclose(still.draws, still.median)
    # shifting the two columns that carry no signal changes little; shifting the others removes it
    idle = held_out_chance(X, Y, folds, ALPHAS, n_shifts=5, shifted=np.r_[False, False, True, True], gap=3,
                           random_state=1)
    moved = held_out_chance(X, Y, folds, ALPHAS, n_shifts=5, shifted=np.r_[True, True, False, False], gap=3,
                            random_state=1)
    assert idle.chance > moved.chance + 0.2
    reference = still.observed.copy()
    gain = held_out_chance(X, Y, folds, ALPHAS, n_shifts=5, reference=reference, gap=3, random_state=1)
    assert np.allclose(gain.observed, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="shifted"):
        held_out_chance(X, Y, folds, ALPHAS, n_shifts=2, shifted=np.ones(3, bool))
