"""Layer-wise encoding baseline (kernel ridge per layer, same folds)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from napari_brainorg.encoding.baseline import layerwise_encoding
from napari_brainorg.encoding.preprocessing import highpass
from napari_brainorg.encoding.ridge import contiguous_folds, cv_ridge_scores
from napari_brainorg.errors import ShapeError

ALPHAS = np.logspace(0, 5, 6)


def _layers(rng, n=100, per_layer=150, n_layers=3, v=20):
    """Labelled simulation: only layer 1's ANs drive the first half of the voxels."""
    an = rng.standard_normal((n, per_layer * n_layers))
    layers = np.repeat(np.arange(n_layers), per_layer)
    w = rng.standard_normal((per_layer, v)) * (np.arange(v) < v // 2) / np.sqrt(per_layer)
    Y = an[:, layers == 1] @ w * 2 + rng.standard_normal((n, v))
    return an, layers, Y


def test_the_driving_layer_wins_where_it_drives(rng):
    an, layers, Y = _layers(rng)
    folds = contiguous_folds(len(an), 4, 2)
    res = layerwise_encoding(an, layers, Y, folds, ALPHAS, inner_folds=3, gap=2)
    assert res.r2.shape == (3, 20) and res.r2_folds.shape == (3, 4, 20)
    np.testing.assert_array_equal(res.layers, [0, 1, 2])
    np.testing.assert_array_equal(res.n_ans, [150, 150, 150])
    assert np.all(res.best_layer[:10] == 1)
    assert res.r2[1, :10].mean() > 0.2
    assert res.r2[[0, 2]].mean() <= 0.0
    table = res.to_frame()
    assert list(table.columns) == ["layer", "n_ans", "mean_r2", "median_r2", "max_r2", "mean_r", "n_best_voxels"]
    assert table["n_best_voxels"].sum() == 20 and table.loc[1, "n_best_voxels"] >= 10


def test_layer_scores_equal_the_ridge_on_that_layer_and_sklearn(rng):
    an, layers, Y = _layers(rng, n=80, per_layer=120, n_layers=2, v=6)
    folds = contiguous_folds(80, 3, 2)
    res = layerwise_encoding(an, layers, Y, folds, ALPHAS, inner_folds=3, gap=2, tr=2.0)
    Xf = highpass(an[:, layers == 1], 2.0)
    Yf = highpass(Y, 2.0)
    direct = cv_ridge_scores(Xf, Yf, folds, ALPHAS, inner_folds=3, gap=2, solver="svd")
    np.testing.assert_allclose(res.r2[1], direct.r2, atol=1e-9)     # kernel form = primal form
    train, test = folds[0]
    sc = StandardScaler().fit(Xf[train])
    j = 2
    model = Ridge(alpha=res.alpha_folds[1, 0, j]).fit(sc.transform(Xf[train]), Yf[train, j])
    expected = r2_score(Yf[test, j], model.predict(sc.transform(Xf[test])))
    np.testing.assert_allclose(res.r2_folds[1, 0, j], expected, atol=1e-9)


def test_bad_layer_labels(rng):
    an, layers, Y = _layers(rng, n=40, per_layer=10, n_layers=2, v=3)
    with pytest.raises(ShapeError, match="one layer per AN"):
        layerwise_encoding(an, layers[:-1], Y, contiguous_folds(40, 2, 1))


def test_layers_fitted_side_by_side_give_what_one_thread_gives(rng):
    """Few voxels: the layers run on the BLAS threads allowed, each fit on one thread; the
    results, in layer order, are those of the layers fitted one after another."""
    from threadpoolctl import threadpool_limits

    an, layers, Y = _layers(rng)
    folds = contiguous_folds(len(an), 4, 2)
    with threadpool_limits(1):
        one = layerwise_encoding(an, layers, Y, folds, ALPHAS, inner_folds=3, gap=2)
    with threadpool_limits(2):
        two = layerwise_encoding(an, layers, Y, folds, ALPHAS, inner_folds=3, gap=2)
    for name in ("r2", "r", "r2_folds", "alpha_folds", "n_ans", "layers"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))


def test_subjects_side_by_side_give_each_subject_its_own_scores(rng):
    """The pipeline fits a small study's subjects at once (one factorisation per layer and
    fold): every voxel keeps its own α, so each subject's scores are its own fit's."""
    an, layers, Y1 = _layers(rng)
    Y2 = rng.standard_normal(Y1.shape) + 0.5 * Y1[:, ::-1]
    folds = contiguous_folds(len(an), 4, 2)
    both = layerwise_encoding(an, layers, np.column_stack([Y1, Y2]), folds, ALPHAS, inner_folds=3, gap=2, tr=1.5)
    for part, Y in ((slice(0, Y1.shape[1]), Y1), (slice(Y1.shape[1], None), Y2)):
        alone = layerwise_encoding(an, layers, Y, folds, ALPHAS, inner_folds=3, gap=2, tr=1.5)
        np.testing.assert_allclose(both.r2[:, part], alone.r2, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(both.r[:, part], alone.r, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(both.alpha_folds[..., part], alone.alpha_folds)
