"""Simulated fMRI: the truth is what was planted, at the stated strength, and labelled."""

from __future__ import annotations

import json
import threading
import warnings

import nibabel as nib
import numpy as np
import pytest

from napari_brainorg.errors import AtlasError, CancelledError, ConfigError, ResamplingWarning, ShapeError
from napari_brainorg.io.atlases import load_fbn
from napari_brainorg.simulate import (
    SIMULATED_DESCRIP,
    SimulationPlan,
    read_truth,
    resample_mask,
    simulate_fmri,
    write_simulation,
)

TR = 1.5
N_VOLUMES = 200
LINKS = {1: ["auditory"], 4: ["default mode"]}
NEGATIVE = {6: ["sensorimotor"]}
UNLINKED = [0, 2, 3, 5, 7]


def _hrf_atoms(n_volumes: int, n_atoms: int, seed: int) -> np.ndarray:
    """Atom-like time courses: white noise through a canonical HRF, unit norm."""
    from nilearn.glm.first_level import glover_hrf

    rng = np.random.default_rng(seed)
    hrf = glover_hrf(TR, oversampling=1, time_length=32.0)
    raw = rng.standard_normal((n_volumes + 40, n_atoms))
    atoms = np.stack([np.convolve(raw[:, j], hrf)[40:n_volumes + 40] for j in range(n_atoms)], axis=1)
    return atoms / np.linalg.norm(atoms, axis=0)


def _plan(**kw) -> SimulationPlan:
    base = dict(links=LINKS, negative_links=NEGATIVE, n_subjects=2, resolution_mm=6.0, seed=7)
    base.update(kw)
    return SimulationPlan(**base)


@pytest.fixture(scope="module")
def atoms():
    return _hrf_atoms(N_VOLUMES, 8, seed=3)


@pytest.fixture(scope="module")
def sim(atoms):
    return simulate_fmri(atoms, _plan(), tr=TR, keep_components=True)


