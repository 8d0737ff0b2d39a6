"""Cross-validated ridge: folds, equality with scikit-learn and himalaya, recovery."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from napari_brainorg.encoding.preprocessing import highpass, make_delays
from napari_brainorg.encoding.ridge import (
    CVRidgeEncoder,
    _folds_of,
    contiguous_folds,
    cv_ridge_scores,
    ridge_cv_fit,
)
from napari_brainorg.errors import CancelledError, ConfigError, FMRIInputError, NotFittedError, ShapeError

ALPHAS = np.logspace(-1, 4, 6)


def _simulated(rng, n=140, p=6, v=24, noise=2.0):
    """Labelled simulation: half the voxels driven by random weights on the regressors."""
    X = rng.standard_normal((n, p)) * rng.uniform(0.5, 3, p) + rng.uniform(-2, 2, p)
    W = rng.standard_normal((p, v)) * (np.arange(v) % 2 == 0)
    Y = X @ W * 0.4 + noise * rng.standard_normal((n, v)) + 5.0
    return X, Y


# --------------------------------------------------------------------------- folds


def test_contiguous_folds_blocks_gaps_and_order():
    folds = contiguous_folds(103, n_folds=5, gap=4)
    tests = [te for _, te in folds]
    np.testing.assert_array_equal(np.concatenate(tests), np.arange(103))   # cover once, in order
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for train, test in folds:
        assert np.all(np.diff(test) == 1)                                    # contiguous
        dist = np.abs(train[:, None] - test[None, :]).min(1)
        assert dist.min() == 5                                               # gap of 4 left out
        expected = np.setdiff1d(np.arange(103), np.arange(test[0] - 4, test[-1] + 5))
        np.testing.assert_array_equal(train, expected)


def test_inner_folds_respect_scan_time_gaps():
    outer_train = contiguous_folds(100, 5, 3)[2][0]          # two pieces around a hole
    for train, test in _folds_of(outer_train, 4, 3):
        assert np.isin(train, outer_train).all() and np.isin(test, outer_train).all()
        assert np.abs(train[:, None] - test[None, :]).min() > 3


def test_fold_errors():
    with pytest.raises(ConfigError, match="'n_folds'"):
        contiguous_folds(10, 11, 0)
    with pytest.raises(ConfigError, match="training set is empty"):
        contiguous_folds(10, 2, 10)
    with pytest.raises(ConfigError, match="'gap'"):
        contiguous_folds(10, 2, -1)


# --------------------------------------------------------------------------- equality with references


def _sklearn_nested(X, Y, folds, alphas, inner_folds, gap):
    """The nested procedure written as explicit loops over α and voxels with scikit-learn."""
    n_vox = Y.shape[1]
    r2 = np.zeros((len(folds), n_vox))
    r = np.zeros_like(r2)
    chosen = np.zeros_like(r2)
    for o, (train, test) in enumerate(folds):
        inner_scores = np.zeros((len(alphas), n_vox))
        for a, alpha in enumerate(alphas):
            for itrain, itest in _folds_of(train, inner_folds, gap):
                sc = StandardScaler().fit(X[itrain])
                model = Ridge(alpha=alpha).fit(sc.transform(X[itrain]), Y[itrain])
                inner_scores[a] += r2_score(Y[itest], model.predict(sc.transform(X[itest])),
                                            multioutput="raw_values")
        chosen[o] = alphas[np.argmax(inner_scores, axis=0)]
        sc = StandardScaler().fit(X[train])                 # training statistics only
        for j in range(n_vox):
            model = Ridge(alpha=chosen[o, j]).fit(sc.transform(X[train]), Y[train, j])
            pred = model.predict(sc.transform(X[test]))
            r2[o, j] = r2_score(Y[test, j], pred)
            r[o, j] = np.corrcoef(Y[test, j], pred)[0, 1]
    return r2, r, chosen


def test_nested_cv_equals_sklearn_per_voxel(rng):
    X, Y = _simulated(rng)
    folds = contiguous_folds(len(X), 5, 3)
    res = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=4, gap=3, chunk_size=7)
    r2, r, chosen = _sklearn_nested(X, Y, folds, ALPHAS, 4, 3)
    np.testing.assert_array_equal(res.alpha_folds, chosen)   # same α as the explicit loop
    np.testing.assert_allclose(res.r2_folds, r2, atol=1e-10)
    np.testing.assert_allclose(res.r_folds, r, atol=1e-10)
    np.testing.assert_allclose(res.r2, r2.mean(0), atol=1e-10)
    assert len(np.unique(chosen)) > 1                          # the test exercises per-voxel α


def test_kernel_form_equals_primal_when_features_outnumber_volumes(rng):
    X = rng.standard_normal((60, 150))
    Y = X[:, :5] @ rng.standard_normal((5, 9)) + rng.standard_normal((60, 9))
    folds = contiguous_folds(60, 3, 2)
    dual = cv_ridge_scores(X, Y, folds, ALPHAS * 10, inner_folds=3, gap=2, solver="auto")
    primal = cv_ridge_scores(X, Y, folds, ALPHAS * 10, inner_folds=3, gap=2, solver="svd")
    np.testing.assert_array_equal(dual.alpha_folds, primal.alpha_folds)
    np.testing.assert_allclose(dual.r2_folds, primal.r2_folds, atol=1e-9)
    train, test = folds[1]
    sc = StandardScaler().fit(X[train])
    j = 4
    pred = Ridge(alpha=dual.alpha_folds[1, j]).fit(sc.transform(X[train]), Y[train, j]).predict(sc.transform(X[test]))
    np.testing.assert_allclose(dual.r2_folds[1, j], r2_score(Y[test, j], pred), atol=1e-9)


def test_single_level_fit_equals_himalaya_ridgecv(rng):
    himalaya_ridge = pytest.importorskip("himalaya.ridge")
    from himalaya.backend import set_backend

    set_backend("numpy", on_error="raise")
    X, Y = _simulated(rng, n=120, v=16)
    folds = contiguous_folds(120, 4, 2)
    ours = ridge_cv_fit(X, Y, folds, ALPHAS, alpha_score="neg_mse", standardize=False)
    ref = himalaya_ridge.RidgeCV(alphas=ALPHAS, cv=folds, fit_intercept=True).fit(X, Y)
    np.testing.assert_allclose(ours.alpha, ref.best_alphas_, rtol=1e-12)
    np.testing.assert_allclose(ours.coef, ref.coef_, atol=1e-8)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), atol=1e-8)
    np.testing.assert_allclose(ours.cv_scores.max(0), ref.cv_scores_, atol=1e-8)


def test_final_fit_equals_sklearn_with_each_voxels_alpha(rng):
    X, Y = _simulated(rng, n=100, v=10)
    fit = ridge_cv_fit(X, Y, contiguous_folds(100, 4, 2), ALPHAS)
    sc = StandardScaler().fit(X)
    for j in range(Y.shape[1]):
        model = Ridge(alpha=fit.alpha[j]).fit(sc.transform(X), Y[:, j])
        np.testing.assert_allclose(fit.coef[:, j], model.coef_, atol=1e-9)
        np.testing.assert_allclose(fit.intercept[j], model.intercept_, atol=1e-9)


def test_torch_backend_equals_numpy(rng):
    pytest.importorskip("torch")
    X, Y = _simulated(rng, n=100, v=12)
    folds = contiguous_folds(100, 4, 2)
    a = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=2)
    b = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=2, backend="torch", device="cpu")
    np.testing.assert_array_equal(a.alpha_folds, b.alpha_folds)
    np.testing.assert_allclose(a.r2_folds, b.r2_folds, atol=1e-10)
    f32 = cv_ridge_scores(X.astype(np.float32), Y.astype(np.float32), folds, ALPHAS, inner_folds=3,
                          gap=2, backend="torch", device="cpu")
    assert f32.r2.dtype == np.float32
    np.testing.assert_allclose(f32.r2_folds, a.r2_folds, atol=1e-4)


# --------------------------------------------------------------------------- behaviour on simulated data


def test_pure_noise_voxels_score_at_most_zero(rng):
    n, v = 200, 300
    X = rng.standard_normal((n, 8))
    Y = rng.standard_normal((n, v))
    model = CVRidgeEncoder(alphas=np.logspace(-1, 5, 7), tr=1.5).fit(X, Y)
    assert model.r2_.mean() <= 0
    assert abs(model.r_.mean()) < 0.05


def test_driven_voxel_gets_the_right_coefficient(rng):
    n = 300
    X = rng.standard_normal((n, 5))
    z = (X[:, 3] - X[:, 3].mean()) / X[:, 3].std()
    Y = np.column_stack([2.0 * z + 0.1 * rng.standard_normal(n), rng.standard_normal(n)])
    model = CVRidgeEncoder(highpass_cutoff=None, detrend=False, standardize_Y=False).fit(X, Y)
    coef = model.coef_[:, 0]
    assert abs(coef[3] - 2.0) < 0.02
    assert np.abs(np.delete(coef, 3)).max() < 0.02
    assert model.r2_[0] > 0.99 and model.r2_[1] < 0.05
    np.testing.assert_allclose(model.predict(X)[:, 0], Y[:, 0], atol=0.5)
    # z-scoring the voxel only rescales the map.
    zmodel = CVRidgeEncoder(highpass_cutoff=None, detrend=False).fit(X, Y)
    np.testing.assert_allclose(zmodel.coef_[:, 0], model.coef_[:, 0] / Y[:, 0].std(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(zmodel.r2_, model.r2_, atol=1e-10)


def test_fir_delays_find_the_lag(rng):
    n = 240
    X = rng.standard_normal((n, 3))
    lagged = np.roll(X[:, 1], 2)
    lagged[:2] = 0
    Y = (lagged + 0.3 * rng.standard_normal(n))[:, None]
    model = CVRidgeEncoder(delays=(0, 1, 2, 3), tr=2.0).fit(X, Y)
    assert model.coef_.shape == (12, 1)
    assert int(np.abs(model.coef_[:, 0]).argmax()) == 2 * 3 + 1     # delay 2, regressor 1
    assert model.r2_[0] > 0.8


def test_encoder_is_the_filtered_pure_functions(rng):
    X, Y = _simulated(rng, n=150, v=8)
    model = CVRidgeEncoder(alphas=ALPHAS, n_folds=4, gap=3, inner_folds=3, delays=(0, 1), tr=2.0).fit(X, Y)
    Xp = highpass(make_delays(X, (0, 1)), 2.0)
    Yp = highpass(Y, 2.0)
    res = cv_ridge_scores(Xp, Yp, contiguous_folds(150, 4, 3), ALPHAS, inner_folds=3, gap=3)
    np.testing.assert_allclose(model.r2_folds_, res.r2_folds, atol=1e-10)
    np.testing.assert_array_equal(model.alpha_folds_, res.alpha_folds)
    fit = ridge_cv_fit(Xp, Yp / Yp.std(0), contiguous_folds(150, 3, 3), ALPHAS)
    np.testing.assert_allclose(model.coef_, fit.coef, atol=1e-10)
    np.testing.assert_array_equal(model.alpha_, fit.alpha)
    assert model.r2_folds_.shape == model.r_folds_.shape == (4, 8)


# --------------------------------------------------------------------------- errors, progress, cancel


def test_bad_inputs_have_clear_errors(rng):
    X, Y = _simulated(rng, n=60, v=4)
    folds = contiguous_folds(60, 3, 1)
    Ybad = Y.copy()
    Ybad[5, 2] = np.nan
    with pytest.raises(FMRIInputError, match=r"voxel columns \[2\]"):
        cv_ridge_scores(X, Ybad, folds, ALPHAS, inner_folds=3, gap=1)
    with pytest.raises(ShapeError, match="same number of volumes"):
        cv_ridge_scores(X[:50], Y, folds, ALPHAS)
    with pytest.raises(ConfigError, match="'alphas'"):
        cv_ridge_scores(X, Y, folds, [1.0, -2.0])
    with pytest.raises(ConfigError, match="Did you mean 'svd'"):
        cv_ridge_scores(X, Y, folds, ALPHAS, solver="svdd")
    with pytest.raises(ConfigError, match=r"'folds'\[0\] test"):
        cv_ridge_scores(X, Y, [(np.arange(10), np.arange(55, 70))], ALPHAS)
    with pytest.raises(NotFittedError):
        CVRidgeEncoder().predict(X)
    with pytest.raises(FMRIInputError, match="NaN"):
        CVRidgeEncoder(tr=2.0).fit(X, Ybad)


def test_progress_and_cancel(rng):
    X, Y = _simulated(rng, n=60, v=20)
    folds = contiguous_folds(60, 3, 1)
    calls = []
    cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=1, chunk_size=5,
                    progress=lambda *a: calls.append(a))
    assert calls[-1] == ("cross-validated ridge", 4, 4)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=1, cancel=cancel)


# --------------------------------------------------------------------------- spectral path


def _assert_same_scores(a, b, atol):
    np.testing.assert_array_equal(a.alpha_folds, b.alpha_folds)
    np.testing.assert_allclose(a.r2_folds, b.r2_folds, atol=atol)
    np.testing.assert_allclose(a.r_folds, b.r_folds, atol=atol)


@pytest.mark.parametrize("solver", ["gram", "svd", "eigh"])
def test_spectral_path_equals_the_predictions_path(rng, solver):
    """Nested CV scored without the α path's predictions gives the same α and scores.

    "eigh" with fewer regressors than training volumes leaves many eigenvalues at zero
    (ties), which the spectral path sums directly; a duplicated regressor and a
    regressor constant in some training folds make the SVD rank-deficient.
    """
    import napari_brainorg.encoding.ridge as ridge

    X, Y = _simulated(rng, n=150, p=7, v=40)
    X[:, 5] = X[:, 4]                                          # duplicated regressor
    X[:60, 6] = 1.0                                            # constant in some training folds
    folds = contiguous_folds(150, 4, 3)
    common = dict(inner_folds=3, gap=3, solver=solver, chunk_size=9)   # several chunks, on threads
    ref = cv_ridge_scores(X, Y, folds, ALPHAS, path="predictions", **common)
    fast = cv_ridge_scores(X, Y, folds, ALPHAS, path="spectral", **common)
    _assert_same_scores(fast, ref, 1e-10)
    assert len(np.unique(ref.alpha_folds)) > 1
    if solver == "eigh":  # the tie branch ran
        bk = ridge.get_backend("numpy", None, "float64")
        f = ridge._factorise(bk, X, folds[0][0][:80], folds[0][0][80:], standardize=True, solver="eigh",
                             alphas=ALPHAS)
        assert f.spectral.near is not None
    # float32 data: float32 projections, float64 path
    f32 = [a.astype(np.float32) for a in (X, Y)]
    _assert_same_scores(cv_ridge_scores(*f32, folds, ALPHAS, path="spectral", **common),
                        cv_ridge_scores(*f32, folds, ALPHAS, path="predictions", **common), 2e-5)
    # single level: same choice, scores, coefficients and intercepts
    a = ridge_cv_fit(X, Y, folds, ALPHAS, path="spectral", solver=solver, chunk_size=9)
    b = ridge_cv_fit(X, Y, folds, ALPHAS, path="predictions", solver=solver, chunk_size=9)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    for name in ("cv_scores", "coef", "intercept"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_folds_sums_give_what_each_factors_own_projections_give(rng, monkeypatch, dtype):
    """Every fold's projections from the chunk's sums over the folds' segments (one pass
    over the fMRI) equal each factor's own products with U and B: the same α, scores,
    coefficients; a voxel constant everywhere and one constant on a test fold score 0."""
    import napari_brainorg.encoding._ridge_segments as segments
    import napari_brainorg.encoding.ridge as ridge

    X, Y = _simulated(rng, n=240, p=8, v=60)
    Y[:, 3] = 2.5                                               # constant everywhere
    Y[:60, 7] = -1.0                                            # constant on the first test fold
    X, Y = X.astype(dtype), Y.astype(dtype)
    folds = contiguous_folds(240, 4, 3)
    calls = []
    real = segments.chunk_stats
    monkeypatch.setattr(ridge, "chunk_stats", lambda plan, Yc: calls.append(Yc.shape) or real(plan, Yc))
    common = dict(inner_folds=3, gap=3, chunk_size=16)
    summed = cv_ridge_scores(X, Y, folds, ALPHAS, **common)
    fit_summed = ridge_cv_fit(X, Y, folds, ALPHAS, chunk_size=16)
    assert len(calls) == 2 * 4                                  # both fits read their chunks' sums
    monkeypatch.setattr(ridge, "segment_plan", lambda factors, X: None)
    own = cv_ridge_scores(X, Y, folds, ALPHAS, **common)
    fit_own = ridge_cv_fit(X, Y, folds, ALPHAS, chunk_size=16)
    _assert_same_scores(summed, own, 1e-10 if dtype == np.float64 else 2e-5)
    assert np.all(summed.r2_folds[:, 3] == 0) and np.all(summed.r_folds[:, 3] == 0)
    assert summed.r2_folds[0, 7] == 0 and summed.r_folds[0, 7] == 0
    np.testing.assert_array_equal(fit_summed.alpha, fit_own.alpha)
    for name in ("cv_scores", "coef", "intercept"):
        np.testing.assert_allclose(getattr(fit_summed, name), getattr(fit_own, name),
                                   atol=1e-9 if dtype == np.float64 else 2e-5)


def test_spectral_path_sums_every_pair_directly_when_told(rng, monkeypatch):
    """The partial-fraction sum and the direct sum over all pairs agree."""
    import napari_brainorg.encoding._ridge_spectral as spectral_path

    X, Y = _simulated(rng, n=120, p=6, v=20)
    folds = contiguous_folds(120, 4, 2)
    spectral = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=2)
    monkeypatch.setattr(spectral_path, "_NEAR_GAP", np.inf)
    direct = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=2)
    _assert_same_scores(spectral, direct, 1e-10)


def test_spectral_path_takes_unsorted_and_repeated_training_indices(rng):
    X, Y = _simulated(rng, n=100, p=5, v=12)
    train = np.concatenate([np.arange(60, 100)[::-1], np.arange(60, 70)])   # unsorted, repeated
    folds = [(train, np.arange(0, 50)), (np.arange(0, 50), np.arange(60, 100))]
    a = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=1)
    b = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=1, path="predictions")
    _assert_same_scores(a, b, 1e-10)
    with pytest.raises(ConfigError, match="'path'"):
        cv_ridge_scores(X, Y, folds, ALPHAS, path="fast")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda_available(), reason="no CUDA device here: the ridge's GPU path (torch on CUDA) is not run")
def test_cuda_ridge_equals_the_numpy_spectral_path(rng):
    X, Y = _simulated(rng, n=120, p=6, v=30)
    folds = contiguous_folds(120, 4, 2)
    cpu = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=2)
    gpu = cv_ridge_scores(X, Y, folds, ALPHAS, inner_folds=3, gap=2, backend="torch", device="cuda")
    _assert_same_scores(gpu, cpu, 1e-8)
    fit_cpu = ridge_cv_fit(X, Y, folds, ALPHAS)
    fit_gpu = ridge_cv_fit(X, Y, folds, ALPHAS, backend="torch", device="cuda")
    np.testing.assert_array_equal(fit_gpu.alpha, fit_cpu.alpha)
    np.testing.assert_allclose(fit_gpu.coef, fit_cpu.coef, atol=1e-8)


def test_a_few_hundred_voxels_give_the_same_scores_on_one_thread_and_on_two(rng):
    """A chance level's summary voxels are split into several chunks (so they use every
    core); the chunks depend on the voxels only, so the scores are bit-identical."""
    from napari_brainorg.encoding._ridge_chunks import _chunk_size
    from napari_brainorg.encoding.ridge import contiguous_folds, cv_ridge_scores
    from napari_brainorg._backend import blas_limit, get_backend

    assert _chunk_size(get_backend(), None, 8, 100, 1000, spectral=True) == 256
    assert _chunk_size(get_backend(), None, 8, 100, 100, spectral=True) == 100
    assert _chunk_size(get_backend(), None, 8, 100, 50_000, spectral=True) == 1024
    X = rng.standard_normal((240, 12)).cumsum(0)
    Y = rng.standard_normal((240, 700)) + 0.1 * X[:, :3] @ rng.standard_normal((3, 700))
    folds = contiguous_folds(240, 4, 3)
    with blas_limit(1):
        one = cv_ridge_scores(X, Y, folds, np.logspace(-1, 4, 6), gap=3)
    with blas_limit(2):
        two = cv_ridge_scores(X, Y, folds, np.logspace(-1, 4, 6), gap=3)
    np.testing.assert_array_equal(one.r, two.r)
    np.testing.assert_array_equal(one.alpha_folds, two.alpha_folds)
