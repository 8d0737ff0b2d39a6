"""Several stories per subject and leave-one-story-out encoding (issue 10).

The study: two short stories (the first 3.7 minutes of the bundled 'pieman' and 'lucy'),
three SIMULATED subjects who heard both, MiniLM. The dictionary is learned on 'pieman'
only; the ridge is scored leave-one-story-out; the atom maps and the network
association tests use only 'lucy', the story the dictionary never saw.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_brainorg.encoding.stories import (highpass_runs, leave_one_story_out, make_delays_runs,
                                              run_drift_basis, run_rows, story_folds)

N_VOLUMES = 150
TR = 1.5
STORIES = ("pieman", "lucy")
EASY_PLANTING = {"sources": "atoms", "atlas": "smith10", "r2_min": 0.05, "r2_max": 0.2, "ar1_grey": 0.4,
                 "ar1_other": 0.4, "hrf_delay_s": 0.0, "hrf_dispersion_s": 0.0, "fluctuation_atlases": []}


def _story_file(tmp_path, name: str) -> str:
    """The bundled story's first N_VOLUMES x TR seconds as a word/onset/offset TSV."""
    from napari_brainorg.datasets import story_path

    table = pd.read_csv(story_path(name), header=None, names=["word", "aligned", "onset", "offset"])
    table = table.dropna(subset=["onset", "offset"])
    t0 = float(table["onset"].iloc[0]) - 1.0
    table = table.assign(onset=table["onset"] - t0, offset=table["offset"] - t0)
    table = table[table["offset"] < N_VOLUMES * TR - 2.0]
    path = tmp_path / f"{name}.tsv"
    table[["word", "onset", "offset"]].to_csv(path, sep="\t", index=False)
    return str(path)


@pytest.fixture(scope="module")
def two_story_result(tmp_path_factory):
    from napari_brainorg.pipeline import make_config, run_pipeline

    base = tmp_path_factory.mktemp("stories")
    config = make_config({
        "stories": [{"name": n, "path": _story_file(base, n), "tr": TR, "n_volumes": N_VOLUMES} for n in STORIES],
        # centred word activations, the design this test's recall bar was measured with (the library's
        # default is the paper's raw responses since; raw, the same seed recovers 8 of 9)
        "features": {"models": ["minilm"], "device": "cpu", "center_words": True},
        "atoms": {"n_atoms": 16, "max_iter": 30, "n_restarts": 0, "stories": ["pieman"]},
        # SIMULATED: the analysis' own atoms planted under simple noise (no HRF variation, no network
        # fluctuations), one truth in both stories; three subjects and 150 held-out volumes are too
        # few for the realistic simulation's recall (8 subjects x 300 volumes reach about 0.6)
        "fmri": {"simulate": {**EASY_PLANTING, "n_subjects": 3, "resolution_mm": 6.0}},
        "encoding": {"models": ["ridge"], "n_folds": 3, "map_stories": ["lucy"], "sparse_null_shifts": 0},
        "networks": {"atlases": ["smith10", "yeo7"]},
        "out": str(base / "result"),
    })
    return run_pipeline(config)


def test_planted_links_are_recovered_on_the_held_out_story(two_story_result):
    result = two_story_result
    summary = result.summary
    scheme = summary["encoding_scheme"]
    assert scheme["dictionary_stories"] == ["pieman"] and scheme["map_stories"] == ["lucy"]
    assert json.loads((result.path / "networks/minilm/test.json").read_text())["stories"] == ["lucy"]
    rec = result.recovery()
    assert rec["precision"] >= 0.9 and rec["recall"] >= 0.9, rec
    assert rec["tp"] >= 6  # every planted link, on the story the dictionary never saw


def test_methods_paragraph_names_every_story_and_their_volumes(two_story_result):
    from napari_brainorg.io.results import ResultFolder
    from napari_brainorg.report import methods_paragraph

    text, _ = methods_paragraph(ResultFolder(two_story_result.path))
    assert "the stories &ldquo;pieman&rdquo; and &ldquo;lucy&rdquo;" in text and " were presented" in text
    assert f"each story's volumes ({2 * N_VOLUMES} in all, TR {TR} s)" in text


