"""Split-half noise ceiling with Spearman-Brown on data of known reliability."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainorg.encoding.stats import noise_ceiling_isc, noise_ceiling_split_half
from napari_brainorg.errors import ShapeError


def _subjects(rng, n_subjects, reliability, n_volumes=300, n_voxels=1500):
    """Each subject: a shared signal of variance ``reliability`` plus independent noise of
    variance ``1 - reliability`` (the classical model; the single-subject reliability and
    the correlation of one subject with the signal, sqrt(reliability), are known)."""
    signal = rng.standard_normal((n_volumes, n_voxels)) * np.sqrt(reliability)
    return [signal + rng.standard_normal((n_volumes, n_voxels)) * np.sqrt(1 - reliability)
            for _ in range(n_subjects)]


@pytest.mark.parametrize("n_subjects", [2, 5, 6])
def test_split_half_recovers_the_known_reliability(rng, n_subjects):
    rho = 0.3
    Ys = _subjects(rng, n_subjects, rho)
    ceiling = noise_ceiling_split_half(Ys, n_splits=20, random_state=0)
    assert abs(ceiling.reliability.mean() - rho) < 0.02
    assert abs(ceiling.subject_r.mean() - np.sqrt(rho)) < 0.02
    group = n_subjects * rho / (1 + (n_subjects - 1) * rho)  # Spearman-Brown to n subjects
    assert abs(ceiling.group_r.mean() - np.sqrt(group)) < 0.02
    # the leave-one-out ISC sits below the ceiling: sqrt(rho * SB(rho, n - 1))
    loo = noise_ceiling_isc(Ys).mean()
    assert abs(loo - np.sqrt(rho * (n_subjects - 1) * rho / (1 + (n_subjects - 2) * rho))) < 0.02
    assert loo < ceiling.subject_r.mean() - 0.05


def test_every_distinct_split_is_used_when_there_are_few(rng):
    Ys = _subjects(rng, 4, 0.5, n_voxels=50)
    assert noise_ceiling_split_half(Ys, n_splits=100).n_splits == 3  # {01|23}, {02|13}, {03|12}
    assert noise_ceiling_split_half(Ys[:3], n_splits=100).n_splits == 3
    assert noise_ceiling_split_half(_subjects(rng, 10, 0.5, n_voxels=50), n_splits=7).n_splits == 7


def test_no_shared_signal_gives_a_ceiling_near_zero(rng):
    Ys = _subjects(rng, 6, 0.0)
    c = noise_ceiling_split_half(Ys)
    assert np.all(c.reliability >= 0) and c.reliability.mean() < 0.01


def test_one_subject_is_refused(rng):
    with pytest.raises(ShapeError, match="at least 2"):
        noise_ceiling_split_half(_subjects(rng, 1, 0.5, n_voxels=5))


def test_split_half_stops_on_a_set_cancel(rng):
    import threading

    from napari_brainorg.errors import CancelledError

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        noise_ceiling_split_half(_subjects(rng, 4, 0.5, n_voxels=50), cancel=cancel)
