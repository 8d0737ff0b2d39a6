"""The two encoders are scikit-learn estimators: clone, get_params, cross_val_score and
scikit-learn's own estimator checks (SparseDictionary's run in tests/sparse)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import KFold, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from napari_brainorg.encoding.ridge import CVRidgeEncoder
from napari_brainorg.encoding.sparse_fit import SparseAtomEncoder

# Settings for scikit-learn's checks, whose data sets have 10-30 rows: two folds without
# a gap, no high-pass (the checks' rows are not a time series).
_SMALL_RIDGE = dict(alphas=(0.01, 0.1, 1.0, 10.0), n_folds=2, inner_folds=2, gap=0,
                    highpass_cutoff=None, detrend=False)

#: checks that do not apply, with the reason (kept to what the design makes true)
_EXPECTED = {
    "CVRidgeEncoder": {
        "check_sample_weight_equivalence_on_dense_data": "no sample weights: rows are fMRI volumes",
        "check_methods_subset_invariance": "predict filters X over its rows (a time series): the "
                                           "rows of a subset are another series, with another mean",
        "check_fit2d_1sample": "contiguous cross-validation folds need at least 2 rows per fold",
    },
    "SparseAtomEncoder": {
        "check_non_transformer_estimators_n_iter": "each voxel's lasso is solved to tolerance by a batched "
                                                   "solver that keeps no per-voxel iteration count",
        "check_fit2d_1sample": "one volume leaves every atom constant once centred; the error says so "
                               "in the atoms' terms",
    },
}


def _expected_failed_checks(estimator):
    out = dict(_EXPECTED[type(estimator).__name__])
    return {k: v for k, v in out.items() if v != "ok"}


@parametrize_with_checks(
    [CVRidgeEncoder(**_SMALL_RIDGE), SparseAtomEncoder(alpha=0.01)],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.mark.parametrize("make", [lambda: CVRidgeEncoder(**_SMALL_RIDGE), lambda: SparseAtomEncoder(alpha=0.05)])
def test_clone_get_params_and_cross_val_score(make, rng):
    est = make()
    params = est.get_params()
    copy = clone(est)
    assert copy is not est and copy.get_params() == params
    atoms = rng.standard_normal((120, 4))
    y = atoms[:, 1] * 2.0 + 0.3 * rng.standard_normal(120) + 5.0
    scores = cross_val_score(est, atoms, y, cv=KFold(3))
    assert scores.shape == (3,) and np.all(scores > 0.8), scores  # the planted atom predicts y
    pred = clone(est).fit(atoms, y).predict(atoms)
    assert pred.shape == y.shape
    assert abs(pred.mean() - 5.0) < 0.2  # predictions in y's units (mean kept)