def test_encoding_is_scored_leave_one_story_out(two_story_result):
    result = two_story_result
    loso = result.summary["encoding_scheme"]["leave_one_story_out"]
    assert loso["cv"] == "leave-one-story-out" and loso["folds"] == list(STORIES)
    arrays = np.load(result.path / "encoding/minilm/arrays.npz")
    per_story = arrays["r2_loso_stories"]  # (story, voxel): trained on the other story
    assert per_story.shape == (2, arrays["r2_cv"].shape[0])
    assert arrays["subject_r2_loso"].shape == (3, 2, per_story.shape[1])
    # held-out R2 is above chance where signal was planted, not elsewhere
    import nibabel as nib

    signal = np.asarray(nib.load(result.path / "simulated/signal_mask.nii.gz").dataobj) > 0
    mask = np.asarray(result.mask_img().dataobj) > 0
    inside = signal[mask]
    for story, r, r2 in zip(STORIES, arrays["r_loso_stories"], per_story):
        # r on a story the ridge never saw: the planted voxels, and chance elsewhere
        assert np.median(r[inside]) > 0.1 and abs(np.median(r[~inside])) < 0.03, story
        assert np.median(r2[inside]) > np.median(r2[~inside]), story
    table = result.summary["results"]["minilm"]["r2_loso"]
    assert set(table["per_story_median"]) == set(STORIES)
    assert result.map_path(name="r2_loso").name.endswith("_desc-minilmR2Loso_statmap.nii.gz")
    assert "task-" in result.map_path(name="r2_loso").name  # the stories, joined
    provenance = result.provenance()
    assert provenance["encoding_scheme"]["leave_one_story_out"]["folds"] == list(STORIES)
    assert [s["story"] for s in provenance["stories"]] == list(STORIES)


def test_each_story_keeps_its_own_volumes_and_views_still_work(two_story_result):
    from napari_brainorg.features.nuisance import nuisance_regressors
    from napari_brainorg.io.stimuli import read_story
    from napari_brainorg.report import build_report

    result = two_story_result
    assert result.stories() == [{"story": "pieman", "n_volumes": N_VOLUMES, "tr": TR, "first_volume": 0},
                                {"story": "lucy", "n_volumes": N_VOLUMES, "tr": TR, "first_volume": N_VOLUMES}]
    assert result.story_boundaries() == [N_VOLUMES] and result.n_volumes == 2 * N_VOLUMES
    words = result.words_table()
    lucy = words[words["story"] == "lucy"]
    assert lucy["volume"].min() >= N_VOLUMES and (words[words["story"] == "pieman"]["volume"] < N_VOLUMES).all()
    # the HRF never carries one story into the next: lucy's confounds are those of lucy alone
    alone = nuisance_regressors(read_story(result.config()["stories"][1]["path"]), TR, N_VOLUMES)
    stacked = result.nuisance_table().set_index("volume")
    np.testing.assert_allclose(stacked.loc[N_VOLUMES:, "word_rate"].to_numpy(), alone["word_rate"].to_numpy(),
                               atol=1e-6)
    assert np.load(result.path / "atoms/minilm/atoms.npy").shape == (2 * N_VOLUMES, 16)
    assert len(result.words_per_volume()) == 2 * N_VOLUMES
    assert result.an_index().shape[0] == np.load(result.path / "atoms/minilm/codes.npz")["shape"][1]
    assert (result.path / "simulated/sub-01_task-lucy_sim_bold.nii.gz").is_file()
    report = build_report(result)
    assert "pieman (150 volumes), lucy (150 volumes)" in report and "leave-one-story-out" in report


# ------------------------------------------------------------------ per-run pieces
RUNS = [("a", 60, 1.5), ("b", 80, 2.0)]


def test_per_run_filtering_equals_each_run_filtered_alone(rng):
    from napari_brainorg.encoding.preprocessing import drift_basis, highpass

    Y = rng.standard_normal((140, 5)) + np.linspace(0, 5, 140)[:, None]
    out = highpass_runs(Y, RUNS, 60.0)
    np.testing.assert_allclose(out[:60], highpass(Y[:60], 1.5, 60.0))
    np.testing.assert_allclose(out[60:], highpass(Y[60:], 2.0, 60.0))
    np.testing.assert_allclose(highpass_runs(Y[:60], RUNS[:1], 60.0), highpass(Y[:60], 1.5, 60.0))
    Q = run_drift_basis(RUNS, 60.0)
    np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-10)
    assert not Q[:60, drift_basis(60, 1.5, 60.0).shape[1]:].any()  # block diagonal
    delayed = make_delays_runs(np.ones((140, 1)), RUNS, (0, 2))
    assert delayed[60:62, 1].sum() == 0 and delayed[62, 1] == 1  # a delay restarts with each run
    assert list(run_rows(RUNS, ["b"])) == list(range(60, 140))
    (train, test), _ = story_folds(RUNS)
    assert list(test) == list(range(60)) and list(train) == list(range(60, 140))