def _remove_drift(y: np.ndarray) -> np.ndarray:
    """Project out the mean and the slowest cosines (what a high-pass removes)."""
    n = y.shape[0]
    t = np.arange(n)
    basis = np.stack([np.cos(np.pi * j * (t + 0.5) / n) for j in range(4)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return y - basis @ coef


def _ols_r2(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = _remove_drift(design)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return 1.0 - (resid**2).sum(0) / (y**2).sum(0)


def test_truth_is_what_was_planted(sim):
    truth = sim.truth
    assert truth["simulated"] is True
    assert truth["links"] == {"1": ["auditory"], "4": ["default mode"]}
    assert truth["negative_links"] == {"6": ["sensorimotor"]}
    assert truth["r2_range"] == [0.05, 0.2]
    assert truth["seed"] == 7 and truth["n_subjects"] == 2 and sim.subjects == ["sub-01", "sub-02"]
    # The planted networks are the atlas's own networks on the simulation grid.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResamplingWarning)  # 2 mm template onto the 6 mm grid
        fbn = load_fbn("smith10", sim.mask_img)
    expected = {n: fbn.masks()[fbn.network_names.index(n)] for n in ("auditory", "default mode", "sensorimotor")}
    for name, mask in expected.items():
        assert truth["networks"][name]["n_voxels"] == int(mask.sum()) > 50
    np.testing.assert_array_equal(sim.signal_voxels, np.any(list(expected.values()), axis=0))
    assert truth["n_signal_voxels"] == int(sim.signal_voxels.sum())
    assert truth["grid"]["voxel_size_mm"] == [6.0, 6.0, 6.0]


def test_true_r2_is_the_variance_share_of_the_signal(sim):
    lo, hi = sim.truth["r2_range"]
    for s, comp in enumerate(sim.components):
        sig, noise = comp["signal"], comp["noise"]
        np.testing.assert_allclose(sim.data[s], comp["baseline"] + sig + noise + comp["drift"], atol=2e-3)
        inside = sim.signal_voxels
        var_s, var_n = sig[:, inside].var(0), noise[:, inside].var(0)
        np.testing.assert_allclose(var_s / (var_s + var_n), sim.true_r2[s, inside], rtol=1e-3)
        assert sim.true_r2[s, inside].min() >= lo - 1e-6 and sim.true_r2[s, inside].max() <= hi + 1e-6
        # Uniform over the range: the targets fill it rather than sitting in one spot.
        assert np.ptp(sim.true_r2[s, inside]) > 0.5 * (hi - lo)
        assert np.all(sig[:, ~inside] == 0) and np.all(sim.true_r2[s, ~inside] == 0)


def test_measured_r2_of_the_planted_signal_lies_in_range(sim, atoms):
    """From the data alone: regress each voxel on its planted atoms after a high-pass."""
    lo, hi = sim.truth["r2_range"]
    names = sim.network_names
    for s, y in enumerate(sim.data):
        y = _remove_drift(y.astype(np.float64))
        for atom, network in ((1, "auditory"), (4, "default mode"), (6, "sensorimotor")):
            only = sim.network_masks[names.index(network)] & (sim.network_masks.sum(0) == 1)
            measured = _ols_r2(atoms[:, [atom]], y[:, only])
            true = sim.true_r2[s, only]
            # Sampling error of one voxel's R² at 200 volumes is about 0.05; over
            # hundreds of voxels the centre and the range must match the truth.
            assert abs(np.median(measured) - np.median(true)) < 0.02, network
            assert np.mean((measured > lo - 0.08) & (measured < hi + 0.1)) > 0.9, network
            assert np.corrcoef(measured, true)[0, 1] > 0.3, network
        # Deactivation: the voxel follows the negative of its atom.
        sm = sim.network_masks[names.index("sensorimotor")] & (sim.network_masks.sum(0) == 1)
        r = np.corrcoef(np.column_stack([atoms[:, 6], y[:, sm]]).T)[0, 1:]
        assert np.mean(r < 0) > 0.95


def test_out_of_network_voxels_carry_no_signal(sim, atoms):
    outside = ~sim.signal_voxels
    planted = [1, 4, 6]
    for y in sim.data:
        y = _remove_drift(y[:, outside].astype(np.float64))
        y /= np.linalg.norm(y, axis=0)
        a = _remove_drift(atoms)
        a /= np.linalg.norm(a, axis=0)
        r = a.T @ y  # (n_atoms, n_outside)
        assert np.all(np.abs(r[planted].mean(axis=1)) < 0.02)
        # The planted atoms explain no more out-of-network variance than atoms that
        # were never planted (the null of temporally smooth regressors).
        r2_planted, r2_unplanted = (r[planted] ** 2).mean(), (r[UNLINKED] ** 2).mean()
        assert r2_planted < 1.3 * r2_unplanted
        inside = _remove_drift(sim.data[0][:, sim.signal_voxels].astype(np.float64))
        inside /= np.linalg.norm(inside, axis=0)
        assert ((a[:, planted].T @ inside) ** 2).max(axis=0).mean() > 3 * r2_planted


def test_subjects_differ_but_share_the_pattern(sim):
    r2a, r2b = sim.true_r2[:, sim.signal_voxels]
    assert 0.5 < np.corrcoef(r2a, r2b)[0, 1] < 0.99
    na, nb = (c["noise"][:, sim.signal_voxels].ravel() for c in sim.components)
    assert abs(np.corrcoef(na, nb)[0, 1]) < 0.02


def test_noise_is_ar1_in_time_and_smooth_in_space(atoms):
    """A null simulation (nothing planted): estimate φ and the FWHM back from the noise."""
    plan = SimulationPlan(links={}, n_subjects=1, resolution_mm=4.0, noise_ar1=0.5,
                          smoothness_fwhm_mm=10.0, drift_sd=0.0, seed=1)
    sim = simulate_fmri(atoms[:60], plan, tr=TR, keep_components=True)
    assert sim.signal_voxels.sum() == 0 and np.all(sim.true_r2 == 0)
    assert sim.truth["links"] == {} and sim.truth["n_signal_voxels"] == 0
    noise = sim.components[0]["noise"].astype(np.float64)
    assert abs(noise.std() / plan.noise_sd - 1.0) < 0.05
    lag1 = np.mean(noise[1:] * noise[:-1]) / np.mean(noise * noise)
    assert abs(lag1 - 0.5) < 0.05
    # Neighbour correlation along x of a Gaussian-smoothed field: exp(-d² / 4σ²).
    vol = np.zeros(sim.mask_img.shape + (noise.shape[0],))
    mask = np.asarray(sim.mask_img.dataobj) > 0
    vol[mask] = noise.T
    both = mask[1:] & mask[:-1]
    rho = np.mean(vol[1:][both] * vol[:-1][both]) / np.mean(vol[mask] ** 2)
    sigma_vox = 1.0 / np.sqrt(-4.0 * np.log(rho))
    fwhm_mm = sigma_vox * 4.0 * 2.0 * np.sqrt(2.0 * np.log(2.0))
    assert abs(fwhm_mm - 10.0) < 1.5


def test_images_and_files_are_labelled_simulated(sim, tmp_path):
    img = sim.images[0]
    assert len(sim.images) == 2 and img.shape == sim.mask_img.shape + (N_VOLUMES,)
    assert img.header["descrip"].tobytes().rstrip(b"\0").decode() == SIMULATED_DESCRIP
    assert float(img.header.get_zooms()[3]) == TR
    paths = write_simulation(sim, tmp_path / "sim")
    names = sorted(p.name for p in paths)
    for expected in ("sub-01_sim_bold.nii.gz", "sub-02_sim_bold.nii.gz", "mask.nii.gz", "true_r2.nii.gz",
                     "truth.json", "README.txt", "planted_atoms.npy"):
        assert expected in names
    for p in paths:
        if p.name.endswith(".nii.gz"):
            assert b"SIMULATED" in nib.load(p).header["descrip"].tobytes(), p.name
    truth = json.loads((tmp_path / "sim" / "truth.json").read_text())
    assert truth["simulated"] is True and truth["files"]["bold"][0] == "sub-01_sim_bold.nii.gz"
    assert "SIMULATED" in (tmp_path / "sim" / "README.txt").read_text()
    assert read_truth(tmp_path / "sim")["links"] == {1: ["auditory"], 4: ["default mode"]}
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
        ({"links": {99: ["auditory"]}}, ConfigError, r"\[99\].*8 atoms"),
        ({"links": {1: ["auditry"]}}, AtlasError, "Did you mean 'auditory'"),
        ({"r2_range": (0.3, 0.1)}, ConfigError, "r2_range"),
        ({"noise_ar1": 1.0}, ConfigError, "noise_ar1"),
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
