"""The stimulus-null association test: exact null, calibration, power, unique contribution.

The fMRI here is SIMULATED in a few lines with a known answer: networks of voxels,
AR(1) noise whose coefficient depends on the tissue (0.6 in network, "grey-matter-like",
voxels, 0.2 elsewhere), network-structured slow fluctuations independent across
subjects, and smooth, correlated atoms.
"""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from napari_brainorg.encoding.inference import phase_randomise
from napari_brainorg.encoding.preprocessing import drift_basis
from napari_brainorg.networks.association import (
    disjoint_networks,
    family_fdr,
    follows_network,
    main_drivers,
    network_contrasts,
    stimulus_association,
)

TR = 1.5


def _ar1(rng, rho, n, v):
    rho = np.broadcast_to(np.asarray(rho, float), (v,))
    e = rng.standard_normal((n + 30, v))
    for t in range(1, n + 30):
        e[t] += rho * e[t - 1]
    return e[30:]


def make_atoms(rng, n=300, k=12):
    base = gaussian_filter1d(rng.standard_normal((n, k)), 3, axis=0)
    mix = np.eye(k) + 0.4 * rng.standard_normal((k, k)) / np.sqrt(k)  # overlapping atoms
    return base @ mix


def make_study(rng, atoms, n_subjects=8, planted=None, n_net=5, per_net=60, n_other=200, r2=0.1):
    """Subjects' fMRI (n, V) and the network masks (n_net, V)."""
    n = atoms.shape[0]
    V = n_net * per_net + n_other
    networks = np.zeros((n_net, V), bool)
    for i in range(n_net):
        networks[i, i * per_net:(i + 1) * per_net] = True
    grey = networks.any(0)
    rho = np.where(grey, 0.6, 0.2)
    data = []
    for _ in range(n_subjects):
        Y = _ar1(rng, rho, n, V)
        Y /= Y.std(0)
        fluct = _ar1(rng, 0.9, n, n_net)  # network-structured fluctuations, own per subject
        fluct /= fluct.std(0)
        weights = gaussian_filter1d(networks.astype(float), 3, axis=1) + 0.3 * networks
        Y += 0.7 * fluct @ weights
        Y += 0.5 * np.cumsum(rng.standard_normal((n, 1)), 0) / np.sqrt(n)  # a slow drift
        for atom, (net, sign) in (planted or {}).items():
            a = atoms[:, atom] - atoms[:, atom].mean()
            a /= a.std()
            amp = np.sqrt(r2 / (1 - r2)) * Y[:, networks[net]].std(0)
            Y[:, networks[net]] += sign * a[:, None] * amp
        data.append(Y.astype(np.float32))
    return data, networks


def test_network_scores_and_disjoint_networks(rng):
    nets = np.zeros((2, 10), bool)
    nets[0, :4] = True
    x = rng.standard_normal(10)
    C = network_contrasts(nets, "contrast")
    assert np.isclose(x @ C[:, 0], x[:4].mean() - x[4:].mean())
    assert np.all(C[:, 1] == 0)  # an empty network cannot be tested
    assert np.isclose(x @ network_contrasts(nets)[:, 0], x[:4].mean())
    maps = np.array([[3.0, 3.0, 1.0, 0.0], [1.0, 2.0, 2.5, 4.0]])
    np.testing.assert_array_equal(disjoint_networks(maps, maps > 0.5),
                                  [[True, True, False, False], [False, False, True, True]])