def test_leave_one_story_out_scores_a_voxel_driven_by_the_atoms(rng):
    atoms = rng.standard_normal((140, 3))
    Y = np.column_stack([atoms @ [1.0, -0.5, 0.0] + 0.5 * rng.standard_normal(140), rng.standard_normal(140)])
    scores = leave_one_story_out(atoms, Y, RUNS, alphas=[0.1, 10.0, 1000.0], highpass_cutoff=None, gap=2)
    assert scores.stories == ["a", "b"] and scores.r2.shape == (2, 2)
    assert (scores.r2[:, 0] > 0.6).all() and (scores.r2[:, 1] < 0.05).all()
    with pytest.raises(Exception, match="at least 2 stories"):
        leave_one_story_out(atoms[:60], Y[:60], RUNS[:1], alphas=[1.0])


def test_simulator_plants_one_truth_in_several_stories_without_crossing_them(rng, tmp_path):
    from napari_brainorg.simulate import SimulationPlan, simulate_fmri, write_simulation

    runs = [("a", 50, 1.5), ("b", 60, 2.0)]
    sources = rng.standard_normal((110, 3))
    plan = SimulationPlan(links={1: ["auditory"]}, n_subjects=1, resolution_mm=8.0, seed=3,
                          fluctuation_atlases=[], truth_atlases=["smith10"])
    sim = simulate_fmri(sources, plan, tr=1.5, runs=runs, keep_components=True)
    assert [r["story"] for r in sim.truth["runs"]] == ["a", "b"] and sim.truth["runs"][1]["first_volume"] == 50
    other = sources.copy()
    other[:50] = rng.standard_normal((50, 3))  # another first story, the same second one
    again = simulate_fmri(other, plan, tr=1.5, runs=runs, keep_components=True)
    sig = sim.signal_voxels
    b1 = sim.components[0]["signal"][50:, sig]
    b2 = again.components[0]["signal"][50:, sig]
    # story b's signal does not depend on story a (only the overall scale of c[v] may)
    r = [np.corrcoef(x, y)[0, 1] for x, y in zip(b1.T[:50], b2.T[:50])]
    assert np.min(r) > 0.9999
    drift = sim.components[0]["drift"]
    assert abs(np.corrcoef(drift[:50, 0], drift[50:100, 0])[0, 1]) < 0.99  # each run its own drifts
    # each run's AR noise starts afresh: consecutive volumes within a run share ~rho of their
    # noise field, the last volume of story a and the first of story b nothing
    noise = sim.components[0]["noise"].astype(np.float64)
    within = [np.corrcoef(noise[t], noise[t + 1])[0, 1] for t in (10, 30, 48, 50, 80)]
    assert min(within) > 0.25
    assert abs(np.corrcoef(noise[49], noise[50])[0, 1]) < 0.1
    written = {p.name for p in write_simulation(sim, tmp_path)}
    assert {"sub-01_task-a_sim_bold.nii.gz", "sub-01_task-b_sim_bold.nii.gz"} <= written
    import nibabel as nib

    img = nib.load(tmp_path / "sub-01_task-b_sim_bold.nii.gz")
    assert img.shape[3] == 60 and img.header.get_zooms()[3] == 2.0


def test_rerun_of_a_multi_story_study_reuses_every_step(two_story_result):
    from napari_brainorg.pipeline import make_config, run_pipeline

    files = [two_story_result.path / rel for rel in (
        "atoms/minilm/atoms.npy", "atoms/minilm/top_words.tsv", "features/minilm/lucy/an_responses.npy",
        "simulated/sub-02_task-lucy_sim_bold.nii.gz")] + [two_story_result.map_path(name="r2_loso_stories")]
    before = [f.stat().st_mtime_ns for f in files]
    again = run_pipeline(make_config(two_story_result.config()))
    assert [f.stat().st_mtime_ns for f in files] == before
    assert again.recovery()["precision"] == two_story_result.recovery()["precision"]


