"""The viewer's voxel courses formed on demand from a result's design and weights."""

from __future__ import annotations

import numpy as np

from napari_brainorg.encoding.ridge import CVRidgeEncoder
from napari_brainorg.io.results import HeldOutCourses, PredictedCourses


def _fit(seed=0, n=240, p=5, v=4):
    """SIMULATED regressors and voxels (a planted linear signal plus noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).cumsum(0) * 0.1 + rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, v)) + 2.0 * rng.standard_normal((n, v)) + 50.0
    enc = CVRidgeEncoder(alphas=np.logspace(-1, 4, 6), n_folds=4, gap=3, tr=1.5).fit(X, Y)
    return X, Y, enc


def test_held_out_courses_reproduce_the_ridges_per_fold_r():
    """Each fold's correlation of the formed held-out course with the (filtered) voxel is
    the r the cross-validated ridge scored on that fold: the course is the prediction the
    held-out scores were computed from."""
    X, Y, enc = _fit()
    measured = enc._filter(Y).T[None]                        # (1 subject, n_voxels, n_volumes)
    design = enc._design(X)
    courses = HeldOutCourses(measured, design, np.asarray(enc.alpha_folds_).T[None], enc.folds_)
    assert courses.shape == (1, Y.shape[1], Y.shape[0])
    for v in range(Y.shape[1]):
        course = courses[0, v]
        for f, (_, test) in enumerate(enc.folds_):
            r = np.corrcoef(course[test], measured[0, v, test])[0, 1]
            np.testing.assert_allclose(r, enc.r_folds_[f, v], atol=1e-5)
    # a subject slice and one voxel, as the explorer indexes it
    assert courses[0:1, 2, :].shape == (1, Y.shape[0])


def test_predicted_courses_are_design_times_weights():
    rng = np.random.default_rng(1)
    design = rng.standard_normal((30, 3)).astype(np.float32)
    weights = rng.standard_normal((2, 5, 3)).astype(np.float32)
    intercept = rng.standard_normal((2, 5)).astype(np.float32)
    courses = PredictedCourses(design, weights, intercept)
    np.testing.assert_allclose(courses[1, 4], design @ weights[1, 4] + intercept[1, 4], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(courses)[0, 2, 5:9], courses[0, 2, 5:9], rtol=1e-6)
    assert courses[:, 3, :].shape == (2, 30)
