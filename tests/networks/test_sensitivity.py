"""What the design could find (networks/sensitivity.py): the detectable driver R² follows the
design (more subjects or volumes: smaller; a larger FDR family, a stricter level, more power:
larger), has its limits (too few draws: nothing detectable; the effect-size rule: a floor),
and is said in the summary's words.

The fMRI is SIMULATED: networks of voxels with AR(1) noise and network fluctuations of their
own in every subject, smooth overlapping atoms.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from napari_brainorg.errors import ConfigError
from napari_brainorg.networks.sensitivity import detectable_r2, sensitivity_summary

TR = 1.5


def _atoms(n: int, k: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = gaussian_filter1d(rng.standard_normal((n, k)), 2.0, axis=0)
    return (x - x.mean(0)) / x.std(0)


def _study(n: int, n_subjects: int, seed: int = 1, n_net: int = 3, per_net: int = 40):
    """Null data: AR(1) noise plus one fluctuation course per network and subject."""
    rng = np.random.default_rng(seed)
    V = n_net * per_net + 30
    networks = np.zeros((n_net, V), bool)
    for i in range(n_net):
        networks[i, i * per_net:(i + 1) * per_net] = True
    data = []
    for _ in range(n_subjects):
        e = rng.standard_normal((n, V))
        for t in range(1, n):
            e[t] += 0.5 * e[t - 1]
        fl = gaussian_filter1d(rng.standard_normal((n, n_net)), 3.0, axis=0)
        data.append(e + 2.0 * fl @ networks.astype(float))
    return data, networks


def _r2(n=200, n_subjects=6, **kw) -> np.ndarray:
    data, networks = _study(n, n_subjects)
    opts = dict(tr=TR, n_tests=48)
    opts.update(kw)
    return detectable_r2(_atoms(n), data, networks, **opts)


@pytest.fixture(scope="module")
def base():
    return _r2()


def test_detectable_r2_is_an_r2_per_atom_and_network(base):
    assert base.shape == (8, 3)
    assert np.all(np.isfinite(base)) and np.all((base > 0) & (base < 1))


def test_more_subjects_or_volumes_detect_smaller_drivers(base):
    assert np.median(_r2(n_subjects=20)) < 0.6 * np.median(base)
    assert np.median(_r2(n=400)) < 0.75 * np.median(base)


def test_a_larger_family_a_stricter_level_or_more_power_need_larger_drivers(base):
    assert np.all(_r2(n_tests=4800) > base)
    assert np.all(_r2(alpha=0.001) > base)
    assert np.all(_r2(power=0.95) > base)
    assert np.all(_r2(power=0.5) < base)


def test_limits_too_few_draws_and_the_effect_size_rule(base):
    # 48 tests at 0.05: a single link needs p <= 0.001, which 500 draws cannot give
    assert np.all(np.isinf(_r2(n_draws=500)))
    assert np.all(np.isfinite(_r2(n_draws=5000)))
    floor = _r2(min_effect=0.5)  # a mean coefficient of at least 0.5 needs R2 >= 0.25
    assert np.all(floor >= 0.25 - 1e-12) and np.all(floor >= base)
    with pytest.raises(ConfigError, match="n_tests"):
        _r2(n_tests=0)
    with pytest.raises(ConfigError, match="power"):
        _r2(power=1.0)


def test_fixed_effects_null_gives_a_comparable_answer(base):
    joint = _r2(moved="all")
    assert np.all(np.isfinite(joint)) and 0.2 < np.median(joint) / np.median(base) < 5


def test_the_summary_says_it_in_numbers_and_words(base):
    s = sensitivity_summary(base, n_subjects=6, n_volumes=200, n_tests=48, alpha=0.05,
                            network_names=["a", "b", "c"], atlas_names=["x"] * 3)
    median = np.quantile(base, 0.5, method="nearest")  # an order statistic: inf (undetectable) may count
    assert s["median"] == pytest.approx(median, abs=1e-4)
    assert s["best"] <= s["p10"] <= s["median"] <= s["p90"]
    assert set(s["per_network"]) == {"x:a", "x:b", "x:c"}
    assert "6 subjects and 200 volumes" in s["text"] and f"{median:.3f}" in s["text"]
    nothing = sensitivity_summary(np.full((2, 2), np.inf), n_subjects=3, n_volumes=100, n_tests=8, alpha=0.05)
    assert nothing["median"] is None and "cannot declare any link" in nothing["text"]
    half = sensitivity_summary(np.array([[0.01, np.inf], [0.02, np.inf], [0.03, np.inf]]), n_subjects=3,
                               n_volumes=100, n_tests=8, alpha=0.05)
    assert half["n_undetectable"] == 3 and half["best"] == 0.01 and half["p90"] is None


def test_the_draw_budget_is_the_configured_one_not_the_draws_a_run_made():
    """A run whose floor cells the FDR declared makes no further draws; its design can
    still reach p = 1 / (1 + first + further draws), and the sensitivity says so."""
    from types import SimpleNamespace

    from napari_brainorg.pipeline.steps.networks import draw_budget

    nc = SimpleNamespace(null="phase", n_refine=90000)
    assert draw_budget({"n_permutations": 10000, "n_refine": 0, "null": "phase"}, nc) == 100000
    assert draw_budget({"n_permutations": 10000, "n_refine": 90000, "null": "phase"}, nc) == 100000
    assert draw_budget({"n_permutations": 500, "n_refine": 0, "null": "phase"},
                       SimpleNamespace(null="phase", n_refine=0)) == 500
    # circular shifts: no further draws
    assert draw_budget({"n_permutations": 200, "null": "shift"}, nc) == 200