def test_own_data_in_several_stories_runs_from_the_command_line(tmp_path, capsys):
    """`brainorg run` on a tiny study on disk: two stories, a NIfTI run per subject and
    story (random numbers, not brain data), fmri.images as a mapping story -> runs."""
    import sys
    from pathlib import Path

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    import _tiny_study as tiny

    from napari_brainorg.cli import main
    from napari_brainorg.io.results import ResultFolder

    tiny.write_story(tmp_path / "one.tsv", tiny.story_rows())
    tiny.write_story(tmp_path / "two.tsv", tiny.story_rows(shift=3.0))
    for s in (1, 2):
        tiny.write_run(tmp_path / f"sub-0{s}_task-one_bold.nii.gz", s)
        tiny.write_run(tmp_path / f"sub-0{s}_task-two_bold.nii.gz", 10 + s, n_volumes=tiny.N_VOLUMES + 10)
    tiny.write_mask(tmp_path / "mask.nii.gz")
    cfg = tiny.config_dict()
    cfg.pop("story")
    cfg["stories"] = [{"path": "one.tsv", "tr": tiny.TR, "n_volumes": tiny.N_VOLUMES},
                      {"path": "two.tsv", "tr": tiny.TR, "n_volumes": tiny.N_VOLUMES + 10}]
    cfg["fmri"] = {"images": {"one": ["sub-01_task-one_bold.nii.gz", "sub-02_task-one_bold.nii.gz"],
                              "two": ["sub-01_task-two_bold.nii.gz", "sub-02_task-two_bold.nii.gz"]},
                   "subjects": ["sub-01", "sub-02"], "mask": "mask.nii.gz"}
    cfg["networks"] = {"atlases": ["smith10"], "n_permutations": 20}
    cfg["encoding"].update({"gap": 1, "models": ["ridge"]})
    tiny.write_config(tmp_path / "study.yaml", cfg)
    # a run of the wrong length is refused before anything runs, naming the story's key
    bad = dict(cfg, stories=[cfg["stories"][0], {**cfg["stories"][1], "n_volumes": tiny.N_VOLUMES}])
    tiny.write_config(tmp_path / "bad.yaml", bad)
    assert main(["run", str(tmp_path / "bad.yaml"), "--quiet"]) == 2 and not (tmp_path / "result").exists()
    assert "fmri.images.two[0]" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "study.yaml"), "--quiet"]) == 0
    result = ResultFolder(tmp_path / "result")
    assert [s["story"] for s in result.stories()] == ["one", "two"] and result.n_volumes == 2 * tiny.N_VOLUMES + 10
    arrays = np.load(result.path / "encoding/minilm/arrays.npz")
    assert arrays["r2_loso_stories"].shape[0] == 2
    assert yaml.safe_load((result.path / "config.yaml").read_text())["fmri"]["images"]["two"][1].endswith(
        "sub-02_task-two_bold.nii.gz")


def test_stacking_runs_refuses_stories_that_do_not_match(rng):
    from napari_brainorg.errors import FMRIInputError
    from napari_brainorg.io.fmri import FMRIData, concat_story_runs

    def regions(subjects, n_volumes, n_regions=3):
        return FMRIData(data=[rng.standard_normal((n_volumes, n_regions)) for _ in subjects], subjects=subjects,
                        kind="regions", mask_img=None, region_names=[f"r{i}" for i in range(n_regions)], tr=1.5,
                        sources=[f"{s}.tsv" for s in subjects])

    both = concat_story_runs({"a": regions(["s1", "s2"], 20), "b": regions(["s1", "s2"], 30)})
    assert both.runs == [("a", 20, 1.5), ("b", 30, 1.5)] and both.data[1].shape == (50, 3)
    with pytest.raises(FMRIInputError, match=r"story 'b' has the subjects \['s2', 's1'\]"):
        concat_story_runs({"a": regions(["s1", "s2"], 20), "b": regions(["s2", "s1"], 30)})
    with pytest.raises(FMRIInputError, match="story 'b' has 4 regions"):
        concat_story_runs({"a": regions(["s1"], 20), "b": regions(["s1"], 30, n_regions=4)})
