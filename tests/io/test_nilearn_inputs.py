"""Loaders take what nilearn takes: paths, glob patterns, images, lists, maskers, atlas bunches."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_brainorg import datasets
from napari_brainorg.io.atlases import load_fbn
from napari_brainorg.io.fmri import load_fmri, load_mask

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


@pytest.fixture
def runs(tmp_path, rng):
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:5, 1:4, 1:3] = 1
    mask_img = nib.Nifti1Image(mask, AFFINE)
    paths = []
    for s in (2, 1, 3):  # written out of order: the glob's result is sorted
        data = rng.standard_normal((6, 5, 4, 20)).astype(np.float32) + s
        img = nib.Nifti1Image(data, AFFINE)
        img.header.set_zooms((4.0, 4.0, 4.0, 1.5))
        path = tmp_path / f"sub-0{s}_task-x_bold.nii.gz"
        nib.save(img, path)
        paths.append(path)
    return tmp_path, mask_img, sorted(paths)


def test_glob_pattern_means_the_sorted_matching_files(runs):
    folder, mask_img, paths = runs
    by_glob = load_fmri(str(folder / "sub-*_bold.nii.gz"), mask=mask_img, tr=1.5)
    by_list = load_fmri([str(p) for p in paths], mask=mask_img, tr=1.5)
    assert len(by_glob.data) == 3
    for a, b in zip(by_glob.data, by_list.data):
        np.testing.assert_array_equal(a, b)
    # images, paths and patterns mixed in one list, as nilearn allows
    mixed = load_fmri([nib.load(paths[0]), str(folder / "sub-0[23]_*.nii.gz")], mask=mask_img, tr=1.5)
    for a, b in zip(mixed.data, by_list.data):
        np.testing.assert_array_equal(a, b)


def test_a_pattern_matching_nothing_is_named(runs):
    folder, mask_img, _ = runs
    with pytest.raises(FileNotFoundError, match="sub-9"):
        load_fmri(str(folder / "sub-9*_bold.nii.gz"), mask=mask_img, tr=1.5)


def test_a_fitted_nilearn_masker_gives_its_mask(runs):
    from nilearn.maskers import NiftiMasker

    _, mask_img, paths = runs
    masker = NiftiMasker(mask_img=mask_img).fit()
    np.testing.assert_array_equal(np.asarray(load_mask(masker).dataobj), np.asarray(mask_img.dataobj))
    a = load_fmri(str(paths[0]), mask=masker, tr=1.5)
    b = load_fmri(str(paths[0]), mask=mask_img, tr=1.5)
    np.testing.assert_array_equal(a.data[0], b.data[0])


def test_a_nilearn_atlas_bunch_gives_maps_and_labels():
    from sklearn.utils import Bunch

    names = datasets.atlas_labels("yeo7")
    bunch = Bunch(maps=str(datasets.atlas_path("yeo7")), labels=["Background"] + list(names))
    atlas = load_fbn(bunch, "mni")
    assert list(atlas.network_names) == list(names)
    assert list(load_fbn("yeo7", "mni").network_names) == list(names)
