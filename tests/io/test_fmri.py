"""fMRI inputs: tiny 4D NIfTI fixtures built here, one per kind of bad input."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from napari_brainorg.errors import FMRIInputError, ResamplingWarning, ShapeError
from napari_brainorg.io.fmri import (
    DroppedVoxelsWarning,
    TRMismatchWarning,
    find_bids_runs,
    load_fmri,
    load_mask,
    load_region_timeseries,
)

SHAPE = (10, 12, 9)
# LAS like the FSL MNI152 grid: x runs from right to left.
LAS = np.array([[-3.0, 0, 0, 15.0], [0, 3.0, 0, -20.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])


def _mask_img(affine=LAS, shape=SHAPE):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    return nib.Nifti1Image(mask, affine)


def _run(rng, n_volumes=20, affine=LAS, shape=SHAPE, tr=1.5):
    data = rng.standard_normal(shape + (n_volumes,)).astype(np.float32) + 100.0
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms(tuple(np.sqrt((affine[:3, :3] ** 2).sum(0))) + (tr,))
    return img


def _save(img, path):
    nib.save(img, str(path))
    return str(path)


def _ras_version(data, affine):
    """The same voxels with x flipped to RAS (affine and array both flipped)."""
    flip = np.eye(4)
    flip[0, 0] = -1
    flip[0, 3] = data.shape[0] - 1
    return np.ascontiguousarray(data[::-1]), affine @ flip


def test_voxels_are_the_masked_time_series_and_unmask_inverts(rng, tmp_path):
    from nilearn.maskers import NiftiMasker

    mask = _mask_img()
    runs = [_run(rng, n_volumes=45), _run(rng, n_volumes=45)]  # more than one chunk of volumes
    paths = [_save(r, tmp_path / f"sub-0{i + 1}_task-x_bold.nii.gz") for i, r in enumerate(runs)]
    _save(mask, tmp_path / "mask.nii.gz")
    data = load_fmri(paths, mask=str(tmp_path / "mask.nii.gz"), n_volumes=45)
    m = np.asarray(mask.dataobj) > 0
    assert data.kind == "voxels" and data.subjects == ["sub-01", "sub-02"]
    assert data.tr == pytest.approx(1.5)
    for run, ts in zip(runs, data.data):
        assert ts.dtype == np.float32 and ts.shape == (45, m.sum())
        np.testing.assert_array_equal(ts, np.asarray(run.dataobj)[m].T)
    # one map -> 3D, several -> 4D, both on the mask grid and in nilearn's voxel order
    values = rng.standard_normal((3, m.sum())).astype(np.float32)
    img4 = data.unmask(values)
    assert img4.shape == SHAPE + (3,) and np.allclose(img4.affine, LAS)
    np.testing.assert_array_equal(np.asarray(img4.dataobj)[m].T, values)
    masker = NiftiMasker(mask_img=mask).fit()
    np.testing.assert_array_equal(np.asarray(masker.inverse_transform(values).dataobj), np.asarray(img4.dataobj))
    assert data.unmask(values[0]).shape == SHAPE
    with pytest.raises(ShapeError, match="n_voxels"):
        data.unmask(values[:, :-1])


def test_standardize_gives_unit_variance(rng):
    data = load_fmri([_run(rng)], mask=_mask_img(), standardize=True)
    ts = data.data[0]
    np.testing.assert_allclose(ts.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(ts.std(0), 1, atol=1e-4)
    assert any("z-scored" in n for n in data.notes)


def test_3d_image_is_an_error_naming_the_file(rng, tmp_path):
    img = nib.Nifti1Image(rng.standard_normal(SHAPE).astype(np.float32), LAS)
    path = _save(img, tmp_path / "sub-01_T1w.nii.gz")
    expected = r"sub-01_T1w\.nii\.gz is a 3D image \(shape \(10, 12, 9\)\); expected a 4D"
    with pytest.raises(FMRIInputError, match=expected):
        load_fmri(path, mask=_mask_img())


def test_volume_count_that_does_not_match_the_story(rng, tmp_path):
    path = _save(_run(rng, n_volumes=280), tmp_path / "sub-01_bold.nii.gz")
    with pytest.raises(FMRIInputError) as err:
        load_fmri(path, mask=_mask_img(), n_volumes=300)
    assert str(err.value) == "sub-01_bold.nii.gz has 280 volumes; the story needs 300 (--n-volumes)."


def test_runs_with_different_volume_counts(rng):
    with pytest.raises(FMRIInputError, match="different numbers of volumes"):
        load_fmri([_run(rng, 20), _run(rng, 21)], mask=_mask_img())


def test_nan_voxels_error_or_documented_drop(rng, tmp_path):
    run = _run(rng)
    data = np.asarray(run.dataobj).copy()
    data[4, 5, 4, 3] = np.nan
    data[5, 5, 4, :] = np.nan
    data[0, 0, 0, :] = np.nan  # outside the mask: harmless
    path = _save(nib.Nifti1Image(data, LAS), tmp_path / "sub-01_bold.nii.gz")
    mask = _mask_img()
    expected = r"sub-01_bold\.nii\.gz has NaN or infinite values in 2 voxels inside the mask.*on_nan='drop'"
    with pytest.raises(FMRIInputError, match=expected):
        load_fmri(path, mask=mask)
    with pytest.warns(DroppedVoxelsWarning, match="2 of"):
        out = load_fmri(path, mask=mask, on_nan="drop")
    m = np.asarray(mask.dataobj) > 0
    assert out.data[0].shape[1] == m.sum() - 2 and np.isfinite(out.data[0]).all()
    kept = np.asarray(out.mask_img.dataobj) > 0
    assert not kept[4, 5, 4] and not kept[5, 5, 4] and kept.sum() == m.sum() - 2
    np.testing.assert_array_equal(out.data[0], data[kept].T)
    assert any("NaN" in n for n in out.notes)


def test_constant_voxels_leave_the_mask_for_every_subject_with_a_warning(rng):
    a, b = _run(rng), _run(rng)
    db = np.asarray(b.dataobj).copy()
    db[3, 3, 3, :] = 7.0  # constant in subject 2 only
    db[6, 7, 5, :] = 0.0
    b = nib.Nifti1Image(db, LAS)
    with pytest.warns(DroppedVoxelsWarning, match="2 of .* constant"):
        out = load_fmri([a, b], mask=_mask_img(), subjects=["s1", "s2"])
    kept = np.asarray(out.mask_img.dataobj) > 0
    assert not kept[3, 3, 3] and not kept[6, 7, 5]
    assert out.data[0].shape == out.data[1].shape == (20, kept.sum())
    np.testing.assert_array_equal(out.data[0], np.asarray(a.dataobj)[kept].T)
    assert any(n.startswith("image 2 (s2): 2 constant voxels") for n in out.notes)
    assert not any(n.startswith("image 1") for n in out.notes)
    assert any(n.startswith(f"mask: {kept.sum()} voxels remain") for n in out.notes)


def test_run_without_signal_in_the_mask_is_an_error(rng):
    run = nib.Nifti1Image(np.zeros(SHAPE + (10,), np.float32), LAS)
    with pytest.raises(FMRIInputError, match="no signal inside the mask"):
        load_fmri(run, mask=_mask_img())


def test_run_on_another_grid_is_resampled_with_a_warning_and_a_note(rng):
    # The run is on a 2 mm RAS grid, the mask on a 3 mm LAS grid. The signal is linear in
    # world coordinates, which trilinear interpolation reproduces exactly inside the run.
    # (The run extends well beyond the mask: nilearn's cubic spline is exact for a linear
    # signal away from the run's own borders.)
    fine_shape = (30, 30, 28)
    fine_affine = np.array([[2.0, 0, 0, -25.0], [0, 2.0, 0, -27.0], [0, 0, 2.0, -21.0], [0, 0, 0, 1]])
    ijk = np.indices(fine_shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(fine_affine, ijk)
    slopes = rng.standard_normal((5, 3))
    volumes = np.stack([xyz @ s + 50 for s in slopes], axis=1).reshape(fine_shape + (5,))
    run = nib.Nifti1Image(volumes.astype(np.float32), fine_affine)
    with pytest.warns(ResamplingWarning, match="resampled"):
        out = load_fmri(run, mask=_mask_img())
    assert any("resampled" in n for n in out.notes)
    kept = np.asarray(out.mask_img.dataobj) > 0
    world = nib.affines.apply_affine(LAS, np.argwhere(kept))
    expected = world @ slopes.T + 50
    np.testing.assert_allclose(out.data[0], expected.T, atol=1e-3)


def test_run_that_differs_by_orientation_only_is_reoriented_exactly(rng):
    run = _run(rng)
    data_ras, affine_ras = _ras_version(np.asarray(run.dataobj), LAS)
    # and the axes permuted (y, x, z): still the same voxels
    data_perm = np.ascontiguousarray(np.transpose(data_ras, (1, 0, 2, 3)))
    affine_perm = affine_ras[:, [1, 0, 2, 3]]
    mask = _mask_img()
    reference = load_fmri(run, mask=mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResamplingWarning)
        for d, a in ((data_ras, affine_ras), (data_perm, affine_perm)):
            out = load_fmri(nib.Nifti1Image(d, a), mask=mask, tr=1.5)
            np.testing.assert_array_equal(out.data[0], reference.data[0])
            assert any("reoriented" in n and "no interpolation" in n for n in out.notes)


def test_subjects_on_different_grids(rng):
    other = LAS.copy()
    other[:3, :3] *= 2.0 / 3.0
    a, b = _run(rng), _run(rng, affine=other, shape=(15, 18, 14))
    with pytest.warns(ResamplingWarning):
        out = load_fmri([a, b], mask=_mask_img())
    assert out.data[0].shape == out.data[1].shape
    with pytest.raises(FMRIInputError, match="different grids.*give a mask"):
        load_fmri([a, b], mask=None)


def test_mask_computed_from_the_data(rng):
    data = np.zeros(SHAPE + (12,), np.float32)
    data[2:-2, 2:-2, 2:-2] = 1000 + rng.standard_normal((6, 8, 5, 12)) * 10
    out = load_fmri(nib.Nifti1Image(data, LAS), mask=None)
    kept = np.asarray(out.mask_img.dataobj) > 0
    assert kept.sum() > 0 and not kept[0].any()
    assert any("computed from the data" in n for n in out.notes)


def test_tr_from_headers_and_mismatches(rng):
    mask = _mask_img()
    assert load_fmri(_run(rng, tr=2.0), mask=mask).tr == pytest.approx(2.0)
    with pytest.warns(TRMismatchWarning, match=r"header TR .*\(2 s\) differs from tr=1\.5 s"):
        out = load_fmri(_run(rng, tr=2.0), mask=mask, tr=1.5)
    assert out.tr == 1.5 and any("differs" in n for n in out.notes)
    with pytest.raises(FMRIInputError, match="header TRs differ"):
        load_fmri([_run(rng, tr=2.0), _run(rng, tr=1.5)], mask=mask)
    with pytest.raises(FMRIInputError, match="'tr' must be a positive"):
        load_fmri(_run(rng), mask=mask, tr=-1)


def test_subject_names(rng):
    mask = _mask_img()
    with pytest.raises(FMRIInputError, match="unique"):
        load_fmri([_run(rng), _run(rng)], mask=mask, subjects=["a", "a"])
    with pytest.raises(FMRIInputError, match="2 inputs"):
        load_fmri([_run(rng), _run(rng)], mask=mask, subjects=["a"])


def test_mni_mask_is_the_bundled_fsl_grid():
    mask = load_mask("mni")
    assert mask.shape == (91, 109, 91)
    assert mask.affine[0, 0] < 0  # LAS
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}


# --------------------------------------------------------------------------- regions


def test_region_tables_csv_tsv_npy(rng, tmp_path):
    values = rng.standard_normal((30, 4))
    names = ["A1", "STG", "IFG", "PCC"]
    csv = tmp_path / "sub-01_regions.csv"
    csv.write_text(",".join(names) + "\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in values))
    tsv = tmp_path / "sub-02_regions.tsv"
    tsv.write_text("\t".join(names) + "\n" + "\n".join("\t".join(f"{v:.6f}" for v in row) for row in values))
    npy = tmp_path / "sub-03_regions.npy"
    np.save(npy, values)
    out = load_region_timeseries([csv, tsv, npy], n_volumes=30)
    assert out.kind == "regions" and out.region_names == names and out.mask_img is None
    assert out.subjects == ["sub-01", "sub-02", "sub-03"]
    for d in out.data:
        np.testing.assert_allclose(d, values, atol=1e-6)
    with pytest.raises(FMRIInputError, match="regions"):
        out.unmask(np.zeros(4))
    plain = load_region_timeseries(npy, names=names)
    assert plain.region_names == names
    assert load_region_timeseries(npy).region_names == ["region_0", "region_1", "region_2", "region_3"]


def test_region_tables_bad_inputs(rng, tmp_path):
    values = rng.standard_normal((30, 3))
    npy = tmp_path / "s.npy"
    np.save(npy, values)
    with pytest.raises(FMRIInputError, match=r"s\.npy has 30 volumes; the story needs 40 \(--n-volumes\)\."):
        load_region_timeseries(npy, n_volumes=40)
    bad = values.copy()
    bad[5, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(FMRIInputError, match=r"nan\.npy has 1 NaN/inf values \(first at volume 5, region 'region_1'\)"):
        load_region_timeseries(tmp_path / "nan.npy")
    csv = tmp_path / "text.csv"
    csv.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(FMRIInputError, match=r"text\.csv, line 3, column 2: 'oops' is not a number"):
        load_region_timeseries(csv)
    one = tmp_path / "one.csv"
    one.write_text("a,b\n1,2\n3,4\n")
    two = tmp_path / "two.csv"
    two.write_text("a,c\n1,2\n3,4\n")
    with pytest.raises(FMRIInputError, match="region names differ"):
        load_region_timeseries([one, two])
    with pytest.raises(ShapeError, match=r"expected \(n_volumes, n_regions\)"):
        load_region_timeseries(np.zeros(5))
    const = values.copy()
    const[:, 2] = 1.0
    with pytest.warns(DroppedVoxelsWarning, match="1 of 3 regions"):
        out = load_region_timeseries([values, const], names=["x", "y", "z"])
    assert out.region_names == ["x", "y"] and out.data[0].shape == (30, 2)


# --------------------------------------------------------------------------- BIDS


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_find_bids_runs_in_the_narratives_layout(tmp_path):
    space = "space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz"
    deriv = tmp_path / "derivatives" / "afni-nosmooth"
    _touch(deriv / "sub-001/func" / f"sub-001_task-pieman_run-1_{space}")
    _touch(deriv / "sub-002/func" / f"sub-002_task-pieman_{space}")
    _touch(deriv / "sub-002/func" / f"sub-002_task-tunnel_{space}")
    _touch(deriv / "sub-003/func" / "sub-003_task-pieman_space-fsaverage6_hemi-L_desc-clean.func.gii")
    _touch(tmp_path / "sub-001/func/sub-001_task-pieman_run-1_events.tsv")
    _touch(tmp_path / "sub-001/func/sub-001_task-pieman_run-1_bold.nii.gz")
    runs = find_bids_runs(tmp_path, "pieman")
    assert [r["subject"] for r in runs] == ["sub-001", "sub-002"]
    assert runs[0]["run"] == "1" and runs[0]["bold"].endswith(f"sub-001_task-pieman_run-1_{space}")
    assert runs[0]["events"].endswith("sub-001_task-pieman_run-1_events.tsv")
    assert runs[1]["events"] is None
    assert [r["subject"] for r in find_bids_runs(tmp_path, "pieman", subjects=["002"])] == ["sub-002"]
    raw = find_bids_runs(tmp_path, "pieman", derivative=None)
    assert [r["subject"] for r in raw] == ["sub-001"] and "derivatives" not in raw[0]["bold"]
    with pytest.raises(FMRIInputError, match=r"No BOLD runs of task 'piemann'.*Did you mean 'pieman'\?"):
        find_bids_runs(tmp_path, "piemann")
    with pytest.raises(FMRIInputError, match=r"Subjects \['sub-009'\] have no run"):
        find_bids_runs(tmp_path, "pieman", subjects=["sub-009"])
    with pytest.raises(FMRIInputError, match="'derivative' 'fmriprep' is not in"):
        find_bids_runs(tmp_path, "pieman", derivative="fmriprep")


def test_find_bids_runs_refuses_several_runs_of_one_subject_and_selects_by_run(tmp_path):
    space = "space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz"
    deriv = tmp_path / "derivatives" / "afni-nosmooth" / "sub-001" / "func"
    _touch(deriv / f"sub-001_task-pieman_run-1_{space}")
    _touch(deriv / f"sub-001_task-pieman_run-2_{space}")
    # the same person's two runs are not two subjects: the message says which entity to choose
    with pytest.raises(FMRIInputError, match=r"sub-001 has 2 runs of task 'pieman' \(run-1, run-2\).*"
                                             r"'runs' \(run-labels \['1', '2'\]\)"):
        find_bids_runs(tmp_path, "pieman")
    runs = find_bids_runs(tmp_path, "pieman", runs=["2"])
    assert [(r["subject"], r["run"]) for r in runs] == [("sub-001", "2")]
    assert find_bids_runs(tmp_path, "pieman", runs=[1])[0]["bold"].endswith(f"run-1_{space}")