"""Recovery of planted atom ↔ network links: counting, and matching re-learned atoms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.analyses.recovery import match_atoms, recovery_scores
from napari_brainorg.errors import ShapeError

NETWORKS = ["auditory", "default mode", "visual", "sensorimotor"]


def _found(declared: set[tuple[int, str]], n_atoms: int = 10) -> pd.DataFrame:
    rows = [(a, n, (a, n) in declared) for a in range(n_atoms) for n in NETWORKS]
    return pd.DataFrame(rows, columns=["atom", "network", "associated"])


def test_perfect_recovery():
    truth = {2: ["auditory"], 5: ["default mode", "visual"]}
    s = recovery_scores(truth, _found({(2, "auditory"), (5, "default mode"), (5, "visual")}))
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 0, 0)
    assert s["n_tested"] == 40 and s["false_positive_rate"] == 0.0


def test_misses_and_false_alarms_are_counted():
    truth = {"2": ["auditory"], "5": ["default mode", "visual"]}  # keys as in truth.json
    s = recovery_scores(truth, _found({(2, "auditory"), (5, "visual"), (7, "visual"), (1, "auditory")}))
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["false_positive_rate"] == pytest.approx(2 / 37)
    statuses = {(d["atom"], d["network"]): d["status"] for d in s["details"]}
    assert statuses[(5, "default mode")] == "fn" and statuses[(7, "visual")] == "fp"
    json.dumps(s)  # recovery.json must be writable as is


def test_matching_maps_planted_to_learned_atoms():
    truth = {0: ["auditory"], 1: ["visual"]}
    matching = {0: 3, 1: None}  # planted atom 1 was not found again
    s = recovery_scores(truth, _found({(3, "auditory"), (0, "auditory")}), matching)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    miss = next(d for d in s["details"] if d["status"] == "fn")
    assert miss == {"planted_atom": 1, "atom": -1, "network": "visual", "status": "fn"}


def test_nothing_planted_nothing_declared():
    s = recovery_scores({}, _found(set()))
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 0) and s["false_positive_rate"] == 0.0


def test_hungarian_matching_recovers_permutation_and_sign(rng):
    planted = rng.standard_normal((150, 6))
    perm = np.array([4, 0, 5, 2, 1, 3])
    signs = np.array([1, -1, 1, 1, -1, 1])
    learned = np.empty((150, 8))
    learned[:, perm] = planted * signs + 0.3 * rng.standard_normal((150, 6))
    learned[:, 6:] = rng.standard_normal((150, 2))  # extra learned atoms, unmatched
    matching, table = match_atoms(planted, learned, min_correlation=0.5)
    assert matching == {p: int(perm[p]) for p in range(6)}
    assert table["sign"].tolist() == signs.tolist() and table["matched"].all()
    assert (table["correlation"].abs() > 0.9).all()


def test_weak_pairs_stay_unmatched(rng):
    planted = rng.standard_normal((150, 3))
    learned = np.column_stack([planted[:, 0], rng.standard_normal((150, 2))])
    matching, table = match_atoms(planted, learned, min_correlation=0.5)
    assert matching[0] == 0 and matching[1] is None and matching[2] is None
    assert table["learned"].tolist()[1:] == [-1, -1]


def test_bad_inputs(rng):
    with pytest.raises(ShapeError, match="volumes"):
        match_atoms(rng.standard_normal((10, 2)), rng.standard_normal((12, 2)))
    with pytest.raises(ShapeError, match="associated"):
        recovery_scores({0: ["auditory"]}, pd.DataFrame({"atom": [0], "network": ["auditory"]}))


def _hrf_atoms(n_volumes: int, n_atoms: int, tr: float, seed: int) -> np.ndarray:
    from nilearn.glm.first_level import glover_hrf

    rng = np.random.default_rng(seed)
    hrf = glover_hrf(tr, oversampling=1, time_length=32.0)
    raw = rng.standard_normal((n_volumes + 40, n_atoms))
    atoms = np.stack([np.convolve(raw[:, j], hrf)[40:n_volumes + 40] for j in range(n_atoms)], axis=1)
    return atoms / np.linalg.norm(atoms, axis=0)


@pytest.mark.parametrize("planted", [True, False], ids=["planted", "null"])
def test_planted_links_are_recovered_end_to_end(planted):
    """Simulate at realistic SNR (true R² 0.05-0.2), encode, associate, score.

    With links planted, precision and recall reach 0.9; with nothing planted,
    associations are declared at no more than the nominal rate.
    """
    import warnings

    from napari_brainorg.encoding.glm import ols_zmaps, stouffer
    from napari_brainorg.encoding.preprocessing import cosine_drift_basis, highpass
    from napari_brainorg.io.atlases import load_fbn
    from napari_brainorg.networks.overlap import associate_atoms
    from napari_brainorg.simulate import SimulationPlan, simulate_fmri

    tr = 1.5
    atoms = _hrf_atoms(300, 6, tr, seed=5)
    links = {0: ["auditory"], 2: ["default mode"], 3: ["medial visual"], 5: ["sensorimotor"]}
    plan = SimulationPlan(links=links if planted else {}, n_subjects=3, resolution_mm=6.0, seed=3)
    sim = simulate_fmri(atoms, plan, tr=tr)
    X = highpass(atoms, tr)
    n_drift = cosine_drift_basis(atoms.shape[0], tr).shape[1]
    group = stouffer(np.stack([ols_zmaps(X, highpass(y, tr), n_nuisance=n_drift) for y in sim.data]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the template is resampled to the 6 mm grid on purpose
        atlas = load_fbn("smith10", sim.mask_img)
    table = associate_atoms(group, atlas, sim.mask_img, n_permutations=500, random_state=0)
    scores = recovery_scores(sim.truth["links"], table)
    assert scores["n_tested"] == 60
    if planted:
        assert scores["precision"] >= 0.9 and scores["recall"] >= 0.9
    else:
        assert scores["tp"] == scores["fn"] == 0
        assert scores["false_positive_rate"] <= 0.05
