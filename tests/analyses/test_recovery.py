"""Recovery of planted atom ↔ network links: counting, and matching re-learned atoms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.analyses.recovery import match_atoms, recovery_scores, source_constituents
from napari_brainorg.errors import ShapeError

NETWORKS = ["auditory", "default mode", "visual", "sensorimotor"]


def _tables(declared: set[tuple[int, str, str, str]], n_atoms: int = 10,
            atlases=("smith10", "yeo7")) -> dict[str, pd.DataFrame]:
    """Every atom x atlas x network test; ``declared`` holds (atom, atlas, network, direction)."""
    out = {}
    for part in ("activated", "deactivated"):
        rows = [(a, atlas, n, (a, atlas, n, part) in declared)
                for a in range(n_atoms) for atlas in atlases for n in NETWORKS]
        out[part] = pd.DataFrame(rows, columns=["atom", "atlas", "network", "associated"])
    return out


def _matching(pairs: dict[int, tuple[int, int]]) -> pd.DataFrame:
    """source -> (atom, sign)."""
    return pd.DataFrame([{"planted": s, "learned": a, "correlation": 0.8 * g, "sign": g, "matched": a >= 0}
                         for s, (a, g) in pairs.items()])


EXPECTED = [
    {"source": 0, "atlas": "smith10", "network": "auditory", "sign": 1},
    {"source": 0, "atlas": "yeo7", "network": "auditory", "sign": 1},
    {"source": 1, "atlas": "smith10", "network": "default mode", "sign": -1},
]


def test_every_declaration_is_scored_with_signs_and_atlases():
    match = _matching({0: (3, 1), 1: (7, 1)})
    declared = {(3, "smith10", "auditory", "activated"), (3, "yeo7", "auditory", "activated"),
                (7, "smith10", "default mode", "deactivated")}
    s = recovery_scores(EXPECTED, _tables(declared), match)
    assert (s["precision"], s["recall"], s["tp"], s["fp"], s["fn"]) == (1.0, 1.0, 3, 0, 0)
    assert s["n_tests"] == 2 * 10 * 2 * 4 and s["n_declared"] == 3 and s["n_expected"] == 3
    # the same atom declared in the other direction, another network or by an unmatched atom: false
    wrong = declared | {(3, "smith10", "auditory", "deactivated"), (3, "yeo7", "visual", "activated"),
                        (5, "smith10", "auditory", "activated"), (7, "smith10", "default mode", "activated")}
    s = recovery_scores(EXPECTED, _tables(wrong), match)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 4, 0)
    assert s["precision"] == pytest.approx(3 / 7)
    assert s["by_direction"]["deactivated"]["fp"] == 1 and s["by_direction"]["activated"]["fp"] == 3
    assert s["by_atlas"]["yeo7"]["fp"] == 1 and s["by_atlas"]["smith10"]["fp"] == 3
    fps = {(d["atom"], d["atlas"], d["network"], d["direction"]) for d in s["details"] if d["status"] == "fp"}
    assert (5, "smith10", "auditory", "activated") in fps
    json.dumps(s)  # recovery.json must be writable as is


def test_an_anticorrelated_atom_flips_the_direction():
    match = _matching({0: (3, -1), 1: (7, -1)})
    # source 0 activates auditory; its atom is its negative, so the atom "deactivates" auditory
    right = {(3, "smith10", "auditory", "deactivated"), (3, "yeo7", "auditory", "deactivated"),
             (7, "smith10", "default mode", "activated")}
    s = recovery_scores(EXPECTED, _tables(right), match)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 0, 0)
    unflipped = {(3, "smith10", "auditory", "activated"), (7, "smith10", "default mode", "deactivated")}
    s = recovery_scores(EXPECTED, _tables(unflipped), match)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 2, 3) and s["precision"] == 0.0 and s["recall"] == 0.0
    miss = {d["network"]: d["direction"] for d in s["details"] if d["status"] == "fn" and d["atlas"] == "smith10"}
    assert miss == {"auditory": "deactivated", "default mode": "activated"}  # what the atom should have shown


def test_unmatched_sources_are_misses_and_their_atoms_false_positives():
    match = _matching({0: (3, 1), 1: (-1, 1)})
    s = recovery_scores(EXPECTED, _tables({(3, "smith10", "auditory", "activated"),
                                           (7, "smith10", "default mode", "deactivated")}), match)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 2)
    assert {(d["source"], d["atom"]) for d in s["details"] if d["status"] == "fn"} == {(0, 3), (1, -1)}


def test_only_scored_atlases_count_and_null_has_no_recall():
    s = recovery_scores(EXPECTED, _tables(set(), atlases=("smith10",)), _matching({0: (3, 1), 1: (7, 1)}))
    assert s["n_expected"] == 2 and s["fn"] == 2 and set(s["by_atlas"]) == {"smith10"}
    s = recovery_scores([], _tables({(2, "yeo7", "visual", "activated")}), _matching({}))
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 0) and s["recall"] is None and s["precision"] == 0.0
    assert s["false_positive_rate"] == pytest.approx(1 / 160)


def test_partial_overlaps_stay_false_positives_and_are_counted_apart():
    match = _matching({0: (3, 1), 1: (7, 1)})
    partial = [{"source": 0, "atlas": "smith10", "network": "visual", "sign": 1, "share": 0.12},
               {"source": 0, "atlas": "smith10", "network": "auditory", "sign": 1, "share": 1.0}]
    declared = {(3, "smith10", "auditory", "activated"), (3, "smith10", "visual", "activated"),
                (3, "smith10", "visual", "deactivated")}
    s = recovery_scores(EXPECTED, _tables(declared), match, partial_links=partial)
    assert (s["tp"], s["fp"], s["fp_partial"]) == (1, 2, 1)  # the wrong sign is not a partial overlap
    shares = {(d["network"], d["direction"]): d["partial_share"] for d in s["details"] if d["status"] == "fp"}
    assert shares == {("visual", "activated"): 0.12, ("visual", "deactivated"): None}


def test_one_table_with_a_direction_column():
    tables = _tables({(3, "smith10", "auditory", "activated")})
    one = pd.concat([t.assign(direction=p) for p, t in tables.items()])
    s = recovery_scores(EXPECTED, one, _matching({0: (3, 1), 1: (7, 1)}))
    assert (s["tp"], s["fp"], s["fn"]) == (1, 0, 2)
    with pytest.raises(ShapeError, match="direction"):
        recovery_scores(EXPECTED, one.drop(columns="direction"))


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


def test_a_source_split_into_two_atoms_can_match_both(rng):
    planted = rng.standard_normal((200, 2))
    learned = np.column_stack([planted[:, 0] + 0.5 * rng.standard_normal(200),
                               -(planted[:, 0] + 0.5 * rng.standard_normal(200)),
                               planted[:, 1], rng.standard_normal(200)])
    _, one = match_atoms(planted, learned)
    assert len(one) == 2 and set(one["learned"]) == {0, 2} or set(one["learned"]) == {1, 2}
    matching, many = match_atoms(planted, learned, one_to_one=False)
    assert sorted(zip(many["planted"], many["learned"], many["sign"])) == [(0, 0, 1), (0, 1, -1), (1, 2, 1)]
    # both atoms of source 0 score, the second one with its direction flipped
    expected = [{"source": 0, "atlas": "a", "network": "n", "sign": 1}]
    tables = {p: pd.DataFrame({"atom": [0, 1], "atlas": "a", "network": "n",
                               "associated": [p == "activated", p == "deactivated"]})
              for p in ("activated", "deactivated")}
    s = recovery_scores(expected, tables, many)
    assert (s["tp"], s["fp"], s["fn"], s["recall"]) == (2, 0, 0, 1.0)
    expected.append({"source": 1, "atlas": "a", "network": "n", "sign": 1})
    s = recovery_scores(expected, tables, many)
    assert (s["tp"], s["fn"], s["recall"]) == (2, 1, 0.5)  # one of the two links found


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
        recovery_scores(EXPECTED, {"activated": pd.DataFrame({"atom": [0], "network": ["auditory"]})})


def _hrf_atoms(n_volumes: int, n_atoms: int, tr: float, seed: int) -> np.ndarray:
    from nilearn.glm.first_level import glover_hrf

    rng = np.random.default_rng(seed)
    hrf = glover_hrf(tr, oversampling=1, time_length=32.0)
    raw = rng.standard_normal((n_volumes + 40, n_atoms))
    atoms = np.stack([np.convolve(raw[:, j], hrf)[40:n_volumes + 40] for j in range(n_atoms)], axis=1)
    return atoms / np.linalg.norm(atoms, axis=0)


@pytest.mark.parametrize("planted", [True, False], ids=["planted", "null"])
def test_planted_links_are_recovered_end_to_end(planted):
    """Simulate at true R² 0.05-0.2 with the atoms themselves, encode, associate, score.

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
    # the conditions this association test was built for: the analysis' own atoms planted,
    # AR(1) 0.4 everywhere, canonical HRF, no network fluctuations
    plan = SimulationPlan(links=links if planted else {}, n_subjects=3, resolution_mm=6.0, seed=3,
                          r2_range=(0.05, 0.2), ar1_grey=0.4, ar1_other=0.4, hrf_delay_s=0.0,
                          hrf_dispersion_s=0.0, fluctuation_atlases=[], truth_atlases=["smith10"])
    sim = simulate_fmri(atoms, plan, tr=tr)
    X = highpass(atoms, tr)
    n_drift = cosine_drift_basis(atoms.shape[0], tr).shape[1]
    group = stouffer(np.stack([ols_zmaps(X, highpass(y, tr), n_nuisance=n_drift) for y in sim.data]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the template is resampled to the 6 mm grid on purpose
        atlas = load_fbn("smith10", sim.mask_img)
    table = associate_atoms(group, atlas, sim.mask_img, n_permutations=500, random_state=0)
    table.insert(0, "atlas", "smith10")
    planted_only = [e for e in sim.truth["expected_links"] if e["share"] == 1.0]
    scores = recovery_scores(planted_only, {"activated": table})
    assert scores["n_tests"] == 60
    if planted:
        assert scores["precision"] >= 0.9 and scores["recall"] >= 0.9
    else:
        assert scores["tp"] == scores["fn"] == 0
        assert scores["fp"] <= 0.05 * scores["n_tests"]


def test_constituent_reading_credits_the_atoms_a_mixed_source_is_made_of(rng):
    """A source that is 0.8 atom 3 - 0.5 atom 7 drives auditory: atom 7's deactivation of
    auditory is a true partial effect. The one-to-one reading calls it false, the
    constituent reading credits it; an atom outside the source stays false in both."""
    n = 300
    atoms = rng.standard_normal((n, 10))
    source = 0.8 * atoms[:, 3] - 0.5 * atoms[:, 7] + 0.05 * rng.standard_normal(n)
    other = atoms[:, 1] + 0.1 * rng.standard_normal(n)
    cons = source_constituents(np.column_stack([source, other]), atoms)
    beta = cons.pivot(index="learned", columns="planted", values="beta")
    assert beta.loc[3, 0] > 0.6 and beta.loc[7, 0] < -0.35 and abs(beta.loc[5, 0]) < 0.1
    assert set(cons.loc[cons["constituent"] & (cons["planted"] == 0), "learned"]) == {3, 7}
    assert cons["r2"].min() > 0.95
    expected = [{"source": 0, "atlas": "smith10", "network": "auditory", "sign": 1}]
    declared = {(3, "smith10", "auditory", "activated"), (7, "smith10", "auditory", "deactivated"),
                (5, "smith10", "auditory", "activated"), (7, "smith10", "auditory", "activated")}
    match = _matching({0: (3, 1), 1: (1, 1)})
    strict = recovery_scores(expected, _tables(declared), match)
    assert (strict["tp"], strict["fp"], strict["fn"]) == (1, 3, 0)
    both = recovery_scores(expected, _tables(declared), match, constituents=cons)
    # atom 7 deactivating is right (its coefficient is negative); atom 7 activating and atom 5 are not
    assert (both["tp"], both["fp"], both["fn"]) == (2, 2, 0) and both["recall"] == 1.0
    assert "Constituent reading" in both["criterion"]
    with pytest.raises(ShapeError, match="volumes"):
        source_constituents(source[:, None], atoms[:-1])


def test_direction_reading_in_the_sources_terms():
    from napari_brainorg.analyses.recovery import direction_reading

    expected = [{"source": 0, "atlas": "smith10", "network": "auditory", "sign": 1, "share": 1.0},
                {"source": 0, "atlas": "yeo7", "network": "Somatomotor", "sign": 1, "share": 0.3},
                {"source": 1, "atlas": "yeo7", "network": "Limbic", "sign": -1, "share": 1.0}]
    # source 0 = atom 5 - 0.5 atom 8; source 1 = -atom 3 (the atom is anti-aligned with its source)
    cons = pd.DataFrame({"planted": [0, 0, 1], "learned": [5, 8, 3], "beta": [0.9, -0.45, -0.95]})
    act = pd.DataFrame({"atlas": ["smith10", "yeo7", "yeo7"], "network": ["auditory", "Somatomotor", "Limbic"],
                        "atom": [5, 5, 3], "statistic": [9.0, 4.0, 7.0], "associated": [True, True, True],
                        "role": ["main driver"] * 3, "network_direction": ["activated"] * 3})
    deact = pd.DataFrame({"atlas": ["smith10"], "network": ["auditory"], "atom": [8], "statistic": [-5.0],
                          "associated": [True], "role": ["counterweight"], "network_direction": ["activated"]})
    out = direction_reading(expected, {"activated": act, "deactivated": deact}, cons)
    # the partly covered Somatomotor network is not a planted network of this reading
    assert out["networks_planted"] == 2 and out["networks_declared"] == 2
    # atom 8's negative part of the activating source: opposite as tested, not as presented
    assert out["opposite_parts_tested"] == 1 and out["opposite_parts_presented"] == 0
    # Limbic, deactivated by source 1 = -atom 3, is "activated by atom 3": right in the source's terms
    assert out["networks_right_direction"] == 2
    # without the readout columns, what the tests label is what a reader sees
    plain = direction_reading(expected, {"activated": act.drop(columns=["role", "network_direction"]),
                                         "deactivated": deact.drop(columns=["role", "network_direction"])}, cons)
    assert plain["opposite_parts_presented"] == 1
    # a network presented in the other direction than planted is not right
    wrong = act.assign(network_direction=["deactivated", "activated", "activated"])
    out = direction_reading(expected, {"activated": wrong, "deactivated": deact.assign(network_direction="deactivated")},
                            cons)
    assert out["networks_right_direction"] == 1
    assert direction_reading(expected, {"activated": act, "deactivated": deact})["networks_right_direction"] is None
