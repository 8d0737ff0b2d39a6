"""The verdict on region data a user could have: said when the nuisance regressors explain
what the model explains, and no lead declared when the subjects' lock to the story is broken.

The region time series are SIMULATED here (word rate through the HRF, plus autocorrelated
noise), so the test knows the answer; the run reads them as a user's region tables.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from napari_brainorg.cli import main
from napari_brainorg.io.results import ResultFolder

pytestmark = pytest.mark.slow

N_VOLUMES, TR, N_SUBJECTS, REGIONS = 300, 1.5, 8, ["auditory", "language", "motor", "visual"]


def _ar1(rng, n, p, phi=0.5):
    e = rng.standard_normal((n, p))
    for t in range(1, n):
        e[t] += phi * e[t - 1]
    return e


def _word_rate() -> np.ndarray:
    from napari_brainorg.features.nuisance import nuisance_regressors
    from napari_brainorg.io.stimuli import read_story

    rate = nuisance_regressors(read_story("pieman"), TR, N_VOLUMES)["word_rate"].to_numpy(np.float64)
    return (rate - rate.mean()) / rate.std()


def _study(base, name, shifts=None, signal=0.8, **encoding):
    """Region tables driven by the word rate (``shifts``: each subject's series rolled by its
    own offset, which breaks the lock to the story but keeps everything else)."""
    rng = np.random.default_rng(7)
    rate = _word_rate()
    paths = []
    for s in range(N_SUBJECTS):
        series = signal * np.outer(rate, [1.0, 0.8, 0.3, 0.0]) + _ar1(rng, N_VOLUMES, len(REGIONS))
        if shifts is not None:
            series = np.roll(series, int(shifts[s]), axis=0)
        path = base / f"{name}_sub-{s + 1:02d}_regions.tsv"
        pd.DataFrame(100 + series, columns=REGIONS).to_csv(path, sep="\t", index=False)
        paths.append(str(path))
    config = {"story": {"path": "pieman", "tr": TR, "n_volumes": N_VOLUMES},
              "features": {"models": ["minilm"], "baselines": ["nuisance", "phase_randomised"]},
              "atoms": {"n_atoms": 12, "max_iter": 30},
              "fmri": {"regions": paths},
              "encoding": {"chance_shifts": 10, **encoding},
              "networks": {"n_permutations": 500, "n_refine": 0},
              "out": str(base / f"{name}_result")}
    cfg = base / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["run", str(cfg), "--quiet"]) == 0
    out = base / f"{name}_result"
    return out, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("verdict")


def test_a_model_that_word_rate_explains_is_said_not_ahead_of_the_nuisance_regressors(base, capsys):
    out, summary = _study(base, "rate")
    topics = {(f["model"], f["topic"]): f for f in summary["verdict"]}
    nuisance = topics[("minilm", "vs nuisance")]
    assert nuisance["severity"] == "warning" and "not ahead" in nuisance["text"]
    # the story-locked signal itself is found: the nuisance regressors beat their own chance level
    row = next(r for r in summary["baseline_comparison"]
               if r["baseline"] == "nuisance" and r["metric"] == "median r_cv above chance")
    assert row["baseline_value"] > 0.1
    # said where the user looks: warnings.json, the console
    said = [w for w in json.loads((out / "warnings.json").read_text()) if w["category"] == "VerdictWarning"]
    assert any("not ahead of the nuisance regressors" in w["message"] for w in said)
    assert "not ahead of the nuisance regressors" in capsys.readouterr().out
    # the atoms fitted with the nuisance regressors: the gain per region with its CI
    regions = ResultFolder(out).region_table()
    for col in ("r_cv_nuisance_only", "delta_r_beyond_nuisance", "delta_r_beyond_nuisance_ci_low",
                "delta_r_beyond_nuisance_ci_high", "delta_r2_beyond_nuisance"):
        assert col in regions.columns, col
    assert (regions["delta_r_beyond_nuisance_ci_low"] <= regions["delta_r_beyond_nuisance"] + 1e-9).all()
    driven = regions.set_index("region").loc["auditory"]
    assert driven["r_cv_nuisance_only"] > 0.2


def test_broken_lock_declares_no_held_out_r_and_no_lead(base):
    shifts = np.random.default_rng(11).integers(60, 240, N_SUBJECTS)
    out, summary = _study(base, "shifted", shifts=shifts, n_permutations=100)
    regions = ResultFolder(out).region_table()
    # at most the FDR share of cells: with four regions, none
    assert (regions["q_cv"] >= 0.05).all(), regions[["region", "q_cv"]]
    assert "random effects" in summary["maps"]["minilm"]["held_out_group_test"]
    leads = [r for r in summary["baseline_comparison"] if r["chance_corrected"] and r["p"] < 0.05
             and r["difference"] > 0]
    assert not leads, leads
    findings = [f for f in summary["verdict"] if f["topic"].startswith("vs ")]
    assert findings and all(f["severity"] == "warning" for f in findings)
    # no link without the lock: a null result, said beside what this design could have found
    links = next(f for f in summary["verdict"] if f["model"] == "minilm" and f["topic"] == "network links")
    sensitivity = summary["sensitivity"]["minilm"]
    assert links["n_links"] == 0 and sensitivity["text"] in links["text"]
    # 500 draws and no further ones: p >= 1/501, above the 0.05 / 96 a single link of 12 atoms x 4
    # regions x 2 directions needs, so nothing was declarable, and the statement says so
    assert sensitivity["n_tests"] == 2 * 12 * len(REGIONS) and sensitivity["n_subjects"] == N_SUBJECTS
    assert sensitivity["median"] is None and sensitivity["n_undetectable"] == 12 * len(REGIONS)
    assert "cannot declare any link" in links["text"]
    # the atom maps shown are calibrated; the subjects' combination is kept beside them
    shown = pd.read_csv(out / "encoding/minilm/atom_maps_z.tsv", sep="\t").set_index("region")
    kept = pd.read_csv(out / "encoding/minilm/atom_maps_z_uncalibrated.tsv", sep="\t").set_index("region")
    assert shown.shape == kept.shape and not np.allclose(shown.to_numpy(), kept.to_numpy())
    assert "stimulus-calibrated" in summary["maps"]["minilm"]["shown"]
