"""Atom maps vs networks: formulas, the spatial null, planted truth and the null rate.

Simulated maps here are labelled as such: smooth Gaussian noise (and network masks
planted in it) on the bundled MNI mask and Yeo-7 atlas, brought to a 6 mm grid to keep
the tests fast.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from napari_brainorg.errors import CancelledError, ConfigError, ShapeError
from napari_brainorg.io.atlases import FBNAtlas, load_fbn
from napari_brainorg.io.fmri import load_mask
from napari_brainorg.networks.overlap import (
    _ShiftGeometry,
    associate_atoms,
    benjamini_hochberg,
    gpd_tail_pvalues,
    network_coverage,
    overlap_scores,
    spatial_shift_null,
    threshold_atom_maps,
    threshold_cutoffs,
)

RES = 6.0


@pytest.fixture(scope="module")
def grid():
    """The bundled MNI mask and Yeo-7 on a 6 mm LAS grid (nearest neighbour)."""
    import warnings

    from nilearn.image import resample_img

    mni = load_mask("mni")
    affine = np.diag([-RES, RES, RES, 1.0])
    affine[:3, 3] = mni.affine[:3, 3]
    shape = tuple(int(np.ceil(s * 2 / RES)) for s in mni.shape)
    mask_img = resample_img(mni, target_affine=affine, target_shape=shape, interpolation="nearest",
                            force_resample=True, copy_header=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas = load_fbn("yeo7", mask_img)
    mask = np.asarray(mask_img.dataobj) > 0
    return mask_img, mask, atlas


def smooth_noise(rng, mask, k, fwhm_mm=10.0):
    """k maps of stationary smooth Gaussian noise (simulated), z-scored inside the mask."""
    sigma = fwhm_mm / 2.3548 / RES
    out = np.empty((k, mask.sum()), np.float32)
    for i in range(k):
        v = ndimage.gaussian_filter(rng.standard_normal(mask.shape), sigma, mode="wrap")[mask]
        out[i] = (v - v.mean()) / v.std()
    return out


# --------------------------------------------------------------------------- formulas


def test_overlap_rate_and_dice_by_hand():
    parts = np.array([[1, 1, 1, 0, 0, 0, 0, 0],
                      [0, 0, 0, 0, 0, 0, 0, 0],
                      [1, 1, 1, 1, 1, 1, 1, 1]], bool)
    networks = np.array([[1, 1, 0, 0, 0, 0, 0, 0],
                         [0, 0, 1, 1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0, 0, 0, 0]], bool)
    s = overlap_scores(parts, networks)
    np.testing.assert_array_equal(s["intersection"], [[2, 1, 0], [0, 0, 0], [2, 4, 0]])
    # overlap rate |A ∩ N| / |N|: atom 0 covers all of network 0 and a quarter of network 1
    np.testing.assert_allclose(s["overlap_rate"][:, :2], [[1.0, 0.25], [0.0, 0.0], [1.0, 1.0]])
    assert np.isnan(s["overlap_rate"][:, 2]).all()  # an empty network has no rate
    # Dice 2|A ∩ N| / (|A| + |N|)
    np.testing.assert_allclose(s["dice"][0], [2 * 2 / 5, 2 * 1 / 7, 0.0])
    np.testing.assert_allclose(s["dice"][1], [0.0, 0.0, np.nan])
    np.testing.assert_allclose(s["dice"][2], [2 * 2 / 10, 2 * 4 / 12, 0.0])
    assert "correlation" not in s


def test_correlation_is_pearson_with_the_network_map(rng):
    maps = rng.standard_normal((4, 50))
    networks = rng.random((3, 50)) > 0.6
    netmaps = rng.random((3, 50)) * networks
    s = overlap_scores(maps > 0, networks, maps=maps, network_maps=netmaps)
    s_ind = overlap_scores(maps > 0, networks, maps=maps)
    for i in range(4):
        for j in range(3):
            assert s["correlation"][i, j] == pytest.approx(stats.pearsonr(maps[i], netmaps[j])[0], abs=1e-12)
            assert s_ind["correlation"][i, j] == pytest.approx(stats.pearsonr(maps[i], networks[j])[0], abs=1e-12)
    with pytest.raises(ShapeError, match="same mask"):
        overlap_scores(maps[:, :10] > 0, networks)


def test_threshold_methods(rng):
    maps = np.array([[-5.0, -3.2, -1.0, 0.0, 1.0, 3.0, 3.2, 9.0]])
    act, deact = threshold_atom_maps(maps)  # z at 3.1
    np.testing.assert_array_equal(act[0], [0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(deact[0], [1, 1, 0, 0, 0, 0, 0, 0])
    act, deact = threshold_atom_maps(maps, method="value", value=0.5)
    assert act.sum() == 4 and deact.sum() == 3
    # percentile: the 25 % of voxels with the largest |map|, split by sign
    act, deact = threshold_atom_maps(maps, method="percentile", value=25)
    np.testing.assert_array_equal(act[0] | deact[0], [1, 0, 0, 0, 0, 0, 0, 1])
    # robust z: median and MAD (scaled to sigma) of each map
    big = rng.standard_normal((2, 20000)) * np.array([[1.0], [50.0]]) + np.array([[3.0], [-100.0]])
    up, lo = threshold_cutoffs(big, method="robust_z", value=2.0)
    scale = np.array([1.0, 50.0])
    np.testing.assert_allclose((up - [3.0, -100.0]) / scale, [2.0, 2.0], atol=0.1)
    np.testing.assert_allclose((lo - [3.0, -100.0]) / scale, [-2.0, -2.0], atol=0.1)
    # a sparse map (MAD 0) falls back to the mean absolute deviation
    sparse = np.zeros((1, 1000))
    sparse[0, :10] = 4.0
    sparse[0, 10:20] = -4.0
    act, deact = threshold_atom_maps(sparse, method="robust_z", value=3.1)
    assert act.sum() == 10 and deact.sum() == 10
    assert threshold_atom_maps(np.zeros((1, 10)), method="robust_z")[0].sum() == 0
    with pytest.raises(ConfigError, match="'threshold_method' must be one of"):
        threshold_atom_maps(maps, method="fdr")
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        threshold_atom_maps(maps, method="percentile", value=150)


def test_gpd_tail_p_values_on_known_distributions(rng):
    # exponential null (a generalised Pareto with shape 0): true p = exp(-x)
    n = 2000
    draws = rng.exponential(size=(n, 500))
    top = -np.sort(-draws, axis=0)[: n // 10 + 1]
    observed = np.full(500, -np.log(2e-3))  # true p = 2e-3: about 4 of 2000 draws reach it
    p = gpd_tail_pvalues(observed, top, np.full(500, n))
    assert np.mean(np.isfinite(p)) > 0.9  # the fit passes its goodness-of-fit check
    assert 1e-3 < np.nanmedian(p) < 4e-3  # within a factor of 2 in the median
    # far beyond every draw (true p 1e-6): never below the permutation resolution
    p = gpd_tail_pvalues(np.full(500, -np.log(1e-6)), top, np.full(500, n))
    assert np.nanmin(p) == 1 / (1 + n)
    # a bounded null (uniform on [0, 1]): an observed value beyond the fitted tail's end
    # gets the permutation resolution 1 / (1 + n), not a p-value the draws cannot support
    # (regression: it used to be 1e-12)
    u = rng.random((n, 3))
    top = -np.sort(-u, axis=0)[: n // 10 + 1]
    p = gpd_tail_pvalues(np.array([1.5, 0.998, 0.5]), top, np.full(3, n))
    assert p[0] == 1 / (1 + n)
    assert 5e-4 < p[1] < 6e-3  # true p 2e-3
    assert np.isnan(p[2])  # not in the tail: keep the permutation p-value
    # a tail with too few distinct values is not fitted
    ties = np.zeros((n // 10 + 1, 1))
    ties[:2] = 1.0
    assert np.isnan(gpd_tail_pvalues(np.array([2.0]), ties, np.array([n])))[0]


def test_benjamini_hochberg_matches_scipy(rng):
    p = rng.random(200) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-12)
    with_nan = np.r_[p[:10], np.nan]
    q = benjamini_hochberg(with_nan)
    assert np.isnan(q[-1])
    np.testing.assert_allclose(q[:10], stats.false_discovery_control(p[:10]))


# --------------------------------------------------------------------------- spatial null


def test_a_single_shift_is_a_circular_roll_of_the_volume(rng):
    mask = np.zeros((9, 10, 8), bool)
    mask[2:7, 3:8, 2:6] = True
    mask[4, 2, 3] = True
    geom = _ShiftGeometry(mask)
    values = rng.standard_normal(mask.sum())
    seed = np.random.default_rng(5)
    src = geom.draw(seed, flips=False)
    # the same draw, by hand: pad the mask's box by one voxel and roll
    box = np.full(geom.shape, np.nan)
    idx = np.argwhere(mask)
    lo = idx.min(0) - 1
    box[tuple((idx - lo).T)] = values
    same = np.random.default_rng(5)
    shift = [same.integers(0, n) for n in geom.shape]
    rolled = np.roll(box, shift, axis=(0, 1, 2))
    expected = rolled[tuple((idx - lo).T)]
    got = geom.to_box(values[None], fill=np.nan)[0][src]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])


def test_shift_null_keeps_values_and_autocorrelation(grid, rng):
    mask_img, mask, _ = grid
    maps = smooth_noise(rng, mask, 2, fwhm_mm=12.0)

    def neighbour_corr(values):
        vol = np.full(mask.shape, np.nan)
        vol[mask] = values
        a, b = vol[:-1], vol[1:]
        ok = np.isfinite(a) & np.isfinite(b)
        return np.corrcoef(a[ok], b[ok])[0, 1]

    observed = neighbour_corr(maps[0])
    nulls = np.concatenate(list(spatial_shift_null(maps, mask_img, 20, random_state=1)))
    assert nulls.shape == (20, 2, mask.sum()) and np.isfinite(nulls).all()
    shuffled = rng.permutation(maps[0])
    null_corr = [neighbour_corr(n[0]) for n in nulls]
    # every null value is one of the map's own values, moved (or mirrored)
    assert np.isin(nulls[0, 0], maps[0]).all() and np.isin(nulls[:, 1], maps[1]).all()
    # smoothness is mostly kept (the mirror extension folds where the border curves,
    # and half of a moved map comes from it at this coarse grid); a shuffle loses it
    assert np.median(null_corr) > 0.7 * observed
    assert abs(neighbour_corr(shuffled)) < 0.1
    # and the null maps are not the map itself
    assert np.median([abs(np.corrcoef(n[0][np.isfinite(n[0])], maps[0][np.isfinite(n[0])])[0, 1]) for n in nulls]) < 0.3


# --------------------------------------------------------------------------- association


def test_reflect_fill_mirrors_the_map_across_the_border():
    mask = np.zeros((6, 7, 12), bool)
    mask[1:5, 1:6, 2:9] = True  # a slab: z from 2 to 8
    geom = _ShiftGeometry(mask, fill="reflect")
    box = np.arange(geom.in_mask.size).reshape(geom.shape)
    inside = geom.in_mask.reshape(geom.shape)
    zs = np.flatnonzero(inside.any(axis=(0, 1)))
    top = zs.max()
    i, j = np.argwhere(inside.any(axis=2))[0]
    # the voxel just above the slab takes the value one below its top, and so on
    assert geom.extension[box[i, j, top + 1]] == box[i, j, top - 1]
    assert geom.extension[box[i, j, zs.min() - 1]] == box[i, j, zs.min() + 1]
    assert geom.in_mask[geom.extension].all()
    assert (geom.extension[geom.box_index] == geom.box_index).all()


@pytest.mark.parametrize("fill", ["reflect", "patch", "none"])
@pytest.mark.parametrize("atlas_name", ["yeo7", "smith10"])
def test_shift_test_equals_the_direct_computation_on_the_null_maps(grid, rng, atlas_name, fill):
    """associate_atoms' fast path against scores computed plainly on spatial_shift_null's maps."""
    import warnings

    mask_img, mask, _ = grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas = load_fbn(atlas_name, mask_img)
    maps = smooth_noise(rng, mask, 5)
    maps[0] += 3.0 * atlas.masks()[1]
    networks, netmaps = atlas.masks(), atlas.network_maps()
    cut = 1.0
    nulls = np.concatenate(list(spatial_shift_null(maps, mask_img, 30, fill=fill, random_state=11)))
    assert np.isfinite(nulls).all() == (fill == "reflect")
    for part, sign in (("activated", 1.0), ("deactivated", -1.0)):
        x = sign * maps
        obs = overlap_scores(x > cut, networks, maps=x, network_maps=netmaps)
        null = {name: [] for name in ("overlap_rate", "dice", "correlation")}
        for n in sign * nulls:
            v = np.isfinite(n[0])
            sc = overlap_scores(n[:, v] > cut, networks[:, v], maps=n[:, v], network_maps=netmaps[:, v])
            for name in null:
                null[name].append(sc[name])
        for name in null:
            table = associate_atoms(maps, atlas, mask_img, part=part, threshold=cut, score=name,
                                    n_permutations=30, random_state=11, tail="none", fill=fill)
            np.testing.assert_allclose(table[name].to_numpy(), obs[name].ravel(), rtol=1e-6, atol=1e-9)
            draws = np.array(null[name])
            # a draw that leaves a network without values does not count
            p_direct = (1 + (draws >= obs[name][None] - 1e-9).sum(0)) / (1 + np.isfinite(draws).sum(0))
            np.testing.assert_allclose(table["p"].to_numpy(), p_direct.ravel(), err_msg=f"{part} {name}")


def test_planted_networks_are_found_and_only_them(grid, rng):
    mask_img, mask, atlas = grid
    member = atlas.masks()
    n_net = atlas.n_networks
    # atom i (simulated) = network i's mask × 4 + smooth noise; the last three are noise only
    planted = np.zeros((n_net + 3, mask.sum()), np.float32)
    planted[:n_net] = 4.0 * member
    maps = planted + smooth_noise(rng, mask, n_net + 3)
    # tail p-values never go below 1 / (1 + n_draws): 399 draws give 7 planted tests of 70
    # a q of 0.025
    table = associate_atoms(maps, atlas, mask_img, n_permutations=399, random_state=0)
    assoc = table.pivot(index="atom", columns="network", values="associated").loc[:, atlas.network_names]
    expected = np.zeros((n_net + 3, n_net), bool)
    expected[np.arange(n_net), np.arange(n_net)] = True
    np.testing.assert_array_equal(assoc.to_numpy(), expected)
    hits = table[table["associated"]]
    # no null draw comes near a planted overlap: the tail fit gives the permutation floor
    assert (hits["overlap_rate"] > 0.5).all() and (hits["p"] == 1 / 400).all()
    assert hits["p_method"].isin(["gpd_tail", "permutation"]).all()
    assert "q < 0.05" in table.attrs["criterion"] and "overlap_rate >= 0.1" in table.attrs["criterion"]
    assert table.attrs["n_permutations"] == 399
    assert list(table.columns) == ["atom", "network", "part", "overlap_rate", "dice", "correlation",
                                   "n_part_voxels", "n_network_voxels", "p", "p_method", "q", "associated"]
    # nothing is deactivated in a positive plant
    deact = associate_atoms(maps, atlas, mask_img, part="deactivated", n_permutations=99, random_state=0)
    assert not deact["associated"].any()
    # a negative plant is found in the deactivated part, by every score
    for score in ("overlap_rate", "dice", "correlation"):
        neg = associate_atoms(-maps[:2], atlas, mask_img, part="deactivated", score=score,
                              n_permutations=199, random_state=1)
        got = neg.pivot(index="atom", columns="network", values="associated").loc[:, atlas.network_names]
        np.testing.assert_array_equal(got.to_numpy(), expected[:2], err_msg=score)
        assert (neg.loc[neg["associated"], "correlation"] > 0.3).all()


def test_no_planted_signal_declares_at_most_the_nominal_rate(grid):
    """Smooth noise only (simulated): p-values under the null, and declared associations.

    20 draws × 8 maps × 7 networks = 1,120 tests (correlated within a draw); the
    tolerance of 0.03 is about three Monte-Carlo standard errors of a 5 % rate at that
    effective size.
    """
    mask_img, mask, atlas = grid
    rng = np.random.default_rng(12345)
    p_values, declared, n_tests = [], 0, 0
    for draw in range(20):
        maps = smooth_noise(rng, mask, 8)
        table = associate_atoms(maps, atlas, mask_img, threshold=1.5, n_permutations=199,
                                min_score=0.0, random_state=draw)
        p_values.append(table["p"].to_numpy())
        declared += int(table["associated"].sum())
        n_tests += len(table)
    p = np.concatenate(p_values)
    assert declared / n_tests <= 0.05 + 0.03
    assert np.mean(p <= 0.05) <= 0.05 + 0.03
    assert np.mean(p <= 0.01) <= 0.01 + 0.015  # where the tail fit takes over
    assert np.mean(p <= 0.2) <= 0.2 + 0.05
    # the null is not uselessly conservative either
    assert np.mean(p <= 0.2) >= 0.2 - 0.08


def test_voxel_shuffle_would_not_be_valid(grid):
    """Why the default null moves maps instead of shuffling voxels (simulated noise)."""
    mask_img, mask, atlas = grid
    rng = np.random.default_rng(7)
    maps = smooth_noise(rng, mask, 16, fwhm_mm=18.0)
    act, _ = threshold_atom_maps(maps, value=1.5)
    obs = overlap_scores(act, atlas.masks())["overlap_rate"]
    shuffled = np.stack([rng.permutation(maps.T).T for _ in range(99)])  # voxel shuffles
    table = associate_atoms(maps, atlas, mask_img, threshold=1.5, null_maps=shuffled, min_score=0.0)
    np.testing.assert_allclose(table["overlap_rate"].to_numpy(), obs.ravel())
    shift = associate_atoms(maps, atlas, mask_img, threshold=1.5, n_permutations=99, min_score=0.0, random_state=0)
    shuffle_rate, shift_rate = (table["p"] <= 0.05).mean(), (shift["p"] <= 0.05).mean()
    assert shuffle_rate >= 0.15 and shift_rate <= 0.1 and shuffle_rate > 3 * shift_rate


def test_external_null_maps_array_or_generator(grid, rng):
    mask_img, mask, atlas = grid
    maps = smooth_noise(rng, mask, 3)
    nulls = smooth_noise(rng, mask, 3 * 40).reshape(40, 3, -1)
    from_array = associate_atoms(maps, atlas, mask_img, threshold=1.0, null_maps=nulls, score="dice")
    from_gen = associate_atoms(maps, atlas, mask_img, threshold=1.0, null_maps=(n for n in nulls), score="dice")
    pd.testing.assert_frame_equal(from_array, from_gen)
    assert from_array.attrs["null"] == "maps" and from_array.attrs["n_permutations"] == 40
    # by hand: the p-value of atom 0 × network 0
    obs = overlap_scores(threshold_atom_maps(maps, value=1.0)[0], atlas.masks())["dice"]
    null = np.array([overlap_scores(threshold_atom_maps(n, value=1.0)[0], atlas.masks())["dice"] for n in nulls])
    p_hand = (1 + (null >= obs[None] - 1e-12).sum(0)) / 41
    np.testing.assert_allclose(from_array["p"].to_numpy(), p_hand.ravel())
    with pytest.raises(ShapeError, match="null_maps"):
        associate_atoms(maps, atlas, mask_img, null_maps=nulls[:, :2])


def test_progress_cancel_and_bad_arguments(grid, rng):
    mask_img, mask, atlas = grid
    maps = smooth_noise(rng, mask, 2)
    calls = []
    associate_atoms(maps, atlas, mask_img, n_permutations=30, progress=lambda *a: calls.append(a))
    assert calls[-1][1] == calls[-1][2] == 30
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        associate_atoms(maps, atlas, mask_img, n_permutations=30, cancel=stop)
    with pytest.raises(ShapeError, match="n_voxels="):
        associate_atoms(maps[:, :-1], atlas, mask_img)
    with pytest.raises(ConfigError, match="'score' must be one of"):
        associate_atoms(maps, atlas, mask_img, score="jaccard")
    with pytest.raises(ConfigError, match="'part' must be one of"):
        associate_atoms(maps, atlas, mask_img, part="both")
    other = FBNAtlas("x", ["a"], np.ones((1, 5), np.float32), "labels", np.ones((1, 4)), "x")
    with pytest.raises(ShapeError, match="same mask"):
        associate_atoms(maps, other, mask_img)
    glance = associate_atoms(maps, atlas, mask_img, n_permutations=0, min_score=0.05)
    assert glance["p"].isna().all() and glance.attrs["null"] == "none"
    np.testing.assert_array_equal(glance["associated"], glance["overlap_rate"] >= 0.05)
    assert "no permutation test" in glance.attrs["criterion"]


def test_network_coverage(grid, rng):
    mask_img, mask, atlas = grid
    member = atlas.masks()
    maps = smooth_noise(rng, mask, 4)
    maps[0] += 4.0 * member[0]
    maps[1] += 4.0 * member[0]
    maps[2] += 4.0 * member[6]
    table = associate_atoms(maps, atlas, mask_img, n_permutations=199, random_state=3)
    both = pd.concat([table.assign(model="m1"), table.assign(model="m2").iloc[:0]])
    cov = network_coverage(table)
    assert list(cov["network"]) == atlas.network_names
    by_net = cov.set_index("network")
    assert by_net.loc[atlas.network_names[0], "n_atoms"] == 2
    assert by_net.loc[atlas.network_names[0], "atoms"] == "0;1"
    assert by_net.loc[atlas.network_names[6], "n_atoms"] == 1
    assert by_net["covered"].sum() == 2
    assert set(network_coverage(both)["model"]) == {"m1"}
