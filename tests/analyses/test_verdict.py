"""The run's answer in sentences, from the numbers a summary holds."""

from __future__ import annotations

from napari_brainorg.analyses.verdict import verdict


def _row(baseline, kind, difference, p, corrected=True, metric="median r_cv above chance"):
    return {"model": "minilm", "baseline": baseline, "baseline_kind": kind, "metric": metric,
            "chance_corrected": corrected, "difference": difference, "ci_low": difference - 0.01,
            "ci_high": difference + 0.01, "p": p, "n_subjects": 8}


def _summary(rows=(), results=None, baseline_results=None):
    return {"results": results if results is not None else {"minilm": {"n_associations": {"activated": 2,
                                                                                          "deactivated": 1}}},
            "baseline_results": baseline_results or {}, "baseline_comparison": list(rows)}


def _by_topic(findings, topic):
    (found,) = [f for f in findings if f["topic"] == topic]
    return found


def test_a_model_not_ahead_of_the_nuisance_regressors_is_said_as_a_warning():
    rows = [_row("nuisance", "nuisance", 0.003, 0.22), _row("nuisance", "nuisance", 0.05, 0.001, False, "median r_cv")]
    found = _by_topic(verdict(_summary(rows)), "vs nuisance")
    # the chance-corrected comparison decides, not the raw one that favours richer feature sets
    assert found["severity"] == "warning" and "not ahead" in found["text"] and "word rate" in found["text"]
    assert "+0.003" in found["text"] and "p = 0.22" in found["text"]
    ahead = _by_topic(verdict(_summary([_row("nuisance", "nuisance", 0.04, 0.004)])), "vs nuisance")
    assert ahead["severity"] == "info" and "is ahead of" in ahead["text"]
    # a lead in the wrong direction is no lead, whatever its p
    behind = _by_topic(verdict(_summary([_row("nuisance", "nuisance", -0.04, 0.001)])), "vs nuisance")
    assert behind["severity"] == "warning"


def test_without_chance_levels_the_raw_held_out_r_is_used_and_named():
    rows = [_row("minilm-untrained", "untrained", 0.02, 0.01, False, "median r_cv")]
    found = _by_topic(verdict(_summary(rows)), "vs minilm-untrained")
    assert found["severity"] == "info" and "chance levels not measured" in found["text"]


def test_atoms_that_add_nothing_beyond_the_nuisance_regressors_are_said():
    def entry(mean, p):
        test = {"mean": mean, "ci95": [mean - 0.03, mean + 0.03], "p": p, "n_subjects": 27}
        return {"vs_nuisance_in_model": {"delta_r": test, "delta_r2": {**test, "mean": mean / 10},
                                         "delta_r_above_chance": {**test, "chance": 0.004}},
                "n_associations": {"activated": 0, "deactivated": 0}}

    found = _by_topic(verdict(_summary(results={"minilm": entry(0.027, 0.09)})), "beyond nuisance")
    assert found["severity"] == "warning" and "add nothing detectable" in found["text"]
    assert "+0.027" in found["text"] and "shifted atoms" in found["text"]
    found = _by_topic(verdict(_summary(results={"minilm": entry(0.05, 0.001)})), "beyond nuisance")
    assert found["severity"] == "info"


def test_layers_that_beat_the_atoms_and_story_free_links_are_warnings():
    layers = {"n_layers": 3, "n_ahead_of_atoms": 2, "layers": [
        {"layer": 0, "difference": -0.01, "ci95": [-0.02, 0.0], "p": 0.9, "q": 0.9},
        {"layer": 1, "difference": 0.02, "ci95": [0.01, 0.03], "p": 0.004, "q": 0.012},
        {"layer": 2, "difference": 0.01, "ci95": [-0.01, 0.03], "p": 0.2, "q": 0.3}]}
    results = {"minilm": {"layers_vs_atoms": layers, "n_associations": {"activated": 1, "deactivated": 0}}}
    baselines = {"minilm-phase-randomised": {"baseline": "phase_randomised",
                                             "n_associations": {"activated": 1, "deactivated": 1}}}
    findings = verdict(_summary(results=results, baseline_results=baselines))
    layer = _by_topic(findings, "layers vs atoms")
    assert layer["severity"] == "warning" and "1 of 3 single layers" in layer["text"] and "layer 1" in layer["text"]
    links = _by_topic(findings, "network links")
    assert links["severity"] == "warning" and "story-free" in links["text"]
    # more links than the story-free baseline: said, not warned
    results["minilm"]["n_associations"] = {"activated": 5, "deactivated": 2}
    assert _by_topic(verdict(_summary(results=results, baseline_results=baselines)),
                     "network links")["severity"] == "info"
    # no link at all is a null result, said as such
    results["minilm"]["n_associations"] = {"activated": 0, "deactivated": 0}
    none = _by_topic(verdict(_summary(results=results, baseline_results=baselines)), "network links")
    assert none["severity"] == "warning" and "null result" in none["text"]


def test_a_null_result_says_what_the_design_could_find():
    results = {"minilm": {"n_associations": {"activated": 0, "deactivated": 0}}}
    text = ("With 8 subjects and 300 volumes, this design detects (power 80%) a network driver explaining "
            "R2 >= 0.012 of each network voxel's variance (median over 12 atoms x 17 networks; 10-90%: "
            "0.008-0.030; best 0.005); a weaker driver can go undetected.")
    summary = _summary(results=results)
    summary["sensitivity"] = {"minilm": {"median": 0.012, "text": text}}
    none = _by_topic(verdict(summary), "network links")
    assert "null result" in none["text"] and text in none["text"] and none["detectable_r2"] == 0.012
    # with links, the statement is kept for the networks without one
    results["minilm"]["n_associations"] = {"activated": 2, "deactivated": 0}
    some = _by_topic(verdict(summary), "network links")
    assert "Where no link was declared: with 8 subjects" in some["text"]
    # links declared beside a statement that nothing is declarable: the verdict does not
    # contradict what the test found
    cannot = "This design cannot declare any link: with 2560 tests in the FDR family the null draws ..."
    summary["sensitivity"] = {"minilm": {"median": None, "text": cannot}}
    declared = _by_topic(verdict(summary), "network links")
    assert "declared 2 network links" in declared["text"] and "cannot declare" not in declared["text"]
    summary["sensitivity"]["minilm"]["text"] = text
    # a folder without the measurement: the null result is said as before
    del summary["sensitivity"]
    results["minilm"]["n_associations"] = {"activated": 0, "deactivated": 0}
    plain = _by_topic(verdict(summary), "network links")
    assert "detectable_r2" not in plain and plain["text"].endswith("design did not detect one.")