def test_null_is_the_refit_of_every_subject_under_each_shift(rng):
    """Exhaustive circular shifts: the engine's p equals the brute-force refit's p."""
    n, k = 120, 4
    atoms = make_atoms(rng, n, k)
    data, networks = make_study(rng, atoms, n_subjects=3, planted={1: (0, 1)}, n_net=3, per_net=20, n_other=40)
    table = stimulus_association(atoms, data, networks, tr=TR, null="shift", n_permutations=10_000,
                                 group_effects="fixed", highpass_cutoff=None, moved="unique")
    shifts = np.arange(n // 10, n - n // 10 + 1)
    assert table.attrs["n_permutations"] == len(shifts)
    # brute force: per subject, standardise voxels after the drift basis, contrast, and for
    # each shift move atom j's unique part against the residual of the full model
    Q = drift_basis(n, TR, None)
    Xr = atoms - Q @ (Q.T @ atoms)
    Xr /= Xr.std(0)
    C = network_contrasts(networks, "mean")
    ys = []
    for Y in data:
        R = Y - Q @ (Q.T @ Y)
        ys.append((R / R.std(0)) @ C)
    # per subject: observed r_j' y / ||r_j||; a draw (P r_j)' e / ||M P r_j||, with e the
    # full model's residual and M its residual-forming matrix (drifts and every atom)
    design = np.column_stack([Q, Xr])
    e_full = [y - design @ np.linalg.lstsq(design, y, rcond=None)[0] for y in ys]
    obs = np.zeros((k, 3))
    null = np.zeros((len(shifts), k, 3))
    for j in range(k):
        others = np.delete(Xr, j, axis=1)
        r = Xr[:, j] - others @ np.linalg.lstsq(others, Xr[:, j], rcond=None)[0]
        for y, e in zip(ys, e_full):
            obs[j] += r @ y / np.linalg.norm(r) / np.sqrt(len(ys))
            for i, s in enumerate(shifts):
                moved = np.roll(r, s)
                m = moved - design @ np.linalg.lstsq(design, moved, rcond=None)[0]
                null[i, j] += moved @ e / np.linalg.norm(m) / np.sqrt(len(ys))
    act = table[table["direction"] == "activated"]
    np.testing.assert_allclose(act["statistic"].to_numpy(), obs.ravel(), rtol=1e-8, atol=1e-10)
    p = (1 + (null >= obs - 1e-6 * np.maximum(1, abs(obs))).sum(0)) / (1 + len(shifts))
    np.testing.assert_allclose(act["p"].to_numpy(), p.ravel())
    assert set(table.columns) >= {"atom", "atlas", "network", "direction", "statistic", "p", "q",
                                  "associated", "test"}


def test_joint_null_is_the_refit_with_every_atom_shifted(rng):
    n, k = 120, 4
    atoms = make_atoms(rng, n, k)
    data, networks = make_study(rng, atoms, n_subjects=3, planted={1: (0, 1)}, n_net=3, per_net=20, n_other=40)
    table = stimulus_association(atoms, data, networks, tr=TR, null="shift", n_permutations=10_000,
                                 group_effects="fixed", highpass_cutoff=None)
    shifts = np.arange(n // 10, n - n // 10 + 1)
    Q = drift_basis(n, TR, None)
    Xr = atoms - Q @ (Q.T @ atoms)
    Xr /= Xr.std(0)
    C = network_contrasts(networks, "mean")
    ys = [((Y - Q @ (Q.T @ Y)) / (Y - Q @ (Q.T @ Y)).std(0)) @ C for Y in data]
    unique_norm = 1 / np.sqrt(np.diag(np.linalg.inv(Xr.T @ Xr)))  # ||r_j||

    def stat(design):  # Stouffer-type sum of the subjects' z-form coefficients
        return sum(np.linalg.lstsq(design, y, rcond=None)[0] * unique_norm[:, None] for y in ys) / np.sqrt(3)

    obs = stat(Xr)
    null = np.stack([stat(np.roll(Xr, s, axis=0)) for s in shifts])
    act = table[table["direction"] == "activated"]
    np.testing.assert_allclose(act["statistic"].to_numpy(), obs.ravel(), rtol=1e-8, atol=1e-10)
    p = (1 + (null >= obs - 1e-6 * np.maximum(1, abs(obs))).sum(0)) / (1 + len(shifts))
    np.testing.assert_allclose(act["p"].to_numpy(), p.ravel())


def test_conditional_null_is_the_refit_with_the_tested_atoms_unique_part_shifted(rng):
    """Random effects' default: every draw equals replacing atom j's unique part by its shifted
    copy, refitting every subject with the other atoms and drifts, and dividing the subjects'
    mean effect by the between-subject standard error of the moved regressor."""
    from napari_brainorg.encoding.inference import between_subject_spectrum

    n, k, S = 120, 4, 6
    atoms = make_atoms(rng, n, k)
    data, networks = make_study(rng, atoms, n_subjects=S, planted={1: (0, 1)}, n_net=3, per_net=20, n_other=40)
    table = stimulus_association(atoms, data, networks, tr=TR, null="shift", n_permutations=10_000)
    assert table.attrs["moved"] == "conditional" and table.attrs["group_effects"] == "random"
    shifts = np.arange(n // 10, n - n // 10 + 1)
    Q = np.linalg.qr(drift_basis(n, TR, 128.0))[0]
    Xr = atoms - Q @ (Q.T @ atoms)
    Xr /= Xr.std(0)
    C = network_contrasts(networks, "mean")
    ys = [((Y - Q @ (Q.T @ Y)) / (Y - Q @ (Q.T @ Y)).std(0)) @ C for Y in data]
    spectrum = between_subject_spectrum(np.stack(ys))
    w = np.full(n // 2 + 1, 2.0)
    w[0] = w[-1] = 1.0

    def se(u):  # between-subject standard error of the subjects' mean projection on u
        return np.sqrt((w / n * np.abs(np.fft.rfft(u)) ** 2) @ spectrum / S)

    obs = np.zeros((k, 3))
    null = np.zeros((len(shifts), k, 3))
    for j in range(k):
        others = np.column_stack([Q, np.delete(Xr, j, axis=1)])
        r = Xr[:, j] - others @ np.linalg.lstsq(others, Xr[:, j], rcond=None)[0]
        obs[j] = np.mean([r @ y for y in ys], axis=0) / se(r)
        for i, s in enumerate(shifts):
            moved_atom = Xr[:, j] - r + np.roll(r, s)  # atom j with its unique part shifted
            design = np.column_stack([others, moved_atom])
            u = moved_atom - others @ np.linalg.lstsq(others, moved_atom, rcond=None)[0]
            b = np.array([np.linalg.lstsq(design, y, rcond=None)[0][-1] for y in ys])  # (S, 3) refits
            null[i, j] = b.mean(0) * (u @ u) / se(u)
    act = table[table["direction"] == "activated"]
    np.testing.assert_allclose(act["statistic"].to_numpy(), obs.ravel(), rtol=1e-8, atol=1e-10)
    p = (1 + (null >= obs - 1e-6 * np.maximum(1, abs(obs))).sum(0)) / (1 + len(shifts))
    np.testing.assert_allclose(act["p"].to_numpy(), p.ravel())
    with pytest.raises(ValueError, match="contribution='unique'"):
        stimulus_association(atoms, data, networks, tr=TR, n_permutations=10, moved="conditional",
                             contribution="marginal")


def test_runs_are_phase_randomised_each_on_its_own(rng):
    """Two stories stacked: every draw equals turning each story's part of the tested atom's
    unique part by that story's own phases, then refitting every subject (conditional test)."""
    from napari_brainorg.encoding.inference import apply_phases, between_subject_spectrum
    from napari_brainorg.networks._association_null import NullDraws

    runs, k, S = [70, 51], 3, 6
    n = sum(runs)
    atoms = make_atoms(rng, n, k)
    data, networks = make_study(rng, atoms, n_subjects=S, planted={1: (0, 1)}, n_net=2, per_net=20, n_other=30)
    # drifts per run (a constant and a trend each), given as confounds
    drifts = np.zeros((n, 4))
    for i, (a, b) in enumerate(((0, 70), (70, n))):
        drifts[a:b, 2 * i] = 1.0
        drifts[a:b, 2 * i + 1] = np.linspace(-1, 1, b - a)
    table = stimulus_association(atoms, data, networks, tr=TR, confounds=drifts, highpass_cutoff=None,
                                 n_permutations=40, n_refine=0, sequential_h=0, runs=runs, random_state=7)
    phases = NullDraws("phase", runs, 40, random_state=7).phases(0, 40)  # draw d from the seed and d
    Q = np.linalg.qr(drifts)[0]
    Xr = atoms - Q @ (Q.T @ atoms)
    Xr /= Xr.std(0)
    C = network_contrasts(networks, "mean")
    ys = np.stack([((Y - Q @ (Q.T @ Y)) / (Y - Q @ (Q.T @ Y)).std(0)) @ C for Y in data])
    spectra = [between_subject_spectrum(ys[:, :70]), between_subject_spectrum(ys[:, 70:])]

    def se(u):
        total = 0.0
        for (a, b), P in zip(((0, 70), (70, n)), spectra):
            m = b - a
            w = np.full(m // 2 + 1, 2.0)
            w[0] = 1.0
            if m % 2 == 0:
                w[-1] = 1.0
            total = total + (w / m * np.abs(np.fft.rfft(u[a:b])) ** 2) @ P
        return np.sqrt(total / S)

    exceed = np.zeros((k, 2))
    obs = np.zeros((k, 2))
    for j in range(k):
        others = np.column_stack([Q, np.delete(Xr, j, axis=1)])
        r = Xr[:, j] - others @ np.linalg.lstsq(others, Xr[:, j], rcond=None)[0]
        obs[j] = ys.mean(0).T @ r / se(r)
        for ph in phases:
            moved_r = np.concatenate([apply_phases(r[:70, None], ph[:36])[:, 0], apply_phases(r[70:, None], ph[36:])[:, 0]])
            u = moved_r - others @ np.linalg.lstsq(others, moved_r, rcond=None)[0]
            exceed[j] += (ys.mean(0).T @ u / se(u)) >= obs[j] - 1e-6 * np.maximum(1, abs(obs[j]))
    act = table[table["direction"] == "activated"]
    np.testing.assert_allclose(act["statistic"].to_numpy(), obs.ravel(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(act["p"].to_numpy(), ((1 + exceed) / 41).ravel())
    with pytest.raises(ValueError, match="adding up"):
        stimulus_association(atoms, data, networks, tr=TR, n_permutations=5, runs=[70, 50])
    with pytest.raises(ValueError, match="null='phase'"):
        stimulus_association(atoms, data, networks, tr=TR, n_permutations=5, runs=runs, null="shift")


def test_surrogate_atoms_on_strongly_driven_networks_stay_within_fdr(rng):
    """Phase-randomised copies of 64 collinear atoms, tested on data where 7 networks are driven
    by the real atoms: ter Braak's residual draws (``moved="unique"``) miss the chance alignment
    of a random atom with the shared signal and declared 2 of these surrogates; the conditional
    randomisation test declares none, and still finds planted links with the real atoms."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from bench_association_null import declared, make_atoms as bench_atoms, make_study as bench_study

    planted = {3: (0, 1), 10: (1, -1), 20: (2, 1), 30: (3, 1), 40: (4, -1), 50: (5, 1), 60: (6, 1)}
    truth = {(a, n, "activated" if s > 0 else "deactivated") for a, (n, s) in planted.items()}
    gen = np.random.default_rng(0)
    atoms = bench_atoms(gen)
    data, networks = bench_study(gen, atoms, 8, planted=planted, r2=0.15)
    kw = dict(tr=TR, n_permutations=10_000, n_refine=90_000, random_state=0)  # the pipeline's budget
    surrogate_atoms = phase_randomise(atoms, random_state=100)
    surrogate = stimulus_association(surrogate_atoms, data, networks, **kw)
    real = stimulus_association(atoms, data, networks, **kw)
    found = declared(real)
    p = surrogate["p"].to_numpy()
    print(f"surrogates: declared {len(declared(surrogate))}, P(p <= 0.01) = {np.mean(p <= 0.01):.4f}, "
          f"P(p <= 0.002) = {np.mean(p <= 0.002):.4f}; real atoms: {len(found & truth)} of 7 planted found, "
          f"{len(found - truth)} other")
    assert surrogate.attrs["moved"] == "conditional"
    assert len(declared(surrogate)) == 0
    assert np.mean(p <= 0.002) <= 0.01
    assert len(found & truth) >= 1 and len(found - truth) <= 1


def test_null_data_and_surrogate_atoms_stay_within_fdr_and_planted_links_are_found(rng):
    atoms = make_atoms(rng)
    # null data: tissue-dependent AR noise + network fluctuations, no atom signal
    data, networks = make_study(rng, atoms)
    null_table = stimulus_association(atoms, data, networks, tr=TR, n_permutations=2000, random_state=0)
    assert null_table.attrs["group_effects"] == "random"
    n_null = int(null_table["associated"].sum())
    # planted data: atom 2 drives network 0 up, atom 5 drives network 3 down
    planted = {2: (0, 1), 5: (3, -1)}
    data, networks = make_study(rng, atoms, planted=planted)
    table = stimulus_association(atoms, data, networks, tr=TR, n_permutations=2000, random_state=1)
    hits = {(int(a), int(n), d) for a, n, d in
            table.loc[table["associated"], ["atom", "network", "direction"]].itertuples(index=False)}
    surrogate = stimulus_association(phase_randomise(atoms, random_state=2), data, networks, tr=TR,
                                     n_permutations=2000, random_state=3)
    n_surrogate = int(surrogate["associated"].sum())
    print(f"declared: null data {n_null}, surrogate atoms {n_surrogate}, planted {sorted(hits)}")
    assert n_null <= 1 and n_surrogate <= 1
    assert {(2, 0, "activated"), (5, 3, "deactivated")} <= hits
    # the network contrast of a driver lowers every other network a little: only the
    # planted pairs, in their direction, may be declared beyond one stray
    assert len(hits - {(2, 0, "activated"), (5, 3, "deactivated")}) <= 1


def test_unique_contribution_does_not_credit_a_collinear_atom(rng):
    atoms = make_atoms(rng, k=6)
    twin = 0.9 * atoms[:, 2] / atoms[:, 2].std() + 0.45 * gaussian_filter1d(rng.standard_normal(300), 3) / 0.23
    atoms = np.column_stack([atoms, twin])  # atom 6 shares most of atom 2's time course
    data, networks = make_study(rng, atoms, planted={2: (0, 1)}, r2=0.15)
    unique = stimulus_association(atoms, data, networks, tr=TR, n_permutations=2000, random_state=0,
                                  group_effects="fixed")
    marginal = stimulus_association(atoms, data, networks, tr=TR, n_permutations=2000, random_state=0,
                                    group_effects="fixed", contribution="marginal")

    def declared(t):
        return {(int(a), int(n)) for a, n in t.loc[t["associated"] & (t["direction"] == "activated"),
                                                   ["atom", "network"]].itertuples(index=False)}

    assert (2, 0) in declared(unique) and (6, 0) not in declared(unique)
    assert (6, 0) in declared(marginal)  # what the unique contribution prevents


def test_resemblance_rule_drops_a_suppressor_and_keeps_the_driver(rng):
    """A network driven by a time course made of two atoms, one of which does not follow it.

    The driver is ``x0 - c x1`` with ``c`` chosen so that ``x1`` is uncorrelated with it:
    ``x1``'s unique contribution is real (the test declares it, deactivated), but a
    neuroscientist reading "atom 1 is linked to network 0" would look for network 0 in
    atom 1's time course and not find it. The rule keeps the atom that follows the network.
    """
    atoms = make_atoms(rng, k=6)
    x = (atoms - atoms.mean(0)) / atoms.std(0)
    x1 = 0.7 * x[:, 0] + 0.7 * x[:, 1]  # atom 1 shares half its variance with atom 0
    atoms = np.column_stack([x[:, 0], x1 / x1.std(), x[:, 2:]])
    c = (atoms[:, 0] @ atoms[:, 1]) / (atoms[:, 1] @ atoms[:, 1])
    driver = atoms[:, 0] - c * atoms[:, 1]  # orthogonal to atom 1: its marginal r is 0
    data, networks = make_study(rng, np.column_stack([atoms, driver]), planted={6: (0, 1)}, r2=0.3)
    kwargs = dict(tr=TR, n_permutations=2000, n_refine=0, random_state=0, highpass_cutoff=None)
    plain = stimulus_association(atoms, data, networks, **kwargs)
    ruled = stimulus_association(atoms, data, networks, min_network_relative_marginal=0.5, **kwargs)

    def declared(t):
        rows = t.loc[t["associated"] & (t["network"] == "0"), ["atom", "direction"]]
        return {(int(a), d) for a, d in rows.itertuples(index=False)}

    assert {(0, "activated"), (1, "deactivated")} <= declared(plain)
    assert declared(ruled) == {(0, "activated")}
    marginal = ruled.set_index(["atom", "network", "direction"])["marginal"]
    assert marginal[(0, "0", "activated")] > 0.4 and abs(marginal[(1, "0", "activated")]) < 0.15
    # the rule only removes declarations, and keeps p and q
    np.testing.assert_array_equal(ruled["p"], plain["p"])
    assert not (ruled["associated"] & ~plain["associated"]).any()
    assert "the atom's correlation with the network's mean time series" in ruled.attrs["criterion"]


def test_follows_network_needs_the_sign_and_a_share_of_the_best_atoms_correlation():
    import pandas as pd

    t = pd.DataFrame({"atom": [0, 1, 2, 0, 1, 2], "atlas": "a", "network": "x",
                      "direction": ["activated"] * 3 + ["deactivated"] * 3,
                      "marginal": [0.6, -0.4, 0.2, 0.6, -0.4, 0.2]})
    # peak |r| 0.6: atom 0 (0.6) and atom 1 (-0.4 >= 0.3) reach half of it, atom 2 (0.2) does not;
    # each only in the direction of its sign
    np.testing.assert_array_equal(follows_network(t, 0.5), [True, False, False, False, True, False])
    np.testing.assert_array_equal(follows_network(t, 0.0), [True, False, True, False, True, False])


def test_family_fdr_corrects_every_model_together_per_atlas(rng):
    import pandas as pd
    from scipy.stats import false_discovery_control

    def table(n):
        return pd.DataFrame({"atom": np.arange(n), "atlas": np.where(np.arange(n) % 3 == 0, "yeo7", "smith10"),
                             "network": "n", "p": rng.uniform(0, 0.02, n), "q": 0.0,
                             "effect_ok": np.arange(n) % 5 != 0})

    tables = {"a": [table(40), table(40)], "b": table(30)}
    out = family_fdr(tables, alpha=0.05)
    for atlas in ("smith10", "yeo7"):
        frames = [*out["a"], out["b"]]
        p = np.concatenate([f.loc[f["atlas"] == atlas, "p"].to_numpy() for f in frames])
        q = np.concatenate([f.loc[f["atlas"] == atlas, "q"].to_numpy() for f in frames])
        np.testing.assert_allclose(q, false_discovery_control(p))  # one family: every model's tests of the atlas
    for f in (*out["a"], out["b"]):
        assert (f["q_model"] == 0.0).all()  # each model's own q is kept
        np.testing.assert_array_equal(f["associated"], (f["q"] < 0.05) & f["effect_ok"])
    alone = family_fdr({"b": tables["b"]})["b"]  # one model: its own family
    for atlas in ("smith10", "yeo7"):
        here = alone["atlas"] == atlas
        np.testing.assert_allclose(alone.loc[here, "q"], false_discovery_control(tables["b"].loc[here, "p"]))
    with pytest.raises(ValueError, match="lacks columns"):
        family_fdr({"a": tables["b"].drop(columns="effect_ok")})


def test_main_drivers_keep_the_strong_declarations_of_each_network():
    import pandas as pd

    t = pd.DataFrame({"atom": [0, 1, 2, 0, 1, 3], "atlas": ["a"] * 3 + ["b"] * 3,
                      "network": ["x", "x", "x", "x", "x", "y"], "effect": [0.30, -0.20, 0.10, 0.05, 0.5, 0.01],
                      "associated": [True, True, True, True, False, True]})
    # network a:x: 0.30 is the peak, 0.20 passes half of it, 0.10 does not; b:x: the
    # undeclared 0.5 does not count, so 0.05 is its own peak; b:y alone keeps its 0.01
    np.testing.assert_array_equal(main_drivers(t, 0.5), [True, True, False, True, False, True])
    np.testing.assert_array_equal(main_drivers(t, 0.0), t["associated"])


def test_bad_input_is_named():
    atoms = np.random.default_rng(0).standard_normal((50, 3))
    with pytest.raises(ValueError, match="subject 0: fMRI of shape"):
        stimulus_association(atoms, [np.zeros((40, 10))], np.ones((1, 10), bool), tr=TR)
    with pytest.raises(ValueError, match="'null' must be one of"):
        stimulus_association(atoms, [np.zeros((50, 10))], np.ones((1, 10), bool), tr=TR, null="spatial")


def test_cells_at_the_floor_get_more_draws_and_keep_the_other_p(rng):
    """Two-stage p: only cells that no first draw reached are drawn again, over every draw."""
    atoms = make_atoms(rng, n=200, k=6)
    data, networks = make_study(rng, atoms, n_subjects=6, planted={2: (0, 1)}, n_net=3, per_net=40,
                                n_other=80, r2=0.3)
    kw = dict(tr=TR, n_permutations=99, random_state=0, sequential_h=0)  # the fixed-budget test
    first = stimulus_association(atoms, data, networks, n_refine=0, **kw)
    both = stimulus_association(atoms, data, networks, n_refine=900, **kw)
    assert first.attrs["n_refine"] == 0 and both.attrs["n_refine"] == 900
    cell = (first["atom"] == 2) & (first["network"].astype(str) == "0") & (first["direction"] == "activated")
    assert first.loc[cell, "p"].item() == pytest.approx(1 / 100)
    assert both.loc[cell, "p"].item() == pytest.approx(1 / 1000)  # no draw of the 999 reaches the planted link
    above = first["p"] > 1 / 100 + 1e-12
    np.testing.assert_array_equal(both.loc[above, "p"], first.loc[above, "p"])  # the same first draws
    floor = ~above
    counts = both.loc[floor, "p"].to_numpy() * 1000
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)  # (1 + #null >= observed) / (1 + 999)
    assert np.all(both.loc[floor, "p"] <= 1 / 100 + 1e-12)
    assert "over 999 draws" in both.attrs["criterion"]


def test_two_stage_p_is_calibrated_on_null_data(rng):
    """Null data (tissue AR, network fluctuations): refined p stay uniform, P(p <= a) <= a."""
    atoms = make_atoms(rng, n=200, k=8)
    ps = []
    for seed in range(12):
        data, networks = make_study(rng, atoms, n_subjects=6, n_net=5, per_net=30, n_other=60)
        table = stimulus_association(atoms, data, networks, tr=TR, n_permutations=19, n_refine=180,
                                     random_state=seed)
        ps.append(table["p"].to_numpy())
    p = np.concatenate(ps)  # 12 x 8 atoms x 5 networks x 2 directions = 960 p (floor 1/20 before refining)
    print(f"two-stage null p: P(p <= 0.05) = {np.mean(p <= 0.05):.3f}, P(p <= 0.02) = {np.mean(p <= 0.02):.3f}, "
          f"refined {np.mean(p < 0.05 - 1e-9):.3f}")
    assert np.mean(p <= 0.05) <= 0.07
    assert np.mean(p <= 0.02) <= 0.035
    assert np.mean(p < 0.05 - 1e-9) > 0  # some cells were refined below the first floor


def _sequential_study(rng):
    """6 atoms, 3 networks, atom 2 drives network 0 (the planted link)."""
    atoms = make_atoms(rng, n=200, k=6)
    data, networks = make_study(rng, atoms, n_subjects=6, planted={2: (0, 1)}, n_net=3, per_net=40,
                                n_other=80, r2=0.3)
    return atoms, data, networks


def _cell(table, atom, network, direction):
    return (table["atom"] == atom) & (table["network"].astype(str) == str(network)) & (table["direction"] == direction)


def test_sequential_p_stops_a_null_cell_early_and_equals_the_fixed_p_where_it_draws_everything(rng):
    """Besag & Clifford: a cell stops at its h-th exceedance with p = h / n; a cell that never
    reaches h makes every draw and gets the fixed-budget p, on the same draws."""
    atoms, data, networks = _sequential_study(rng)
    kw = dict(tr=TR, n_permutations=2000, n_refine=0, random_state=3)
    fixed = stimulus_association(atoms, data, networks, sequential_h=0, **kw)
    seq = stimulus_association(atoms, data, networks, sequential_h=10, **kw)
    assert (fixed["n_draws"] == 2000).all()
    full = (seq["n_draws"] == 2000).to_numpy()
    assert full.any() and (~full).any()
    np.testing.assert_array_equal(seq.loc[full, "p"], fixed.loc[full, "p"])
    stopped = seq[~full]
    np.testing.assert_allclose(stopped["p"], 10 / stopped["n_draws"])
    # a clearly null cell (fixed p near 1/2 and above) stops after a few dozen draws
    null_cells = (fixed["p"] > 0.4).to_numpy()
    assert null_cells.sum() >= 3 and seq.loc[null_cells, "n_draws"].max() <= 200
    assert seq.attrs["n_draws"] < 0.25 * fixed.attrs["n_draws"]
    # the stop is at the exact draw of the 10th exceedance: 10 in its first n draws, 9 in n - 1
    row = stopped.iloc[int(np.argmax(stopped["n_draws"].to_numpy()))]
    n = int(row["n_draws"])
    cell = _cell(fixed, row["atom"], row["network"], row["direction"])
    for n_first, count in ((n, 10), (n - 1, 9)):
        t = stimulus_association(atoms, data, networks, sequential_h=0, **{**kw, "n_permutations": n_first})
        assert t.loc[cell, "p"].item() == pytest.approx((1 + count) / (1 + n_first))


def test_sequential_test_declares_a_planted_link_and_draws_further_only_where_the_decision_is_open(rng):
    """The planted link sits at the floor of the first draws: declared there, it gets no further
    draws; counted in a family 10^4 times larger, it is not declared at the floor and draws on."""
    atoms, data, networks = _sequential_study(rng)
    kw = dict(tr=TR, n_permutations=999, n_refine=9000, random_state=0)
    table = stimulus_association(atoms, data, networks, **kw)
    planted = _cell(table, 2, 0, "activated")
    assert table.loc[planted, "associated"].item()
    assert table.loc[planted, "p"].item() == pytest.approx(1 / 1000)
    assert table.loc[planted, "n_draws"].item() == 999
    assert table["n_draws"].median() < 300  # the null cells stop early
    wide = stimulus_association(atoms, data, networks, fdr_models=10_000, **kw)
    assert wide.loc[planted, "n_draws"].item() == 9999
    assert wide.loc[planted, "p"].item() == pytest.approx(1 / 10_000)  # no draw of the 9999 reaches it
    fixed = stimulus_association(atoms, data, networks, sequential_h=0, **kw)
    assert fixed.loc[planted, "p"].item() == pytest.approx(1 / 10_000)
    assert fixed.loc[planted, "associated"].item()
    np.testing.assert_array_equal(table["associated"], fixed["associated"])


def test_sequential_p_depends_on_the_seed_only(rng):
    """The same seed gives the same p whatever the batch size (draw d comes from the seed and d);
    another seed gives other draws."""
    atoms, data, networks = _sequential_study(rng)
    kw = dict(tr=TR, n_permutations=3000, n_refine=3000, random_state=11)
    ref = stimulus_association(atoms, data, networks, batch_size=256, **kw)
    for batch_size in (37, 1000):
        again = stimulus_association(atoms, data, networks, batch_size=batch_size, **kw)
        np.testing.assert_array_equal(again["p"], ref["p"])
        np.testing.assert_array_equal(again["n_draws"], ref["n_draws"])
    other = stimulus_association(atoms, data, networks, **{**kw, "random_state": 12})
    assert not np.array_equal(other["p"], ref["p"])


def test_sequential_test_is_cancelled_between_batches_and_reports_progress(rng):
    from napari_brainorg.errors import CancelledError

    atoms, data, networks = _sequential_study(rng)
    stages = []

    class Token:
        def is_set(self):
            return any(stage.startswith("networks: stimulus null") and done > 0 for stage, done, _ in stages)

    with pytest.raises(CancelledError):
        stimulus_association(atoms, data, networks, tr=TR, n_permutations=5000, batch_size=100,
                             progress=lambda *a: stages.append(a), cancel=Token())
    draws = [done for stage, done, _ in stages if stage.startswith("networks: stimulus null")]
    assert draws == [0, 100]  # stopped at the first batch boundary after the token was set
    with pytest.raises(ValueError, match="'sequential_h' must be an integer >= 0"):
        stimulus_association(atoms, data, networks, tr=TR, sequential_h=-1)
