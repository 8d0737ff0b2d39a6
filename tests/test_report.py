"""The HTML report: a self-contained view of a result folder, checked in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_brainorg.cli import main
from napari_brainorg.io.results import ResultFolder
from napari_brainorg.report import build_report, methods_paragraph

pytestmark = pytest.mark.slow


def _folder_state(path: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file() and p.name != "report.html"}


def test_every_run_writes_report_warnings_and_dataset_description(quick_result):
    path = quick_result.path
    assert (path / "report.html").is_file()
    desc = json.loads((path / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "napari-brainorg"
    warned = json.loads((path / "warnings.json").read_text())
    # the bundled pieman alignment has 3 words without times: the reader fills them and warns
    assert any(w["category"] == "FilledTimesWarning" for w in warned), warned
    assert "FilledTimesWarning" in (path / "report.html").read_text()


def test_report_is_a_self_contained_view_of_the_folder(quick_result, tmp_path):
    path = quick_result.path
    before = _folder_state(path)
    out = tmp_path / "copy.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    assert _folder_state(path) == before  # nothing refitted or rewritten
    text = out.read_text()
    # nothing to fetch: every image is inline, no external script, style or font
    assert not re.search(r'(src|href)\s*=\s*"(https?:|//)', text)
    assert "<link" not in text
    res = ResultFolder(path)
    k = res.atom_timecourses().shape[1]
    assert text.count('class="atom"') == k  # one browsable panel per atom
    assert "SIMULATED" in text and "arXiv:2410.19542" in text
    # a report built from a copy of the folder is the same document (it depends on files only)
    copy = tmp_path / "copy" / Path(path).name
    shutil.copytree(path, copy)
    original = str(Path(path).resolve())
    assert build_report(copy).replace(str(copy.resolve()), "X").replace(original, "X") == \
        build_report(path).replace(original, "X")


def test_methods_paragraph_follows_the_configuration(quick_result):
    res = ResultFolder(quick_result.path)
    cfg = res.config()
    text, cites = methods_paragraph(res)
    assert f"k = {cfg['atoms']['n_atoms']}" in text
    assert "the story &ldquo;pieman&rdquo;" in text and f"the {cfg['story']['n_volumes']} volumes (TR 1.5 s)" in text
    assert f"{cfg['encoding']['n_folds']} contiguous folds" in text
    assert f"|z| &gt; {cfg['networks']['threshold']}" in text
    assert f"q &lt; {cfg['networks']['alpha']}" in text
    assert f"at least {cfg['networks']['min_network_relative_marginal']} of the best atom's correlation" in text
    assert "sun2024" in cites and "nilearn" in cites and "smith10" in cites  # the paper, nilearn, the atlas
    # the demo centres the word activations, which the paper does not: the methods say which was used
    assert cfg["features"]["center_words"] and "centred word activations" in text


def test_methods_paragraph_says_when_activations_are_the_papers_raw_ones():
    from napari_brainorg.report.methods import _feature_sentences

    raw, _ = _feature_sentences({"story": {"n_volumes": 300, "tr": 1.5}, "features": {"center_words": False}}, {})
    centred, _ = _feature_sentences({"story": {"n_volumes": 300, "tr": 1.5}, "features": {"center_words": True}}, {})
    assert "as in the paper (not centred" in " ".join(raw) and "centred" not in " ".join(raw).replace("not centred", "")
    assert "centred word activations" in " ".join(centred)


def test_report_command_names_a_folder_that_is_not_a_result(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "summary.json" in err


# -------------------------------------------------------------------- in Chromium

def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_bin = shutil.which("chromedriver")
    if not binary or not driver_bin:
        pytest.skip("headless Chromium is not installed (scripts/install.sh installs chromium and chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_bin), options=opts)


def test_report_renders_offline_in_chromium(quick_result, artifacts_dir):
    report = Path(quick_result.path) / "report.html"
    driver = _chromium()
    try:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        driver.get(report.resolve().as_uri())
        assert driver.title.startswith("napari-brainorg report")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        assert len(images) >= 5, images
        broken = [i for i in images if not (i[1] and i[2] > 0 and i[3] > 0)]
        assert not broken, broken
        # the visible figures really are laid out (not zero-size)
        shown = driver.execute_script(
            "return Array.from(document.images).filter(i => i.offsetParent !== null).map(i => i.width);")
        assert shown and min(shown) > 0
        # the atom selector opens on the first atom linked to a network; "next" shows the following atom
        viewer = driver.find_element("css selector", ".viewer")
        visible = lambda: [e.get_attribute("data-atom")  # noqa: E731
                           for e in viewer.find_elements("css selector", ".atom:not([hidden])")]
        options = driver.execute_script(
            "const s = arguments[0].querySelector('select'); return [s.selectedIndex, "
            "Array.from(s.options).map(o => o.value)];", viewer)
        index, values = options
        assert visible() == [values[index]]
        linked = json.loads((Path(quick_result.path) / "recovery.json").read_text())["tp"] > 0
        assert not linked or "linked" in driver.execute_script(
            "return arguments[0].querySelector('select').selectedOptions[0].text;", viewer)
        viewer.find_element("css selector", "button.next").click()
        assert visible() == [values[min(index + 1, len(values) - 1)]]
        viewer.find_element("css selector", "button.prev").click()
        assert visible() == [values[index]]
        # a full-page screenshot to look at
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 12000))
        driver.execute_script("window.scrollTo(0, 0);")
        driver.save_screenshot(str(artifacts_dir / "report.png"))
        logs = driver.get_log("browser")
        errors = [e for e in logs if e.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_report_shows_top_words_when_the_run_saved_them(quick_result, tmp_path):
    import pandas as pd

    copy = tmp_path / "result"
    shutil.copytree(quick_result.path, copy)
    (copy / "atoms/minilm/top_words.tsv").unlink(missing_ok=True)
    assert "top words:" not in build_report(copy)  # the atom viewer's line (step timings name the step too)
    # atoms/<model>/top_words.tsv as the napari side writes it (one row per atom x direction x rank)
    pd.DataFrame({"atom": [0, 0, 0, 1], "direction": ["activate", "activate", "suppress", "activate"],
                  "rank": [1, 0, 0, 0], "word": ["pie", "man", "quiet", "story"],
                  "response": [2.0, 2.5, -1.0, 1.5], "onset": [1.0, 2.0, 3.0, 4.0],
                  "context": ["a", "b", "c", "d"]}).to_csv(copy / "atoms/minilm/top_words.tsv", sep="\t", index=False)
    text = build_report(copy)
    assert "top words: man, pie" in text  # by rank, the activating words only
    assert "quiet" not in text.split('data-atom="0"')[1].split('data-atom="1"')[0]


def test_a_warning_shown_several_times_is_recorded_once_with_its_count():
    import warnings

    from napari_brainorg.report import record_warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with record_warnings() as caught:
            for _ in range(3):
                warnings.warn("atlas resampled", UserWarning, stacklevel=1)
            warnings.warn("another", RuntimeWarning, stacklevel=1)
    assert [(w["category"], w["message"], w["count"]) for w in caught] == [
        ("UserWarning", "atlas resampled", 3), ("RuntimeWarning", "another", 1)]


# -------------------------------------------------------------------- the first screen and the maps

def _answer(text: str) -> str:
    """The report's first screen: everything before the data section."""
    assert text.index("id='answer'") < text.index("id='data'")
    return text[:text.index("id='data'")]


