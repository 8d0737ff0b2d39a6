"""The plugin's manifest: which files napari offers to it, and the NIfTI writer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from napari_brainorg import datasets  # noqa: E402
from napari_brainorg._napari import layers as L  # noqa: E402
from napari_brainorg._napari.writer import write_nifti  # noqa: E402

PLUGIN = "napari-brainorg"


@pytest.fixture(autouse=True)
def _discovered_plugins():
    """napari finds plugins through npe2's manager; make sure it has looked (any test order)."""
    npe2.PluginManager.instance().discover()


def _readers_for(path) -> set[str]:
    pm = npe2.PluginManager.instance()
    pm.discover()
    return {r.plugin_name for r in pm.iter_compatible_readers([str(path)])}


def test_manifest_is_valid():
    from importlib.resources import files

    npe2.PluginManifest.from_file(files("napari_brainorg") / "napari.yaml")  # raises when invalid


def test_png_is_not_offered_to_the_plugin_but_nifti_and_folders_are(tmp_path, tiny_result):
    png = tmp_path / "picture.png"
    import matplotlib.pyplot as plt

    plt.imsave(png, np.arange(12.0).reshape(3, 4))
    for other in ("table.csv", "stack.tif"):
        (tmp_path / other).write_bytes(b"x")
    assert PLUGIN not in _readers_for(png)
    assert PLUGIN not in _readers_for(tmp_path / "table.csv")
    assert PLUGIN not in _readers_for(tmp_path / "stack.tif")
    assert PLUGIN in _readers_for(datasets.atlas_path("yeo7"))
    assert PLUGIN in _readers_for(tmp_path / "a.nii")
    assert PLUGIN in _readers_for(tiny_result[0])


def test_png_opens_in_napari_without_asking_which_plugin(make_napari_viewer, tmp_path):
    png = tmp_path / "picture.png"
    import matplotlib.pyplot as plt

    plt.imsave(png, np.arange(12.0).reshape(3, 4))
    viewer = make_napari_viewer()
    layers = viewer.open(str(png))  # MultipleReaderError if the plugin claimed it too
    assert len(layers) == 1 and layers[0].data.shape[:2] == (3, 4)


def test_atom_map_layer_written_and_read_back_with_nibabel(tiny_result, tmp_path):
    from napari.layers import Layer

    from napari_brainorg.io.results import ResultFolder

    path, truth = tiny_result
    result = ResultFolder(path)
    item = L.atom_map_layer_data(result, truth["model"], atom=1, stat="z")
    layer = Layer.create(*item)
    out = tmp_path / "atom1.nii.gz"
    written = layer.save(str(out), plugin=PLUGIN)
    assert written == [str(out)]
    back = nib.load(out)
    source = result.atom_maps(truth["model"], stat="z")
    np.testing.assert_allclose(back.affine, source.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(source.dataobj[..., 1], np.float32))
    # the header of the map it came from is kept (intent, units)
    assert back.header.get_xyzt_units() == source.header.get_xyzt_units()
    assert back.header["intent_code"] == source.header["intent_code"] == 5  # NIFTI_INTENT_ZSCORE


def test_las_nifti_round_trip_through_reader_and_writer(tmp_path):
    """A LAS atlas read by the plugin and saved again is the same image on the same grid."""
    from napari.layers import Layer

    from napari_brainorg._napari.reader import napari_get_reader

    src = datasets.mni_template_path()
    (item,) = napari_get_reader(str(src))(str(src))
    layer = Layer.create(*item)
    out = tmp_path / "template.nii"
    write_nifti(str(out), layer.data, layer._get_state())
    back, orig = nib.load(out), nib.load(src)
    np.testing.assert_allclose(back.affine, orig.affine)
    np.testing.assert_allclose(np.asarray(back.dataobj), np.asarray(orig.dataobj, np.float32))
    assert int(back.header["sform_code"]) == int(orig.header["sform_code"])


def test_writer_refuses_a_2d_layer(tmp_path):
    from napari_brainorg.errors import ShapeError

    with pytest.raises(ShapeError, match="3D volumes"):
        write_nifti(str(tmp_path / "x.nii"), np.zeros((3, 4)), {})


def test_a_gz_name_that_is_not_nifti_is_refused_and_nothing_written(tiny_result, tmp_path):
    """The manifest lists ".gz" for npe2 < 0.9 (last-suffix matching); the writer still
    writes only .nii / .nii.gz names."""
    from napari.layers import Layer

    from napari_brainorg.io.results import ResultFolder

    path, truth = tiny_result
    layer = Layer.create(*L.atom_map_layer_data(ResultFolder(path), truth["model"], atom=1, stat="z"))
    out = tmp_path / "table.csv.gz"
    try:
        written = layer.save(str(out), plugin=PLUGIN)
    except Exception:  # napari 0.5 says no plugin could write it, newer ones pass the writer's error
        written = []
    assert not written and not out.exists()
