"""Network templates: every bundled atlas, user NIfTIs on other grids, bad inputs."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from napari_brainorg import datasets
from napari_brainorg.errors import AtlasError, ResamplingWarning
from napari_brainorg.io.atlases import YEO7_COLORS, YEO17_COLORS, load_fbn
from napari_brainorg.io.fmri import load_mask

EXPECTED = {
    "smith10": ("maps", 10),
    "smith10_thr3": ("maps", 10),
    "yeo7": ("labels", 7),
    "yeo7_liberal": ("labels", 7),
    "yeo17": ("labels", 17),
    "yeo17_liberal": ("labels", 17),
    "schaefer400_yeo7": ("labels", 7),
}


@pytest.fixture(scope="module")
def mni_mask():
    return load_mask("mni")


def test_every_bundled_atlas_is_expected():
    assert set(datasets.BUNDLED_ATLASES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_atlas_on_the_mni_mask(name, mni_mask):
    kind, n = EXPECTED[name]
    mask = np.asarray(mni_mask.dataobj) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResamplingWarning)  # already on the FSL grid
        atlas = load_fbn(name, mni_mask)
    assert atlas.kind == kind and atlas.n_networks == n
    assert atlas.network_names == datasets.atlas_labels(name)
    assert atlas.maps.shape == (n, mask.sum()) and atlas.maps.dtype == np.float32
    assert atlas.colors.shape == (n, 4) and (atlas.colors >= 0).all() and (atlas.colors <= 1).all()
    assert not atlas.notes
    member = atlas.masks()
    assert member.any(axis=1).all()  # no network lost in the mask
    raw = np.asarray(nib.load(datasets.atlas_path(name)).dataobj)
    if kind == "labels":
        assert set(np.unique(atlas.maps)) == {0.0, 1.0}
        assert member.sum(axis=0).max() == 1  # a label image's networks are disjoint
        np.testing.assert_array_equal(member, raw[mask][None] == np.arange(1, n + 1)[:, None])
    else:
        np.testing.assert_array_equal(atlas.maps, raw[mask].T)
        np.testing.assert_array_equal(member, raw[mask].T > atlas.threshold)


def test_yeo_colours_are_the_published_ones(mni_mask):
    yeo7 = load_fbn("yeo7", mni_mask)
    np.testing.assert_allclose(yeo7.colors[0, :3] * 255, [120, 18, 134])  # visual
    np.testing.assert_allclose(yeo7.colors[6, :3] * 255, [205, 62, 78])  # default
    np.testing.assert_array_equal(yeo7.colors, YEO7_COLORS)
    np.testing.assert_array_equal(load_fbn("yeo17", mni_mask).colors, YEO17_COLORS)
    smith = load_fbn("smith10", mni_mask)
    assert len({tuple(c) for c in smith.colors}) == 10  # a distinct colour per network


def test_smith_label_image_takes_the_strongest_overlapping_map(mni_mask):
    atlas = load_fbn("smith10", mni_mask)
    member = atlas.masks()
    labels = np.asarray(atlas.label_image(mni_mask).dataobj)
    mask = np.asarray(mni_mask.dataobj) > 0
    assert labels.dtype.kind == "i" and labels.shape == mask.shape
    inside = labels[mask]
    both = np.flatnonzero(member.sum(axis=0) >= 2)
    assert both.size > 0  # Smith's maps overlap
    v = both[0]
    assert inside[v] == np.argmax(np.where(member[:, v], atlas.maps[:, v], -np.inf)) + 1
    assert (inside[~member.any(axis=0)] == 0).all()
    assert not labels[~mask].any()


def test_labels_image_of_a_label_atlas_round_trips(mni_mask):
    atlas = load_fbn("yeo7", mni_mask)
    labels = np.asarray(atlas.label_image(mni_mask).dataobj)
    raw = np.asarray(nib.load(datasets.atlas_path("yeo7")).dataobj)
    mask = np.asarray(mni_mask.dataobj) > 0
    np.testing.assert_array_equal(labels[mask], raw[mask])


# --------------------------------------------------------------------------- user NIfTIs

RAS3 = np.array([[3.0, 0, 0, -60.0], [0, 3.0, 0, -90.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])


def _user_labels(tmp_path):
    """Three labelled boxes on a 3 mm RAS grid (the FSL mask grid is 2 mm LAS)."""
    data = np.zeros((40, 50, 40), dtype=np.int16)
    data[5:15, 10:25, 10:20] = 1
    data[22:32, 10:25, 10:20] = 2
    data[12:28, 30:42, 20:30] = 3
    path = tmp_path / "my_networks.nii.gz"
    nib.save(nib.Nifti1Image(data, RAS3), str(path))
    return path, data


def test_user_label_image_on_another_grid_is_resampled_nearest(tmp_path, mni_mask):
    path, data = _user_labels(tmp_path)
    names = tmp_path / "names.csv"
    names.write_text("index,name\n1,left box\n2,right box\n3,back box\n")
    with pytest.warns(ResamplingWarning, match="nearest"):
        atlas = load_fbn(str(path), mni_mask, labels=str(names))
    assert atlas.kind == "labels" and atlas.network_names == ["left box", "right box", "back box"]
    assert any("resampled (nearest)" in n for n in atlas.notes)
    assert set(np.unique(atlas.maps)) <= {0.0, 1.0}  # labels stay integers: no blend
    label_img = atlas.label_image(mni_mask)
    assert set(np.unique(np.asarray(label_img.dataobj))) == {0, 1, 2, 3}
    # a known voxel keeps its world position: the centre of box 2, in mm, falls in
    # network 2 on the FSL grid
    centre_world = nib.affines.apply_affine(RAS3, [27, 17, 15])
    ijk = np.round(nib.affines.apply_affine(np.linalg.inv(mni_mask.affine), centre_world)).astype(int)
    assert np.asarray(mni_mask.dataobj)[tuple(ijk)] > 0
    assert np.asarray(label_img.dataobj)[tuple(ijk)] == 2
    # and every labelled FSL voxel maps back to the same label in the user's image
    lab = np.asarray(label_img.dataobj)
    where = np.argwhere(lab > 0)
    src = np.round(nib.affines.apply_affine(np.linalg.inv(RAS3), nib.affines.apply_affine(mni_mask.affine, where)))
    src = src.astype(int)
    np.testing.assert_array_equal(data[tuple(src.T)], lab[tuple(where.T)])


def test_user_names_as_list_and_defaults(tmp_path, mni_mask):
    path, _ = _user_labels(tmp_path)
    with pytest.warns(ResamplingWarning):
        atlas = load_fbn(path, mni_mask)
    assert atlas.network_names == ["network_1", "network_2", "network_3"]
    with pytest.warns(ResamplingWarning):
        atlas = load_fbn(path, mni_mask, labels=["background", "a", "b", "c"])
    assert atlas.network_names == ["a", "b", "c"]
    with pytest.raises(AtlasError, match="'labels' has 2 names but the label image has 3 networks"):
        with pytest.warns(ResamplingWarning):
            load_fbn(path, mni_mask, labels=["a", "b"])


def test_user_map_stack_is_resampled_continuously(tmp_path, mni_mask):
    # two smooth maps on a 3 mm RAS grid, linear in world coordinates inside a box
    ijk = np.indices((40, 50, 40)).reshape(3, -1).T
    xyz = nib.affines.apply_affine(RAS3, ijk)
    m1 = (xyz[:, 0] + 100.0).reshape(40, 50, 40)
    m2 = (xyz[:, 1] + 100.0).reshape(40, 50, 40)
    path = tmp_path / "maps.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([m1, m2], -1).astype(np.float32), RAS3), str(path))
    with pytest.warns(ResamplingWarning, match="continuous"):
        atlas = load_fbn(path, mni_mask, threshold=150.0)
    assert atlas.kind == "maps" and atlas.n_networks == 2 and atlas.threshold == 150.0
    mask = np.asarray(mni_mask.dataobj) > 0
    world = nib.affines.apply_affine(mni_mask.affine, np.argwhere(mask))
    # inside the user's field of view and away from its edges the values are the world
    # coordinates of the FSL voxels (a LAS grid): world placement survived
    lo, hi = RAS3[:3, 3] + 9, RAS3[:3, 3] + 3 * np.array([40, 50, 40]) - 12
    inside = ((world > lo) & (world < hi)).all(axis=1)
    assert inside.sum() > 1000
    np.testing.assert_allclose(atlas.maps[0, inside], world[inside, 0] + 100.0, atol=1e-2)
    np.testing.assert_allclose(atlas.maps[1, inside], world[inside, 1] + 100.0, atol=1e-2)


def test_atlas_that_differs_by_orientation_only_is_exact(tmp_path, mni_mask):
    raw = nib.load(datasets.atlas_path("yeo7"))
    data = np.asarray(raw.dataobj)[::-1]
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    path = tmp_path / "yeo7_ras.nii.gz"
    nib.save(nib.Nifti1Image(data, raw.affine @ flip), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResamplingWarning)
        atlas = load_fbn(path, mni_mask, labels=datasets.atlas_labels("yeo7"))
    np.testing.assert_array_equal(atlas.maps, load_fbn("yeo7", mni_mask).maps)
    assert any("reoriented" in n for n in atlas.notes)


def test_atlas_on_a_coarse_data_mask(tmp_path):
    # a 4 mm RAS analysis mask: the bundled 2 mm LAS atlas comes to it
    mask = np.zeros((46, 55, 46), np.uint8)
    mask[8:38, 8:48, 8:38] = 1
    affine = np.array([[4.0, 0, 0, -92.0], [0, 4.0, 0, -128.0], [0, 0, 4.0, -74.0], [0, 0, 0, 1]])
    mask_img = nib.Nifti1Image(mask, affine)
    with pytest.warns(ResamplingWarning):
        atlas = load_fbn("yeo7", mask_img)
    assert atlas.maps.shape == (7, mask.sum())
    labels = np.asarray(atlas.label_image(mask_img).dataobj)
    raw = nib.load(datasets.atlas_path("yeo7"))
    where = np.argwhere(labels > 0)
    src = np.round(nib.affines.apply_affine(np.linalg.inv(raw.affine), nib.affines.apply_affine(affine, where)))
    np.testing.assert_array_equal(np.asarray(raw.dataobj)[tuple(src.astype(int).T)], labels[tuple(where.T)])


# --------------------------------------------------------------------------- errors


def test_unknown_name_in_nilearn_style(mni_mask):
    with pytest.raises(AtlasError) as err:
        load_fbn("yeo8", mni_mask)
    msg = str(err.value)
    allowed = list(datasets.BUNDLED_ATLASES)
    assert msg.startswith(f"'atlas' must be one of {allowed} or a NIfTI path; 'yeo8' was provided.")
    assert "Did you mean 'yeo7'?" in msg
    with pytest.raises(AtlasError, match="is not a file"):
        load_fbn("/no/such/atlas.nii.gz", mni_mask)


def test_images_that_are_neither_labels_nor_maps(tmp_path, mni_mask):
    rng = np.random.default_rng(0)
    floats = tmp_path / "float3d.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((20, 20, 20)).astype(np.float32), RAS3), str(floats))
    expected = "3D image with non-integer or negative values.*expected a 3D integer label image"
    with pytest.raises(AtlasError, match=expected):
        load_fbn(floats, mni_mask)
    two_d = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 1, 1, 3), np.float32), RAS3), str(two_d))
    with pytest.raises(AtlasError, match="expected a 3D integer label image .* or a 4D stack"):
        load_fbn(two_d, mni_mask)
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.int16), RAS3), str(empty))
    with pytest.raises(AtlasError, match="no non-zero label"):
        load_fbn(empty, mni_mask)
    with pytest.raises(AtlasError, match="on a mask of"):
        load_fbn("yeo7", mni_mask).label_image(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), RAS3))


@pytest.mark.parametrize("sidecar, text", [
    ("my_networks.tsv", "index\tname\n1\tVisual\n2\tSomatomotor\n3\tLanguage\n"),
    ("my_networks_labels.csv", "Visual\nSomatomotor\nLanguage\n"),
])
def test_a_user_atlas_is_named_by_its_sidecar_table(tmp_path, mni_mask, sidecar, text):
    from napari_brainorg.io.atlases import label_sidecar

    data = np.zeros(mni_mask.shape, np.int16)
    data[20:40, 20:40, 20:40], data[50:70, 50:70, 20:40], data[20:40, 50:70, 40:60] = 1, 2, 3
    path = tmp_path / "my_networks.nii.gz"
    nib.save(nib.Nifti1Image(data, mni_mask.affine), path)
    assert load_fbn(str(path), mni_mask).network_names == ["network_1", "network_2", "network_3"]
    (tmp_path / sidecar).write_text(text)
    assert label_sidecar(path) == tmp_path / sidecar
    atlas = load_fbn(str(path), mni_mask)
    assert atlas.network_names == ["Visual", "Somatomotor", "Language"]
    assert any(sidecar in note for note in atlas.notes)
    (tmp_path / sidecar).write_text(text.rsplit("\n", 2)[0] + "\n")  # one name short
    with pytest.raises(AtlasError, match=rf"'labels' '.*{sidecar}' (has 2 names but the label image has 3|"
                                         r"gives no name for label image values \[3\])"):
        load_fbn(str(path), mni_mask)