def _visible(text: str) -> str:
    """The document without its inline images (base64 can hold any character sequence)."""
    return re.sub(r'src="data:[^"]*"', 'src=""', text)


def _linked_copy(src: Path, dst: Path) -> Path:
    """A copy of a result folder made of hard links (a file is replaced, never written in place)."""
    import os

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)
    return dst


def _replace(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text)


def test_first_screen_states_the_answer(quick_result):
    import html as html_lib

    text = (Path(quick_result.path) / "report.html").read_text()
    first = _answer(text)
    info = quick_result.summary["results"]["minilm"]
    rs, chance, ceiling = info["r_cv_subjects"], info["r_cv_chance"], info["noise_ceiling"]
    assert "held-out r" in first.lower() and f"{rs['mean']:.3f}" in first
    assert f"[95% CI {rs['ci95'][0]:.3f}, {rs['ci95'][1]:.3f}]" in first  # over subjects
    assert "chance" in first and f"{chance['chance']:.3f}" in first
    assert "noise ceiling" in first and f"{ceiling['median']:.3f}" in first
    for finding in quick_result.summary["verdict"]:  # every verdict sentence, in plain words
        assert html_lib.escape(finding["text"]) in first, finding["text"]
    n_links = sum(info["n_associations"].values())
    assert f"{n_links} declared network links" in first
    strongest = pd_links(quick_result.path).iloc[0]
    assert f"{strongest['atlas']}: {strongest['network']}" in first and f"{strongest['statistic']:.2f}" in first
    # the run's dates, and no dict or unrounded float in what a reader sees
    assert "Run finished" in text and "report built" in text
    visible = _visible(text)
    assert "{'" not in visible and not re.search(r"\d\.\d{7,}", visible)
    # FSL's MNI152 (Grabner et al. 2006) is the template the maps and atlases are on
    assert "Grabner" in text and "Fonov" not in text
    # one model: no comparison figure (its consistency-against-diversity panel would be empty)
    assert 'alt="models side by side"' not in text


