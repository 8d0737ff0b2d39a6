"""The result folder as other tools read it: BIDS-derivative names and sidecars, NIfTI
headers that say where a map lies, TSV tables with column descriptions, the dataset
description; and result folders of earlier versions read as before."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_brainorg.io._naming import GROUP_MAPS, MNI_SPACE, MapSpace, map_space, res_label
from napari_brainorg.io.results import ResultFolder, ResultWriter

#: BIDS entities in the order a file name must give them (BIDS 1.10, Appendix "Entity table")
BIDS_ENTITY_ORDER = ["sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain",
                     "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space",
                     "split", "recording", "chunk", "seg", "res", "den", "label", "desc"]


def _entities(name: str) -> tuple[list[tuple[str, str]], str]:
    stem = name[: -len(".nii.gz")]
    *pairs, suffix = stem.split("_")
    return [tuple(p.split("-", 1)) for p in pairs], suffix


def _maps(path: Path) -> list[Path]:
    """Every map of the result: encoding/<model>/ (not the subjects' arrays) and maps/."""
    return sorted([*path.glob("encoding/*/*.nii.gz"), *path.glob("maps/*/*.nii.gz")])


def test_every_map_has_a_bids_name_a_sidecar_and_a_header_that_says_where_it_lies(quick_result):
    path = quick_result.path
    maps = _maps(path)
    assert len(maps) > 20
    # the official entity list (BIDS schema) where it is installed, beside the order above
    schema_entities = None
    try:
        from bidsschematools import schema

        schema_entities = {v["name"] for v in schema.load_schema()["objects"]["entities"].values()}
    except ImportError:
        pass
    for p in maps:
        pairs, suffix = _entities(p.name)
        keys = [k for k, _ in pairs]
        assert suffix in ("statmap", "mask"), p.name
        assert set(keys) <= set(BIDS_ENTITY_ORDER), p.name
        if schema_entities is not None:
            assert set(keys) <= schema_entities, p.name
        assert keys == sorted(keys, key=BIDS_ENTITY_ORDER.index), f"{p.name}: entities out of BIDS order"
        assert all(re.fullmatch(r"[A-Za-z0-9]+", v) for _, v in pairs), p.name
        values = dict(pairs)
        assert values["task"] == "pieman" and values["space"] == MNI_SPACE and values["res"] == "6mm"
        assert values["desc"].startswith("minilm")
        if p.parent.name.startswith("sub-"):
            assert values["sub"] == p.parent.name[4:]
        # the header: MNI (the simulation lies on the bundled template's grid), mm, what it holds
        header = nib.load(p).header
        assert int(header["sform_code"]) == 4 and int(header["qform_code"]) == 4, p.name
        assert header.get_xyzt_units()[0] == "mm", p.name
        assert header["descrip"].tobytes().strip(b"\0"), p.name
        sidecar = json.loads(p.with_name(p.name[: -len(".nii.gz")] + ".json").read_text())
        assert sidecar["Description"] and "Units" in sidecar and sidecar["Resolution"].startswith("6 x 6 x 6 mm")
    # every map of GROUP_MAPS the run made is found by what it holds
    assert quick_result.map_path(name="r2_cv").name == (
        "task-pieman_space-MNI152NLin6Asym_res-6mm_desc-minilmR2Cv_statmap.nii.gz")
    assert quick_result.map_sidecar(name="atom_maps_z")["Volumes"].startswith("one per atom")
    # no copy of a group map: maps/group holds the atoms' z maps, the R2 maps are encoding/'s
    assert not list(path.glob("maps/group/*R2Cv*"))
    assert quick_result.statmap(stat="r2cv") is not None
    # the simulation's images and the atlases' label images say the same space; a run is in seconds
    for p in [*path.glob("simulated/*.nii.gz"), *path.glob("networks/atlas_*.nii.gz")]:
        header = nib.load(p).header
        assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 4), p.name
        assert header.get_xyzt_units() == ("mm", "sec" if p.name.endswith("_bold.nii.gz") else "unknown"), p.name


def test_tables_are_tsv_with_every_column_described(quick_result):
    path = quick_result.path
    assert not list(path.rglob("*.csv"))
    tables = sorted(path.rglob("*.tsv"))
    assert any(p.parts[-2] == "comparison" for p in tables) and any(p.parts[-3] == "networks" for p in tables)
    for p in tables:
        columns = pd.read_csv(p, sep="\t", nrows=0).columns
        sidecar = json.loads(p.with_suffix(".json").read_text())
        missing = [c for c in columns if c not in sidecar]
        assert not missing, (f"{p.relative_to(path)}: columns {missing} have no description; add them to "
                             "napari_brainorg.io._columns")
        assert all(sidecar[c]["LongName"] and sidecar[c]["Description"] for c in columns), p


