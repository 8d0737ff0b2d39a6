"""Temporal consistency of a network's atoms (with n atoms and a size-matched null) and diversity."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.analyses.consistency import (
    atom_correlations,
    atom_diversity,
    consistency_null_curve,
    groups_from_associations,
    set_consistency,
    temporal_consistency,
)
from napari_brainorg.errors import CancelledError, ShapeError


@pytest.fixture
def atoms(rng):
    """20 atoms: 0-3 share a common time course (a consistent group), the rest independent."""
    n = 300
    common = rng.standard_normal(n)
    a = rng.standard_normal((n, 20))
    a[:, :4] = common[:, None] + 0.5 * rng.standard_normal((n, 4))
    return a / np.linalg.norm(a, axis=0)


def test_correlations_match_numpy(atoms):
    np.testing.assert_allclose(atom_correlations(atoms), np.corrcoef(atoms.T), atol=1e-12)


def test_consistency_is_mean_pairwise_correlation(atoms):
    c = np.corrcoef(atoms.T)
    members = [0, 2, 3]
    expected = np.mean([c[0, 2], c[0, 3], c[2, 3]])
    assert set_consistency(atoms, members) == pytest.approx(expected)
    assert np.isnan(set_consistency(atoms, [5]))


def test_table_reports_n_atoms_and_null(atoms):
    table = temporal_consistency(atoms, {"coherent": [0, 1, 2, 3], "random": [8, 11, 15, 17], "one": [9]},
                                 n_null=2000, random_state=0)
    assert list(table["n_atoms"]) == [4, 4, 1]
    coherent, random, one = (table.iloc[i] for i in range(3))
    # The shared-signal group stands far above random sets of 4; the random group does not.
    assert coherent["consistency"] > 0.6 and coherent["p"] < 0.01 and coherent["z"] > 5
    assert abs(random["consistency"]) < 0.15 and random["p"] > 0.01
    assert coherent["null_mean"] == random["null_mean"]  # same size, same null
    assert np.isnan(one["consistency"]) and np.isnan(one["null_mean"])
    assert coherent["atoms"] == "0 1 2 3"


def test_null_matches_brute_force(atoms):
    """The vectorised null equals the mean over explicitly drawn random sets."""
    table = temporal_consistency(atoms, {"g": [0, 5, 9]}, n_null=3000, random_state=1)
    rng = np.random.default_rng(2)
    brute = [set_consistency(atoms, rng.choice(20, 3, replace=False)) for _ in range(3000)]
    assert table.loc[0, "null_mean"] == pytest.approx(np.mean(brute), abs=0.01)
    assert table.loc[0, "null_sd"] == pytest.approx(np.std(brute), rel=0.1)


def test_smaller_sets_vary_more(atoms):
    curve = consistency_null_curve(atoms, sizes=[2, 4, 8, 16], n_draws=2000, random_state=0)
    assert list(curve["n_atoms"]) == [2, 4, 8, 16]
    assert np.all(np.diff(curve["sd"].to_numpy()) < 0)
    assert np.all(curve["q025"] <= curve["mean"]) and np.all(curve["mean"] <= curve["q975"])


def test_groups_from_association_table():
    table = pd.DataFrame({"atom": [0, 1, 2, 0, 3], "network": ["a", "a", "a", "b", "c"],
                          "associated": [True, False, True, True, False]})
    assert groups_from_associations(table) == {"a": [0, 2], "b": [0], "c": []}


def test_diversity_two_ways():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((200, 10)))
    q -= q.mean(axis=0)
    orth = atom_diversity(q)
    assert orth["n_atoms"] == 10 and orth["effective_number"] == pytest.approx(10, rel=0.05)
    assert orth["diversity"] > 0.9
    one = np.repeat(rng.standard_normal((200, 1)), 10, axis=1) * np.where(np.arange(10) % 2, 1, -1)
    same = atom_diversity(one)
    assert same["diversity"] == pytest.approx(0.0, abs=1e-9)
    assert same["effective_number"] == pytest.approx(1.0, abs=1e-6)


def test_constant_atoms_are_left_out_of_diversity(atoms):
    a = atoms.copy()
    a[:, 7] = 1.0
    d = atom_diversity(a)
    assert d["n_constant"] == 1 and d["n_atoms"] == 19 and np.isfinite(d["diversity"])


def test_errors_and_cancel(atoms):
    with pytest.raises(ShapeError, match=r"\[0, 19\]"):
        temporal_consistency(atoms, {"x": [0, 25]})
    with pytest.raises(ShapeError, match="2D"):
        atom_correlations(atoms[:, 0])
    event = threading.Event()
    event.set()
    with pytest.raises(CancelledError):
        temporal_consistency(atoms, {"x": [0, 1]}, cancel=event)