def pd_links(path):
    import pandas as pd

    tables = [ResultFolder(path).associations(part=p) for p in ("activated", "deactivated")]
    links = pd.concat([t[t["associated"].astype(bool)] for t in tables], ignore_index=True)
    return links.reindex(links["statistic"].abs().sort_values(ascending=False, kind="stable").index)


def test_maps_on_the_template_with_peak_tables_in_mni_mm(quick_result):
    import nibabel as nib

    text = (Path(quick_result.path) / "report.html").read_text()
    # the held-out r map and each linked atom (at most 6) on the template, each with its peak table
    linked = set(pd_links(quick_result.path)["atom"])
    n_maps = text.count('class="statmap"')
    assert n_maps == 1 + min(len(linked), 6) + 1  # r map, atoms, mask
    assert text.count('class="peaks"') == 1 + min(len(linked), 6)
    assert "<th>x</th><th>y</th><th>z</th>" in text and "MNI coordinates in mm" in text
    # the r map's cut and first peak are its largest voxel, in MNI mm
    img = nib.load(quick_result.map_path(name="r_cv"))
    data = np.nan_to_num(np.asarray(img.dataobj, float))
    peak = (img.affine @ np.append(np.unravel_index(data.argmax(), data.shape), 1.0))[:3]
    x, y, z = (int(round(v)) for v in peak)
    assert f"cuts through the peak at x = {x}, y = {y}, z = {z} mm (MNI)" in text
    peaks = text.split('class="peaks"')[1].split("</table>")[0]
    assert re.search(rf"<td class='n'>{x}</td><td class='n'>{y}</td><td class='n'>{z}</td>", peaks)
    # the time course of each shown atom, and the analysis mask
    assert text.count('class="timecourse"') == min(len(linked), 6)
    mask_rel = str(quick_result.map_path(name="mask").relative_to(quick_result.path))
    assert mask_rel.startswith("encoding/minilm/") and mask_rel.endswith("_desc-minilm_mask.nii.gz")
    assert "Analysis mask" in text and mask_rel in text
    # an atom is described by more than one word
    assert "words that drive it on average:" in text


def test_report_has_no_machine_path(quick_result, tmp_path):
    text = build_report(quick_result.path)
    visible = _visible(text)
    for forbidden in (str(Path(quick_result.path).resolve()), str(Path(quick_result.path)), "/work/", "/tmp/",
                      str(Path.home()) + "/"):
        assert forbidden not in visible, forbidden
    assert "out: ." in visible  # the configuration names the folder relative to itself