def test_dataset_description_and_pybids_indexes_the_maps(quick_result):
    path = quick_result.path
    desc = json.loads((path / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and re.fullmatch(r"1\.\d+\.\d+", desc["BIDSVersion"])
    from napari_brainorg import __version__

    assert desc["GeneratedBy"][0]["Name"] == "napari-brainorg" and desc["GeneratedBy"][0]["Version"] == __version__
    # the simulated subjects are a folder of this one: a BIDS URI, not a bare relative path
    assert desc["SourceDatasets"] == [{"URL": "bids::simulated/"}]

    bids = pytest.importorskip("bids")
    layout = bids.BIDSLayout(str(path), validate=False, is_derivative=True)
    group = layout.get(suffix="statmap", desc="minilmAtom03Z", subject=None, extension=".nii.gz")
    subjects = layout.get(suffix="statmap", desc="minilmAtom03Z", subject="01", extension=".nii.gz")
    assert [Path(f.path).parent.name for f in group] == ["group"] and len(subjects) == 1
    entities = subjects[0].get_entities()
    assert entities["space"] == MNI_SPACE and entities["task"] == "pieman" and entities["subject"] == "01"
    assert subjects[0].get_metadata()["Statistic"] == "z"
    r2 = layout.get(suffix="statmap", desc="minilmR2Cv", extension=".nii.gz")
    assert quick_result.map_path(name="r2_cv") in [Path(f.path) for f in r2]


def _as_an_earlier_version_wrote_it(path: Path) -> None:
    """Rename a result folder's maps and tables to the names of earlier versions."""
    for enc in path.glob("encoding/*"):
        if not enc.is_dir():
            continue
        label = "".join(ch for ch in enc.name if ch.isalnum())
        for name, (what, suffix, *_) in GROUP_MAPS.items():
            for p in enc.glob(f"*_desc-{label}{what}_{suffix}.nii.gz"):
                p.rename(enc / f"{name}.nii.gz")
                p.with_name(p.name[: -len(".nii.gz")] + ".json").unlink()
    for p in path.glob("maps/*/*_statmap.nii.gz"):
        values = dict(pair.split("-", 1) for pair in p.name.split("_")[:-1])
        atom = re.fullmatch(r"minilmAtom(\d+)Z", values["desc"])
        stat = f"atom-{atom.group(1)}_stat-z" if atom else "stat-" + values["desc"][len("minilm"):].lower()
        sub = f"sub-{values['sub']}_" if "sub" in values else ""
        p.rename(p.with_name(f"{sub}model-minilm_{stat}_statmap.nii.gz"))
    for p in [*path.glob("networks/*/*.tsv"), *path.glob("comparison/*.tsv")]:
        pd.read_csv(p, sep="\t", dtype=str).to_csv(p.with_suffix(".csv"), index=False)
        p.unlink()
        p.with_suffix(".json").unlink()


def test_a_result_folder_of_an_earlier_version_is_read_as_before(quick_result, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(quick_result.path, old)
    _as_an_earlier_version_wrote_it(old)
    assert (old / "encoding/minilm/r2_cv.nii.gz").is_file() and (old / "comparison/summary.csv").is_file()
    assert (old / "maps/sub-01/sub-01_model-minilm_atom-03_stat-z_statmap.nii.gz").is_file()
    before, after = quick_result, ResultFolder(old)
    for name in GROUP_MAPS:
        a, b = before.map_img(name=name), after.map_img(name=name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj), err_msg=name)
    np.testing.assert_array_equal(np.asarray(before.statmap(atom=3, subject="01").dataobj),
                                  np.asarray(after.statmap(atom=3, subject="01").dataobj))
    np.testing.assert_array_equal(np.asarray(before.statmap(stat="r2cv", subject="02").dataobj),
                                  np.asarray(after.statmap(stat="r2cv", subject="02").dataobj))
    pd.testing.assert_frame_equal(before.associations(part="deactivated"), after.associations(part="deactivated"))
    pd.testing.assert_frame_equal(before.readout_table(), after.readout_table())
    assert before.comparison_tables().keys() == after.comparison_tables().keys()
    pd.testing.assert_frame_equal(before.comparison_tables()["summary"], after.comparison_tables()["summary"])


def test_the_space_of_the_maps_comes_from_the_input(tmp_path):
    affine = np.diag([3.0, 3.0, 4.0, 1.0])
    mask = nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), affine)
    # an fMRIPrep output: its space- entity names the space, MNI in the header
    bold = tmp_path / "sub-01_task-story_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), affine), bold)
    space = map_space("story", mask, template_grid=False, sources=[bold])
    assert (space.space, space.res, space.xform_code, space.task) == ("MNI152NLin2009cAsym", "3x3x4mm", 4, "story")
    # a native-space run (scanner code 1) keeps its code and has no space- entity
    native = nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), affine)
    native.set_sform(affine, code=1)
    nib.save(native, tmp_path / "run.nii.gz")
    space = map_space("the story", mask, template_grid=False, sources=[tmp_path / "run.nii.gz"])
    assert (space.space, space.xform_code, space.task) == (None, 1, "thestory")
    assert space.entities() == ["task-thestory", "res-3x3x4mm"]
    # the bundled template's grid: MNI152NLin6Asym, code 4 whatever the image said
    assert map_space("pieman", mask, template_grid=True, sources=[tmp_path / "run.nii.gz"]).xform_code == 4
    assert res_label([2.5, 2.5, 2.5]) == "2p5mm"
    # the writer sets the codes and units of every image it writes
    w = ResultWriter(tmp_path / "out")
    w.space = MapSpace(task="story", xform_code=2, res="3x3x4mm", voxel_mm=(3.0, 3.0, 4.0))
    rel = w.write_map("minilm", "r_cv", nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), affine))
    assert rel == "encoding/minilm/task-story_res-3x3x4mm_desc-minilmRCv_statmap.nii.gz"
    header = nib.load(tmp_path / "out" / rel).header
    assert (int(header["sform_code"]), int(header["qform_code"]), header.get_xyzt_units()[0]) == (2, 2, "mm")
    assert json.loads((tmp_path / "out" / rel.replace(".nii.gz", ".json")).read_text())["Resolution"] == "3 x 3 x 4 mm voxels"
    with pytest.raises(ValueError, match=r"'table.csv'.*tab-separated.*'.tsv'"):
        w.write_table("table.csv", pd.DataFrame({"a": [1]}))


