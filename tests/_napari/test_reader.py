"""The reader: NIfTI volumes keep their world coordinates; result folders become layers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari.layers import Layer  # noqa: E402

from napari_brainorg import datasets  # noqa: E402
from napari_brainorg._napari import layers as L  # noqa: E402
from napari_brainorg._napari.reader import napari_get_reader  # noqa: E402


def _value_at_world(layer, world):
    """The layer's voxel value at a world position (napari's own world -> data transform)."""
    index = np.round(np.asarray(layer.world_to_data(world), float)).astype(int)
    assert np.all(index >= 0) and np.all(index < layer.data.shape), (world, index)
    return layer.data[tuple(index)]


def _read_one(path):
    """The layer of ``path`` itself (a map or an atlas may come with the MNI template under it)."""
    reader = napari_get_reader(str(path))
    assert reader is not None, f"no reader for {path}"
    items = reader(str(path))
    (item,) = [it for it in items if it[1]["metadata"].get("path") == str(path)]
    return Layer.create(*item)


@pytest.fixture(scope="module")
def yeo_las_and_ras(tmp_path_factory):
    """The bundled Yeo-7 atlas (LAS) and the same atlas written as RAS (x axis flipped)."""
    las_path = datasets.atlas_path("yeo7")
    las = nib.load(las_path)
    assert nib.aff2axcodes(las.affine) == ("L", "A", "S")
    ras = nib.as_closest_canonical(las)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    # the voxel arrays really differ: the RAS file stores x reversed
    assert not np.array_equal(np.asarray(las.dataobj), np.asarray(ras.dataobj))
    ras_path = tmp_path_factory.mktemp("ras") / "yeo7_ras.nii.gz"
    nib.save(ras, ras_path)
    return las_path, ras_path, las, ras


def test_known_voxel_world_coordinate_of_the_las_atlas(yeo_las_and_ras):
    las_path, _, las, _ = yeo_las_and_ras
    layer = _read_one(las_path)
    assert layer._type_string == "labels"
    # FSL MNI152 2 mm: voxel (45, 63, 36) is the origin; voxel (0, 0, 0) is x=+90, y=-126, z=-72
    np.testing.assert_allclose(layer.data_to_world([36, 63, 45]), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(layer.data_to_world([0, 0, 0]), [-72.0, -126.0, 90.0])
    # one voxel further along i is 2 mm further LEFT (x decreases): LAS honoured
    np.testing.assert_allclose(layer.data_to_world([0, 0, 1]), [-72.0, -126.0, 88.0])
    i, j, k = 20, 30, 40
    assert layer.data[k, j, i] == int(np.asarray(las.dataobj)[i, j, k])
    # a bundled atlas brings its network names (shown under the mouse)
    assert list(layer.features["network"]) == datasets.atlas_labels("yeo7")
    np.testing.assert_allclose(layer.data_to_world([k, j, i]), L.world_of_voxel(las.affine, (i, j, k)))


def test_las_atlas_and_ras_copy_line_up_in_world_space(yeo_las_and_ras):
    las_path, ras_path, las, _ = yeo_las_and_ras
    a, b = _read_one(las_path), _read_one(ras_path)
    assert not np.array_equal(a.data, b.data)
    # every labelled voxel of the LAS atlas, looked up by world position in the RAS copy
    data = np.asarray(las.dataobj)
    ijk = np.argwhere(data > 0)[::97]
    world = (las.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3][:, ::-1]  # (z, y, x)
    values_a = np.array([_value_at_world(a, w) for w in world])
    values_b = np.array([_value_at_world(b, w) for w in world])
    assert len(ijk) > 500
    np.testing.assert_array_equal(values_a, data[tuple(ijk.T)].astype(int))
    np.testing.assert_array_equal(values_b, values_a)


def test_template_and_a_4mm_map_line_up(tiny_result):
    """A map on a 4 mm RAS grid and the 2 mm LAS template: same world point, same place."""
    path, truth = tiny_result
    template = _read_one(datasets.mni_template_path())
    assert template._type_string == "image"
    z_map = _read_one(path / "encoding/minilm/atom_maps_z.nii.gz")
    assert z_map.data.shape == (4, 46, 55, 46)  # (atom, z, y, x)
    mask = nib.load(datasets.mni_mask_path())
    i, j, k = np.argwhere(truth["atlas"] == 7)[0]  # a Default-network voxel of the 4 mm grid
    world = L.world_of_voxel(truth["affine"], (i, j, k))
    np.testing.assert_allclose(z_map.data_to_world([1, k, j, i]), [1, *world])
    assert _value_at_world(z_map, [1, *world]) == pytest.approx(truth["z"][i, j, k, 1])
    # the template at that world point is inside the brain (the 4 mm mask came from it)
    ti, tj, tk = np.rint(np.linalg.inv(mask.affine) @ np.r_[world[::-1], 1])[:3].astype(int)
    assert _value_at_world(template, world) == pytest.approx(
        float(np.asarray(nib.load(datasets.mni_template_path()).dataobj)[ti, tj, tk]))
    assert np.asarray(mask.dataobj)[ti, tj, tk] > 0


def test_result_folder_reader(tiny_result, tmp_path):
    path, truth = tiny_result
    reader = napari_get_reader(str(path))
    items = reader(str(path))
    roles = [kw["metadata"][L.ROLE] for _, kw, _ in items]
    assert roles == ["template", "r2", "atom_map", "networks"]
    data, kwargs, kind = items[2]
    assert kind == "image" and kwargs["name"] == "atom map: atom 0 of minilm (z)"
    inside = L.inside_mni_brain(truth["affine"], truth["mask"].shape) & truth["mask"]
    np.testing.assert_allclose(data, np.where(inside, truth["z"][..., 0], 0).transpose(2, 1, 0))
    vmax = float(np.abs(truth["z"][..., 0]).max())
    assert kwargs["contrast_limits"] == pytest.approx((-vmax, vmax))
    labels, lkw, lkind = items[3]
    assert lkind == "labels"
    assert list(lkw["features"]["network"])[6] == "Default"
    # not ours: a folder without summary.json, a text file
    (tmp_path / "notes.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path)) is None
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None


def test_reader_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    reader = napari_get_reader(str(broken))
    with pytest.raises(ValueError, match="broken.nii.gz"):
        reader(str(broken))
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), flat)
    with pytest.raises(ValueError, match=r"flat.nii.*3D volume"):
        reader(str(flat))


def test_diverging_colormap_hides_the_band_under_the_threshold():
    cmap = L.diverging_threshold_colormap(threshold=2.0, vmax=8.0)
    values = np.array([-8.0, -2.5, -1.9, 0.0, 1.9, 2.5, 8.0])
    rgba = cmap.map((values + 8.0) / 16.0)
    np.testing.assert_array_equal(rgba[:, 3] > 0.5, [True, True, False, False, False, True, True])
    assert rgba[5, 0] > 0.8 and rgba[5, 2] < 0.2  # activated: red
    assert rgba[1, 2] > 0.8 and rgba[1, 0] < 0.2  # deactivated: blue


def test_upsampled_network_labels_keep_every_world_position():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, size=(5, 6, 7)).astype(np.int32)
    affine = np.array([[-6.0, 0, 0, 90.0], [0, 6.0, 0, -126.0], [0, 0, 6.0, -72.0], [0, 0, 0, 1]])
    up, new = L.upsample_labels(labels, affine)
    assert up.shape == (15, 18, 21)
    np.testing.assert_allclose(np.abs(np.diag(new)[:3]), 2.0)
    # any world point inside the old grid has the same label in both
    points = rng.uniform(-0.49, np.array(labels.shape) - 0.51, size=(500, 3))
    world = (affine @ np.c_[points, np.ones(500)].T).T
    old_idx = np.rint(points).astype(int)
    new_idx = np.rint((np.linalg.inv(new) @ world.T).T[:, :3]).astype(int)
    np.testing.assert_array_equal(up[tuple(new_idx.T)], labels[tuple(old_idx.T)])