def test_baselines_and_verdict_warnings_on_the_first_screen(quick_result, tmp_path):
    import html as html_lib

    from napari_brainorg.analyses.verdict import verdict

    copy = _linked_copy(Path(quick_result.path), tmp_path / "result")
    summary = json.loads((copy / "summary.json").read_text())
    rows = []
    for baseline, kind, diff, p in (("minilm_nuisance", "nuisance", 0.026, 0.0039),
                                    ("minilm_untrained", "untrained", 0.002, 0.31)):
        rows.append({"model": "minilm", "baseline": baseline, "baseline_kind": kind,
                     "metric": "median r_cv above chance", "chance_corrected": True, "model_value": 0.038,
                     "baseline_value": 0.038 - diff, "difference": diff, "ci_low": diff - 0.006,
                     "ci_high": diff + 0.006, "p": p, "n_subjects": 8, "test": "exact sign-flip over subjects",
                     "model_associations": 7, "baseline_associations": 2})
    summary["baseline_comparison"] = rows
    summary["verdict"] = verdict(summary)
    _replace(copy / "summary.json", json.dumps(summary))
    warned = [f["text"] for f in summary["verdict"] if f["severity"] == "warning"]
    assert warned  # the untrained twin is not beaten
    records = json.loads((copy / "warnings.json").read_text())
    records.append({"category": "VerdictWarning", "message": "a plain-words warning the summary does not hold",
                    "source": "run.py:1", "count": 1})
    _replace(copy / "warnings.json", json.dumps(records))
    first = _answer(build_report(copy))
    assert "minilm_nuisance" in first and "minilm_untrained" in first and "class='fit baselines'" in first
    assert "+0.026 [95% CI +0.020, +0.032]" in first
    for sentence in warned + ["a plain-words warning the summary does not hold"]:
        assert re.search(r"<li class='finding-warn'><span class='mark'>[^<]*</span> " + re.escape(
            html_lib.escape(sentence)), first), sentence


def test_region_data_report(quick_result, tmp_path):
    """Region time series (no NIfTI maps) render: regions listed instead of maps. The tables
    are written as an earlier version did (``regions.csv``), which is read as before."""
    import pandas as pd

    copy = _linked_copy(Path(quick_result.path), tmp_path / "result")
    enc = copy / "encoding/minilm"
    for path in enc.glob("*.nii.gz"):
        path.unlink()
    names = ["auditory", "default mode", "cerebellum"]
    pd.DataFrame({"region": names, "r_cv": [0.2, 0.05, 0.1], "r_cv_ci_low": [0.15, 0.0, 0.06],
                  "r_cv_ci_high": [0.25, 0.1, 0.14], "noise_ceiling": [0.4, 0.3, 0.35],
                  "q_cv": [0.001, 0.3, 0.02]}).to_csv(enc / "regions.csv", index=False)
    k = np.load(copy / "atoms/minilm/atoms.npy").shape[1]
    z = pd.DataFrame(np.arange(3 * k, dtype=float).reshape(k, 3).T, columns=[f"atom_{i}" for i in range(k)])
    z.insert(0, "region", names)
    z.to_csv(enc / "atom_maps_z.csv", index=False)
    summary = json.loads((copy / "summary.json").read_text())
    summary["fmri"]["kind"] = "regions"
    _replace(copy / "summary.json", json.dumps(summary))
    text = build_report(copy)
    first = _answer(text)
    assert "median over regions" in first and "held-out r" in first.lower()
    assert "<h4>Regions</h4>" in text and "auditory" in text.split("<h4>Regions</h4>")[1]
    assert 'class="statmap"' not in text and "no voxel maps" in text
    assert text.count('class="timecourse"') >= 1  # the linked atoms' time courses still show


def test_first_screen_fits_a_laptop_in_chromium(quick_result, artifacts_dir):
    """At 1366 x 768 the first screen shows the held-out r, chance, ceiling and links; no table of the
    answer hides columns off-screen."""
    report = Path(quick_result.path) / "report.html"
    driver = _chromium()
    try:
        driver.set_window_size(1366, 768)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False})
        driver.get(report.resolve().as_uri())
        bottom = driver.execute_script(
            "return Array.from(document.querySelectorAll('#answer .tile, #answer .linkcount'))"
            ".map(e => e.getBoundingClientRect().bottom);")
        assert bottom and max(bottom) <= 768, bottom
        hidden = driver.execute_script(
            "return Array.from(document.querySelectorAll('#answer table'))"
            ".filter(t => t.scrollWidth > t.clientWidth + 1 || t.getBoundingClientRect().right > 1366).length;")
        assert hidden == 0
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 1366
        driver.save_screenshot(str(artifacts_dir / "report_first_screen.png"))
    finally:
        driver.quit()