def test_source_datasets_name_a_bids_input_by_its_doi_and_plain_images_by_uri(tmp_path):
    from napari_brainorg.pipeline import make_config
    from napari_brainorg.pipeline.steps.report import dataset_description

    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "Narratives", "BIDSVersion": "1.6.0", "DatasetDOI": "10.18112/openneuro.ds002345.v1.1.4"}))
    config = make_config({"fmri": {"bids": {"root": str(root), "task": "pieman"}}, "out": str(tmp_path / "out")})
    sources = dataset_description(config)["SourceDatasets"]
    assert sources == [{"DOI": "doi:10.18112/openneuro.ds002345.v1.1.4", "URL": root.resolve().as_uri()}]
    # a BIDS input without a DOI: its location as a URI (never a bare relative path)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "mine", "BIDSVersion": "1.8.0"}))
    assert dataset_description(config)["SourceDatasets"] == [{"URL": root.resolve().as_uri()}]
    images = [str(tmp_path / "runs" / f"sub-0{i}_bold.nii.gz") for i in (1, 2)]
    config = make_config({"fmri": {"images": images}, "out": str(tmp_path / "out")})
    assert dataset_description(config)["SourceDatasets"] == [{"URL": (tmp_path / "runs").resolve().as_uri()}]


def test_a_baselines_maps_are_found_like_a_models(tmp_path):
    w = ResultWriter(tmp_path / "out")
    w.space = MapSpace(task="story", res="2mm", xform_code=4, voxel_mm=(2.0, 2.0, 2.0))
    img = nib.Nifti1Image(np.arange(8, dtype=np.float32).reshape(2, 2, 2), np.eye(4))
    w.write_map("minilm-phase-randomised", "r_cv", img)
    w.write_json("summary.json", {"models": ["minilm"], "baselines": {"minilm-phase-randomised": "minilm"},
                                  "tr": 1.5, "n_volumes": 10})
    res = ResultFolder(tmp_path / "out")
    found = res.map_path("minilm-phase-randomised", "r_cv")
    assert found.name == "task-story_res-2mm_desc-minilmphaserandomisedRCv_statmap.nii.gz"
    np.testing.assert_array_equal(np.asarray(res.map_img("minilm-phase-randomised", "r_cv").dataobj),
                                  np.asarray(img.dataobj))
    assert res.map_path("minilm", "r_cv") is None
    with pytest.raises(ValueError, match="'model' must be one of"):
        res.map_path("other", "r_cv")
