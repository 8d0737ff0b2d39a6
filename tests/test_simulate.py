"""Simulated fMRI: as hard as real data, the truth is what was planted, and labelled.

Each property is measured back from the simulated components or data: the tissue
dependence of the noise's autocorrelation, the HRF delays, the realised R², the
network fluctuations' independence across subjects, and that a planted source is
not a dictionary atom.
"""

from __future__ import annotations

import json
import threading

import nibabel as nib
import numpy as np
import pytest

from napari_brainorg.errors import AtlasError, CancelledError, ConfigError, ShapeError
from napari_brainorg.simulate import (
    SIMULATED_DESCRIP,
    SimulationPlan,
    _hrf_variant,
    an_mix_sources,
    distinct_sources,
    read_truth,
    resample_mask,
    simulate_fmri,
    write_simulation,
)

TR = 1.5
N_VOLUMES = 200
LINKS = {1: ["auditory"], 4: ["yeo7:Default"]}
NEGATIVE = {6: ["sensorimotor"]}


def _hrf_atoms(n_volumes: int, n_atoms: int, seed: int) -> np.ndarray:
    """Source-like time courses: white noise through a canonical HRF, unit norm."""
    from nilearn.glm.first_level import glover_hrf

    rng = np.random.default_rng(seed)
    hrf = glover_hrf(TR, oversampling=1, time_length=32.0)
    raw = rng.standard_normal((n_volumes + 40, n_atoms))
    atoms = np.stack([np.convolve(raw[:, j], hrf)[40:n_volumes + 40] for j in range(n_atoms)], axis=1)
    return atoms / np.linalg.norm(atoms, axis=0)


def _plan(**kw) -> SimulationPlan:
    base = dict(links=LINKS, negative_links=NEGATIVE, n_subjects=2, resolution_mm=6.0, seed=7,
                truth_atlases=["smith10", "yeo7"])
    base.update(kw)
    return SimulationPlan(**base)


@pytest.fixture(scope="module")
def atoms():
    return _hrf_atoms(N_VOLUMES, 8, seed=3)


@pytest.fixture(scope="module")
def sim(atoms):
    """The realistic defaults: tissue AR, varying HRFs, network fluctuations, R² 0.02-0.2."""
    return simulate_fmri(atoms, _plan(), tr=TR, keep_components=True, source_info={"kind": "test"})


