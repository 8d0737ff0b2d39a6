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


def _z_reference(t: float, dof: float) -> float:
    """z of t with the same upper tail, at 60 digits (mpmath): the incomplete beta
    function and the normal tail solved in log space."""
    import mpmath as mp

    with mp.workdps(60):
        x = mp.mpf(dof) / (dof + mp.mpf(t) ** 2)
        log_sf = mp.log(mp.betainc(mp.mpf(dof) / 2, mp.mpf(1) / 2, 0, x, regularized=True) / 2)
        return float(mp.findroot(lambda q: mp.log(mp.erfc(q / mp.sqrt(2)) / 2) - log_sf,
                                 mp.sqrt(-2 * log_sf), tol=1e-40))


@pytest.mark.parametrize("dof", [30.0, 1350.0, 1e5])
def test_t_to_z_far_in_the_tail_is_finite_and_exact(dof):
    """Where the t tail is below 1e-308 (t = 38 at 10⁵ dof, 60 at 1,350), scipy's logsf
    is -inf: the z is still the exact one, not NaN."""
    pytest.importorskip("mpmath")
    t = np.array([3.0, 20.0, 38.0, 45.0, 60.0, 200.0])
    z = t_to_z(t, dof)
    np.testing.assert_allclose(z, [_z_reference(v, dof) for v in t], rtol=1e-11)
    np.testing.assert_allclose(t_to_z(-t, dof), -z)


@pytest.mark.parametrize("dof", [20.0, 31.0, 1350.0, 1e5])
def test_t_to_z_of_a_map_from_the_table_equals_the_exact_conversion(dof, rng):
    """A map's worth of t values (the table's route) converts as each value alone does
    (the exact route), beyond the table's range and at its nodes included."""
    from napari_brainorg.encoding import glm

    t = np.concatenate([rng.standard_normal(60_000) * 4, rng.uniform(-45, 45, 5_000),
                        [0.0, 40.0, -40.0, glm._T_TABLE_STEP * 7, 39.99]])
    assert t.size >= glm._T_TABLE_MIN_SIZE
    exact = np.sign(t) * glm._t_to_z_exact(np.abs(t), dof)
    np.testing.assert_allclose(t_to_z(t, dof), exact, rtol=0, atol=1e-10)
    assert t_to_z(t[:3], dof).tolist() == (np.sign(t[:3]) * glm._t_to_z_exact(np.abs(t[:3]), dof)).tolist()


def test_stouffer_scales_by_sqrt_n():
    z = np.ones((4, 3))
    np.testing.assert_allclose(stouffer(z), 2.0)


def test_shape_errors_name_both_shapes():
    with pytest.raises(ShapeError, match=r"\(10, 2\).*\(9, 3\)"):
        ols_zmaps(np.zeros((10, 2)), np.zeros((9, 3)))


def _ar1_noise(rng, rho, n_volumes, n_voxels):
    rho = np.broadcast_to(np.asarray(rho, dtype=np.float64), (n_voxels,))
    e = rng.standard_normal((n_volumes + 50, n_voxels))
    y = np.empty_like(e)
    y[0] = e[0] / np.sqrt(1 - rho**2)
    for t in range(1, len(e)):
        y[t] = rho * y[t - 1] + e[t]
    return y[50:]


def _smooth_atoms(rng, n_volumes=300, k=64):
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(rng.standard_normal((n_volumes, k)), 3, axis=0)


@pytest.mark.parametrize("rho", [0.4, 0.6])
def test_gls_maps_are_calibrated_under_ar1_noise_where_ols_is_not(rng, rho):
    from napari_brainorg.encoding.glm import gls_atom_maps
    from napari_brainorg.encoding.preprocessing import drift_basis, highpass

    tr, n = 1.5, 300
    X = _smooth_atoms(rng, n)
    Y = _ar1_noise(rng, rho, n, 2500) + 100.0
    drift = drift_basis(n, tr, 128.0)
    maps = gls_atom_maps(X, Y, nuisance=drift)
    rate = np.mean(np.abs(maps.z) > 1.96)
    assert 0.04 <= rate <= 0.06, rate
    assert abs(np.median(maps.rho) - rho) < 0.04  # estimated without the atoms, bias-corrected
    ols = ols_zmaps(highpass(X, tr), highpass(Y, tr), n_nuisance=drift.shape[1] + 1)
    assert np.mean(np.abs(ols) > 1.96) > 0.1  # what the GLS fixes


def test_gls_maps_tissue_dependent_noise_and_a_driven_voxel(rng):
    from napari_brainorg.encoding.glm import gls_atom_maps
    from napari_brainorg.encoding.preprocessing import drift_basis

    n = 300
    X = _smooth_atoms(rng, n, 16)
    rho = np.where(np.arange(2000) < 1000, 0.6, 0.2)  # grey-matter-like and elsewhere
    Y = _ar1_noise(rng, rho, n, 2000)
    Y[:, 5] += X[:, 3] / X[:, 3].std() * Y[:, 5].std()
    maps = gls_atom_maps(X, Y, nuisance=drift_basis(n, 1.5, 128.0))
    null = np.ones(maps.z.shape, bool)
    null[3, 5] = False
    assert 0.04 <= np.mean(np.abs(maps.z[null]) > 1.96) <= 0.06
    assert maps.z[3, 5] > 4 and maps.effect[3, 5] > 0.3
    assert np.median(maps.rho[:1000]) > 0.5 and np.median(maps.rho[1000:]) < 0.3
    white = gls_atom_maps(X, Y, nuisance=drift_basis(n, 1.5, 128.0), noise_model="ols")
    assert np.all(white.rho == 0) and white.noise_model == "ols"
    with pytest.raises(ValueError, match="'noise_model' must be one of"):
        gls_atom_maps(X, Y, noise_model="ar2")


