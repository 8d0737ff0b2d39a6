"""The HTML report: a self-contained view of a result folder, checked in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from napari_brainorg.cli import main
from napari_brainorg.io.results import ResultFolder
from napari_brainorg.report import build_report, methods_paragraph, write_report

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
