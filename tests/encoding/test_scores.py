"""Column-wise R² and correlation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score

from napari_brainorg.encoding.scores import correlation_columns, r2_score_columns
from napari_brainorg.errors import ShapeError


def test_r2_equals_sklearn(rng):
    y = rng.standard_normal((40, 7))
    p = y + rng.standard_normal((40, 7)) * np.linspace(0.1, 3, 7)
    np.testing.assert_allclose(r2_score_columns(y, p), r2_score(y, p, multioutput="raw_values"), rtol=1e-12)


def test_correlation_equals_corrcoef(rng):
    a = rng.standard_normal((40, 5))
    b = a * 0.5 + rng.standard_normal((40, 5))
    expected = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(5)]
    np.testing.assert_allclose(correlation_columns(a, b), expected, rtol=1e-12)


def test_leading_axes_broadcast_and_constant_columns(rng):
    y = rng.standard_normal((30, 4))
    y[:, 3] = 2.0
    path = np.stack([y * 0.5, y + 1.0, rng.standard_normal((30, 4))])
    r2 = r2_score_columns(y, path)
    r = correlation_columns(y, path)
    assert r2.shape == r.shape == (3, 4)
    for i in range(3):
        np.testing.assert_allclose(r2[i, :3], r2_score(y[:, :3], path[i, :, :3], multioutput="raw_values"))
    np.testing.assert_allclose(r[1, :3], 1.0)          # an offset keeps r = 1...
    assert np.all(r2[1, :3] < 0.5)                      # ...but is penalised by R²
    np.testing.assert_array_equal(r2[:, 3], 0.0)        # constant column: 0, not NaN
    np.testing.assert_array_equal(r[:, 3], 0.0)


def test_a_constant_column_whose_mean_is_not_exact_scores_zero(rng):
    """0.1 thirty times has a computed mean a rounding away from 0.1: the deviations are
    ~1e-17, not 0, and would make R² about -1e30; the column is flat up to rounding."""
    y = rng.standard_normal((30, 3))
    y[:, 0] = 0.1
    y[:, 1] = 1000.3
    d = y[:, :2] - y[:, :2].mean(0)
    assert np.all((d * d).sum(0) > 0)                   # the case: rounding, not zero
    p = y + rng.standard_normal((30, 3))
    np.testing.assert_array_equal(r2_score_columns(y, p)[:2], 0.0)
    np.testing.assert_array_equal(correlation_columns(y, p)[:2], 0.0)
    np.testing.assert_array_equal(correlation_columns(p, y)[:2], 0.0)
    np.testing.assert_allclose(r2_score_columns(y, p)[2], r2_score(y[:, 2], p[:, 2]), rtol=1e-12)


def test_torch_tensors_give_the_same(rng):
    torch = pytest.importorskip("torch")
    y = rng.standard_normal((25, 3))
    p = y + rng.standard_normal((25, 3))
    r2 = r2_score_columns(torch.as_tensor(y), torch.as_tensor(p))
    assert isinstance(r2, torch.Tensor)
    np.testing.assert_allclose(r2.numpy(), r2_score_columns(y, p), rtol=1e-12)
    np.testing.assert_allclose(correlation_columns(torch.as_tensor(y), torch.as_tensor(p)).numpy(),
                               correlation_columns(y, p), rtol=1e-12)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ShapeError, match="n_volumes, n_voxels"):
        r2_score_columns(np.zeros((10, 3)), np.zeros((10, 4)))