def _remove_drift(y: np.ndarray) -> np.ndarray:
    """Project out the mean and the slowest cosines (what a high-pass removes)."""
    n = y.shape[0]
    t = np.arange(n)
    basis = np.stack([np.cos(np.pi * j * (t + 0.5) / n) for j in range(4)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return y - basis @ coef


def _lag1(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    return (x[1:] * x[:-1]).sum(0) / (x * x).sum(0)


def _only(sim, atlas: str, network: str) -> np.ndarray:
    """Voxels of one planted link's network and of no other planted link."""
    i = next(i for i, p in enumerate(sim.planted) if p[1] == atlas and p[2] == network)
    return sim.link_masks[i] & (sim.link_masks.sum(0) == 1)


def test_truth_is_complete(sim, atoms):
    truth = json.loads(json.dumps(sim.truth))  # JSON-ready
    assert truth["simulated"] is True and truth["sources"]["kind"] == "test"
    links = {(d["source"], d["atlas"], d["network"], d["sign"]) for d in truth["planted_links"]}
    assert links == {(1, "smith10", "auditory", 1), (4, "yeo7", "Default", 1), (6, "smith10", "sensorimotor", -1)}
    assert truth["links"] == {"1": ["smith10:auditory"], "4": ["yeo7:Default"]}
    assert truth["negative_links"] == {"6": ["smith10:sensorimotor"]}
    z = (atoms - atoms.mean(0)) / atoms.std(0)
    for a in (1, 4, 6):
        np.testing.assert_allclose(truth["sources"]["time_courses"][str(a)], z[:, a], atol=1e-5)
    expected = {(d["source"], d["atlas"], d["network"], d["sign"]) for d in truth["expected_links"]}
    assert links <= expected
    # what the planted networks mean in the other atlas: shares of that atlas' networks
    for d in truth["expected_links"]:
        assert d["share"] >= 0.3
    assert {"atlas", "network", "share", "source"} <= set(truth["network_shares"][0])
    assert truth["r2_range"] == [0.02, 0.2]
    for key in ("delay_range_s", "dispersion_range_s", "delay_s", "dispersion_s"):
        assert key in truth["hrf"]
    assert truth["noise"]["ar1_grey"] == 0.6 and truth["noise"]["ar1_other"] == 0.2
    assert truth["fluctuations"]["atlases"] == ["smith10", "yeo7"] and len(truth["fluctuations"]["networks"]) == 17
    assert truth["n_signal_voxels"] == int(sim.signal_voxels.sum())
    assert truth["grid"]["voxel_size_mm"] == [6.0, 6.0, 6.0]


def test_true_r2_is_the_variance_share_of_the_signal(sim):
    lo, hi = sim.truth["r2_range"]
    inside = sim.signal_voxels
    for s, comp in enumerate(sim.components):
        total = comp["baseline"] + comp["signal"] + comp["noise"] + comp["fluctuations"] + comp["drift"]
        np.testing.assert_allclose(sim.data[s], total, atol=2e-3)
        background = comp["noise"] + comp["fluctuations"]
        var_s, var_n = comp["signal"][:, inside].var(0), background[:, inside].var(0)
        np.testing.assert_allclose(var_s / (var_s + var_n), sim.true_r2[s, inside], rtol=1e-3)
        assert sim.true_r2[s, inside].min() >= lo - 1e-6 and sim.true_r2[s, inside].max() <= hi + 1e-6
        assert np.ptp(sim.true_r2[s, inside]) > 0.8 * (hi - lo)
        assert np.all(comp["signal"][:, ~inside] == 0) and np.all(sim.true_r2[s, ~inside] == 0)


def test_realised_r2_measured_from_the_data_lies_in_range(sim):
    """From the data (less its baseline and slow drift, which the R² leaves out): the share of
    each voxel's variance that its planted signal explains."""
    lo, hi = sim.truth["r2_range"]
    inside = sim.signal_voxels
    for s, y in enumerate(sim.data):
        comp = sim.components[s]
        y = (y - comp["baseline"] - comp["drift"])[:, inside].astype(np.float64)
        y -= y.mean(0)
        sig = comp["signal"][:, inside].astype(np.float64)
        sig -= sig.mean(0)
        r = (y * sig).sum(0) / np.sqrt((y * y).sum(0) * (sig * sig).sum(0))
        measured, true = r**2, sim.true_r2[s, inside]
        # r² of smooth series over 200 volumes is biased up by about 0.02 (the chance
        # covariance of signal and noise); the truth is the variance share itself
        assert 0 <= np.median(measured) - np.median(true) < 0.035
        assert np.mean((measured > lo - 0.06) & (measured < hi + 0.1)) > 0.9
        assert np.corrcoef(measured, true)[0, 1] > 0.5


def test_noise_autocorrelation_depends_on_tissue(sim):
    grey = sim.grey_matter
    assert (grey > 0.7).sum() > 100 and (grey < 0.1).sum() > 100
    for comp in sim.components:
        lag = _lag1(comp["noise"].astype(np.float64))
        assert abs(np.median(lag[grey > 0.9]) - 0.6) < 0.05
        assert abs(np.median(lag[grey < 0.05]) - 0.2) < 0.05
        np.testing.assert_allclose(np.median(lag[sim.ar1 > 0.55]), 0.6, atol=0.05)


def test_hrf_delays_vary_over_voxels_and_subjects(sim):
    inside = sim.signal_voxels
    d = sim.hrf_delay[:, inside]
    assert d.min() <= -1.25 and d.max() >= 1.25 and np.abs(d).max() <= 1.5
    assert sim.hrf_dispersion[:, inside].min() <= 0.25 and sim.hrf_dispersion[:, inside].max() >= 1.25
    assert 0.3 < np.corrcoef(d[0], d[1])[0, 1] < 0.95  # partly shared, not identical
    # measured: the planted signal of late voxels follows the source delayed by one TR
    src = sim.truth["sources"]["time_courses"]["1"]
    src = np.asarray(src)
    late_src, early_src = np.r_[src[0], src[:-1]], np.r_[src[1:], src[-1]]
    only = _only(sim, "smith10", "auditory")
    for s, comp in enumerate(sim.components):
        sig = comp["signal"][:, only].astype(np.float64)
        delay = sim.hrf_delay[s, only]
        gain = np.array([np.corrcoef(late_src, v)[0, 1] - np.corrcoef(early_src, v)[0, 1] for v in sig.T])
        assert gain[delay >= 1.0].min() > 0 and gain[delay <= -1.0].max() < 0
        assert np.corrcoef(gain, delay)[0, 1] > 0.9


def test_hrf_variant_is_a_delay_and_a_widening(atoms):
    z = (atoms - atoms.mean(0)) / atoms.std(0)
    shifted = _hrf_variant(z, 1.5, 0.0, TR)
    np.testing.assert_allclose(shifted[1:], z[:-1], atol=1e-12)
    wide = _hrf_variant(z, 0.0, 1.5, TR)
    assert _lag1(wide).mean() > _lag1(z).mean()


def test_deactivation_signs(sim):
    only = _only(sim, "smith10", "sensorimotor")
    src = np.asarray(sim.truth["sources"]["time_courses"]["6"])
    for comp in sim.components:
        r = [np.corrcoef(src, v)[0, 1] for v in comp["signal"][:, only].T]
        assert np.mean(np.asarray(r) < 0) > 0.95


def test_network_fluctuations_are_independent_across_subjects(sim):
    courses = sim.fluctuation_courses.astype(np.float64)  # (n_subjects, n_volumes, n_networks)
    assert courses.shape == (2, N_VOLUMES, 17)
    across = [np.corrcoef(courses[0, :, j], courses[1, :, j])[0, 1] for j in range(courses.shape[2])]
    assert np.mean(np.abs(across)) < 0.15
    f0, f1 = (c["fluctuations"].astype(np.float64) for c in sim.components)
    assert abs(np.corrcoef(f0.ravel(), f1.ravel())[0, 1]) < 0.05
    # network-structured: a network's core follows its own course, other voxels do not
    j = sim.fluctuation_names.index("smith10:default mode")
    from napari_brainorg.io.atlases import load_fbn

    smith = load_fbn("smith10", sim.mask_img).maps
    core, visual = smith[3] > 6.0, (smith[0] > 6.0) & (smith[3] < 2.3)

    def mean_abs_r(voxels):
        return np.mean([abs(np.corrcoef(courses[0, :, j], v)[0, 1]) for v in f0[:, voxels].T])

    assert mean_abs_r(core) > 0.5 and mean_abs_r(visual) < 0.15
    # spatially smooth and shared inside a network: neighbouring core voxels correlate
    assert np.corrcoef(f0[:, core][:, :40].T).mean() > 0.3


def test_the_planted_source_is_not_a_dictionary_atom(rng):
    """An AN mix lives in the atom's span of ANs but is not the atom."""
    n_volumes, n_ans, k = 150, 400, 4
    atoms = _hrf_atoms(n_volumes, k, seed=1)
    codes = np.zeros((k, n_ans))
    for a in range(k):
        members = rng.choice(n_ans, 60, replace=False)
        codes[a, members] = rng.choice([-1.0, 1.0], 60) * rng.uniform(0.3, 1.0, 60)
    ans = atoms @ codes + 0.05 * rng.standard_normal((n_volumes, n_ans))
    ans = (ans - ans.mean(0)) / ans.std(0)
    sources, info = an_mix_sources(ans, codes, [0, 2], n_members=30, seed=0)
    for j, a in enumerate((0, 2)):
        cols = np.asarray(info[j]["members"])
        assert len(cols) == 30 and set(cols) <= set(np.flatnonzero(codes[a]))
        mix = ans[:, cols] @ np.sign(codes[a, cols]) / 30
        np.testing.assert_allclose(sources[:, j], (mix - mix.mean()) / mix.std(), atol=1e-10)
        r = np.corrcoef(sources[:, j], atoms[:, a])[0, 1]
        assert 0.3 < r < 0.995  # driven by the atom, but not the atom
    with pytest.raises(ShapeError, match="no member"):
        an_mix_sources(ans, np.zeros((1, n_ans)), [0])


def test_random_an_mixes_are_sparse_signed_sums_of_random_ans(rng):
    from napari_brainorg.simulate import random_an_mix_sources

    ans = rng.standard_normal((150, 300))
    sources, info = random_an_mix_sources(ans, 5, n_members=4, seed=3)
    assert sources.shape == (150, 5)
    for j, entry in enumerate(info):
        cols, weights = np.asarray(entry["members"]), np.asarray(entry["weights"])
        assert len(set(cols)) == 4 and np.all((np.abs(weights) >= 0.5) & (np.abs(weights) <= 1.0))
        mix = ans[:, cols] @ weights
        np.testing.assert_allclose(sources[:, j], (mix - mix.mean()) / mix.std(), atol=1e-3)
    signs = np.concatenate([np.sign(e["weights"]) for e in info])
    assert (signs > 0).any() and (signs < 0).any()  # both signs are drawn
    again, _ = random_an_mix_sources(ans, 5, n_members=4, seed=3)
    assert np.array_equal(sources, again)
    with pytest.raises(ShapeError, match="n_members"):
        random_an_mix_sources(ans, 2, n_members=0)


def test_distinct_sources_avoid_near_copies(rng):
    base = _hrf_atoms(200, 3, seed=2)
    copies = np.column_stack([base, base[:, 0] + 0.05 * rng.standard_normal(200)])
    chosen = distinct_sources(copies, 3)
    assert len(chosen) == 3 and not {0, 3} <= set(chosen)


def test_out_of_network_voxels_carry_no_signal_and_null_has_none(atoms):
    plan = _plan(links={}, negative_links={}, n_subjects=1, resolution_mm=8.0)
    sim = simulate_fmri(atoms[:80], plan, tr=TR, keep_components=True)
    assert sim.signal_voxels.sum() == 0 and np.all(sim.true_r2 == 0)
    assert sim.truth["planted_links"] == [] and sim.truth["expected_links"] == []
    assert np.all(sim.components[0]["signal"] == 0)
    # noise + fluctuations have unit variance (times noise_sd) everywhere
    bg = sim.components[0]["noise"] + sim.components[0]["fluctuations"]
    assert abs(np.median(bg.std(0)) / plan.noise_sd - 1) < 0.15


def test_images_and_files_are_labelled_simulated(sim, tmp_path):
    img = sim.images[0]
    assert len(sim.images) == 2 and img.shape == sim.mask_img.shape + (N_VOLUMES,)
    assert img.header["descrip"].tobytes().rstrip(b"\0").decode() == SIMULATED_DESCRIP
    assert float(img.header.get_zooms()[3]) == TR
    paths = write_simulation(sim, tmp_path / "sim")
    names = sorted(p.name for p in paths)
    for expected in ("sub-01_sim_bold.nii.gz", "sub-02_sim_bold.nii.gz", "mask.nii.gz", "true_r2.nii.gz",
                     "truth.json", "README.txt", "planted_sources.npy", "noise_ar1.nii.gz",
                     "hrf_delay_subjects.nii.gz", "hrf_dispersion_subjects.nii.gz", "fluctuations.npy"):
        assert expected in names
    for p in paths:
        if p.name.endswith(".nii.gz"):
            assert b"SIMULATED" in nib.load(p).header["descrip"].tobytes(), p.name
    truth = json.loads((tmp_path / "sim" / "truth.json").read_text())
    assert truth["simulated"] is True and truth["files"]["bold"][0] == "sub-01_sim_bold.nii.gz"
    assert "SIMULATED" in (tmp_path / "sim" / "README.txt").read_text()
    assert read_truth(tmp_path / "sim")["links"] == {1: ["smith10:auditory"], 4: ["yeo7:Default"]}
    np.testing.assert_allclose(np.load(tmp_path / "sim" / "fluctuations.npy"), sim.fluctuation_courses)
    delay = nib.load(tmp_path / "sim" / "hrf_delay_subjects.nii.gz").get_fdata()[mask := (
        nib.load(tmp_path / "sim" / "mask.nii.gz").get_fdata() > 0)]
    np.testing.assert_allclose(delay.T, sim.hrf_delay, atol=1e-6)
    # What is on disk is the simulated data (int16 with a scale factor).
    back = nib.load(tmp_path / "sim" / "sub-01_sim_bold.nii.gz")
    mask = nib.load(tmp_path / "sim" / "mask.nii.gz").get_fdata() > 0
    np.testing.assert_allclose(back.get_fdata()[mask].T, sim.data[0], atol=float(back.dataobj.slope))
    r2 = nib.load(tmp_path / "sim" / "true_r2.nii.gz").get_fdata()[mask]
    np.testing.assert_allclose(r2, sim.true_r2.mean(0), atol=1e-6)


def test_read_truth_refuses_a_file_that_is_not_simulated(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps({"links": {}}))
    with pytest.raises(ConfigError, match="simulated"):
        read_truth(tmp_path)


def test_deterministic_for_a_seed(atoms):
    a = simulate_fmri(atoms[:40], _plan(n_subjects=1, resolution_mm=8.0), tr=TR)
    b = simulate_fmri(atoms[:40], _plan(n_subjects=1, resolution_mm=8.0), tr=TR)
    c = simulate_fmri(atoms[:40], _plan(n_subjects=1, resolution_mm=8.0, seed=8), tr=TR)
    np.testing.assert_array_equal(a.data[0], b.data[0])
    np.testing.assert_array_equal(a.true_r2, b.true_r2)
    assert not np.allclose(a.data[0], c.data[0])


def test_writing_stops_on_a_cancel_and_leaves_only_whole_files(sim, tmp_path):
    """A cancel set while the files are written: CancelledError, no half-written file (and no
    temporary one) beside the whole ones."""
    import threading

    from napari_brainorg.errors import CancelledError

    class AfterFirst:
        """Set once asked four times: both subjects' BOLD (two checks each) go through, then the cancel."""

        def __init__(self):
            self.calls, self.lock = 0, threading.Lock()

        def is_set(self):
            with self.lock:
                self.calls += 1
                return self.calls > 4

    with pytest.raises(CancelledError):
        write_simulation(sim, tmp_path / "sim", cancel=AfterFirst())
    left = sorted(p.name for p in (tmp_path / "sim").iterdir())
    assert left == ["sub-01_sim_bold.nii.gz", "sub-02_sim_bold.nii.gz"], left  # no mask, truth or temporary file
    for name in left:
        nib.load(tmp_path / "sim" / name).get_fdata()  # whole: it reads


def test_subjects_simulated_two_at_a_time_are_those_made_one_after_another(atoms, monkeypatch):
    """Each subject draws from its own generator: on two threads or one, the same subjects."""
    import napari_brainorg._backend as backend

    plan = _plan(n_subjects=3, resolution_mm=8.0)
    two = simulate_fmri(atoms[:40], plan, tr=TR)
    monkeypatch.setattr(backend, "available_cores", lambda: 1)
    one = simulate_fmri(atoms[:40], plan, tr=TR)
    for a, b in zip(two.data, one.data):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(two.true_r2, one.true_r2)
    np.testing.assert_array_equal(two.fluctuation_courses, one.fluctuation_courses)


def test_resample_mask_keeps_the_brain_in_place():
    from napari_brainorg.datasets import mni_mask_path

    mask2 = nib.load(mni_mask_path())
    mask4 = resample_mask(mask2, 4.0)
    assert mask4.shape == (46, 55, 46)
    assert np.allclose(np.diag(mask4.affine)[:3], [-4.0, 4.0, 4.0])  # LAS kept

    def centre(img):
        ijk = np.argwhere(np.asarray(img.dataobj) > 0).mean(0)
        return img.affine[:3, :3] @ ijk + img.affine[:3, 3]

    assert np.linalg.norm(centre(mask2) - centre(mask4)) < 1.0
    volume2 = (np.asarray(mask2.dataobj) > 0).sum() * 8
    volume4 = (np.asarray(mask4.dataobj) > 0).sum() * 64
    assert abs(volume4 / volume2 - 1) < 0.05


def test_progress_and_cancel(atoms):
    calls = []
    simulate_fmri(atoms[:20], _plan(n_subjects=1, resolution_mm=8.0), tr=TR,
                  progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert calls and calls[-1] == ("simulate", 20, 20) and {c[0] for c in calls} == {"simulate"}
    event = threading.Event()
    event.set()
    with pytest.raises(CancelledError):
        simulate_fmri(atoms[:20], _plan(n_subjects=1, resolution_mm=8.0), tr=TR, cancel=event)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"links": {99: ["auditory"]}}, ConfigError, r"\[99\].*8 sources"),
        ({"links": {1: ["auditry"]}}, AtlasError, "Did you mean 'auditory'"),
        ({"r2_range": (0.3, 0.1)}, ConfigError, "r2_range"),
        ({"ar1_grey": 1.0}, ConfigError, "ar1_grey"),
        ({"links": {1: ["yeo7:Defualt"]}}, AtlasError, "Did you mean 'Default'"),
        ({"negative_links": {1: ["auditory"]}}, ConfigError, "both activate and deactivate"),
        ({"subject_variability": 1.5}, ConfigError, "subject_variability"),
    ],
)
def test_bad_plans_get_clear_errors(atoms, kwargs, error, match):
    with pytest.raises(error, match=match):
        simulate_fmri(atoms[:20], _plan(n_subjects=1, resolution_mm=8.0, **kwargs), tr=TR)


def test_bad_atoms_and_tr(atoms):
    with pytest.raises(ShapeError, match="2D"):
        simulate_fmri(atoms[:, 0], _plan(resolution_mm=8.0), tr=TR)
    with pytest.raises(ConfigError, match="'tr'"):
        simulate_fmri(atoms, _plan(resolution_mm=8.0), tr=0)
    flat = atoms.copy()
    flat[:, 1] = 1.0
    with pytest.raises(ShapeError, match="constant"):
        simulate_fmri(flat, _plan(resolution_mm=8.0), tr=TR)


