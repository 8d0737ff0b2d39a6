import numpy as np
import pytest

from napari_brainorg.encoding.glm import ols_zmaps, stouffer, t_to_z
from napari_brainorg.errors import ShapeError


def test_null_z_values_are_standard_normal(rng):
    X = rng.standard_normal((300, 8))
    Y = rng.standard_normal((300, 4000))
    z = ols_zmaps(X, Y)
    assert z.shape == (8, 4000)
    assert abs(z.mean()) < 0.02
    assert 0.97 < z.std() < 1.03
    # two-sided 5 % tail holds its nominal rate
    assert 0.04 < np.mean(np.abs(z) > 1.96) < 0.06


def test_driven_voxel_lights_up_its_regressor_only(rng):
    X = rng.standard_normal((300, 5))
    X[:, 1] += 0.7 * X[:, 0]  # correlated regressors: OLS keeps them apart
    Y = rng.standard_normal((300, 50))
    Y[:, 7] += 0.5 * X[:, 0]
    z = ols_zmaps(X, Y)
    assert z[0, 7] > 5
    assert np.all(np.abs(z[1:, 7]) < 3.5)


def test_t_to_z_matches_normal_for_large_dof_and_keeps_extremes_finite():
    t = np.array([-2.0, 0.0, 1.0, 3.0])
    np.testing.assert_allclose(t_to_z(t, 1e6), t, atol=1e-4)
    z = t_to_z(np.array([80.0, -80.0]), 30)
    assert np.all(np.isfinite(z)) and z[0] > 8 and z[1] < -8


def test_stouffer_scales_by_sqrt_n():
    z = np.ones((4, 3))
    np.testing.assert_allclose(stouffer(z), 2.0)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ShapeError, match=r"\(10, 2\).*\(9, 3\)"):
        ols_zmaps(np.zeros((10, 2)), np.zeros((9, 3)))