def test_gls_maps_with_the_ar1_given_are_the_maps_that_estimate_it(rng):
    """Another model's maps of the same subject reuse its AR(1) (it is estimated without the atoms)."""
    from napari_brainorg.encoding.glm import ar1_coefficients, gls_atom_maps
    from napari_brainorg.encoding.preprocessing import drift_basis

    n = 300
    drift = drift_basis(n, 1.5, 128.0)
    Y = _ar1_noise(rng, np.linspace(0.1, 0.7, 400), n, 400)
    rho = ar1_coefficients(Y, drift)
    for X in (_smooth_atoms(rng, n, 8), _smooth_atoms(rng, n, 5)):
        own = gls_atom_maps(X, Y, nuisance=drift)
        given = gls_atom_maps(X, Y, nuisance=drift, rho=rho)
        np.testing.assert_array_equal(given.z, own.z)
        np.testing.assert_array_equal(given.rho, own.rho)
    with pytest.raises(ShapeError, match="one value per voxel"):
        gls_atom_maps(X, Y, nuisance=drift, rho=rho[:10])


def test_gls_maps_stop_between_their_bins_on_a_cancel(rng):
    """A cancel set after the lag products (the token's third look): CancelledError from the bins' loop."""
    import itertools

    from napari_brainorg.encoding.glm import gls_atom_maps
    from napari_brainorg.errors import CancelledError

    class ThirdLook:
        looks = itertools.count(1)

        def is_set(self):
            return next(self.looks) >= 3

    n = 200
    Y = _ar1_noise(rng, np.linspace(0.1, 0.7, 300), n, 300)
    X = _smooth_atoms(rng, n, 4)
    with pytest.raises(CancelledError):
        gls_atom_maps(X, Y, cancel=ThirdLook())
    assert len(np.unique(gls_atom_maps(X, Y).rho)) > 1  # more than one bin: the loop is where it stopped


def test_gls_maps_partial_out_confounds(rng):
    from napari_brainorg.encoding.glm import gls_atom_maps

    n = 300
    X = _smooth_atoms(rng, n, 6)
    rate = X[:, 0] + 0.5 * _smooth_atoms(rng, n, 1)[:, 0]  # a word-rate-like confound, correlated with atom 0
    Y = _ar1_noise(rng, 0.3, n, 400)
    Y += 3 * (rate / rate.std())[:, None] * Y.std(0)
    plain = gls_atom_maps(X, Y)
    partial = gls_atom_maps(X, Y, confounds=rate[:, None])
    assert np.mean(np.abs(plain.z[0]) > 1.96) > 0.9  # atom 0 takes the confound's variance
    assert 0.0 <= np.mean(np.abs(partial.z[0]) > 1.96) <= 0.12  # not once it is partialled out


def test_gls_maps_are_the_prewhitened_least_squares_fit_of_each_voxel(rng):
    """The bins combine lag products made once; each voxel's z and effect are those of its
    own Prais–Winsten-whitened least-squares fit, computed here the long way."""
    from napari_brainorg.encoding.glm import _orthonormal, gls_atom_maps
    from napari_brainorg.encoding.preprocessing import drift_basis

    n, k = 240, 6
    X = _smooth_atoms(rng, n, k)
    drift = drift_basis(n, 1.5, 128.0)
    rho_true = np.linspace(0.0, 0.8, 50)
    Y = _ar1_noise(rng, rho_true, n, 50) + 3.0
    Y[:, 7] += X[:, 1] / X[:, 1].std()
    maps = gls_atom_maps(X, Y, nuisance=drift)
    Q = _orthonormal(np.column_stack([np.ones(n), drift]))
    design = np.column_stack([X, Q])
    dof = n - np.linalg.matrix_rank(design)
    sd_x = (X - Q @ (Q.T @ X)).std(0)

    def whiten(A, rho):
        W = A.astype(np.float64).copy()
        W[0] = np.sqrt(1 - rho * rho) * A[0]
        W[1:] = A[1:] - rho * A[:-1]
        return W

    for v in (0, 7, 23, 49):
        rho = float(maps.rho[v])
        D, y = whiten(design, rho), whiten(Y[:, v], rho)
        beta, *_ = np.linalg.lstsq(D, y, rcond=None)
        resid = y - D @ beta
        se = np.sqrt(np.diag(np.linalg.pinv(D.T @ D))[:k] * (resid @ resid) / dof)
        sd_y = (Y[:, v] - Q @ (Q.T @ Y[:, v])).std()
        from scipy import stats

        t = beta[:k] / se
        np.testing.assert_allclose(maps.z[:, v], np.sign(t) * stats.norm.isf(stats.t.sf(np.abs(t), dof)), rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(maps.effect[:, v], beta[:k] * sd_x / sd_y, rtol=1e-5, atol=1e-6)
    assert maps.z[1, 7] > 4
