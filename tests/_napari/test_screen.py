"""A 1366 x 768 screen: everything needed is on it, before and after a pipeline run, and the
event loop is never blocked while a model is switched or the pipeline runs.

Stalls are measured with a QTimer ticking every 20 ms: the longest gap between two ticks
is the longest time the GUI could not react. The figures are printed on every run (and
written to test-artifacts/stall.json) beside the 250 ms target; the test asserts that no
stall reaches 2 s (the work runs in threads), not the target, which is a speed figure.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtCore import QTimer  # noqa: E402

from napari_brainorg._napari import layers as L  # noqa: E402

pytestmark = pytest.mark.gui

#: The responsiveness target (a figure printed on every run, and measured by
#: benchmarks/bench_napari.py): no event-loop stall longer than this on an idle machine.
#: A timing target is not asserted here, as the house rule on speed targets says: on the
#: same idle 2-core machine one run of this test measured 170-350 ms after a pipeline run,
#: with Qt's own layout and painting of the docks taking most of it.
STALL_TARGET_MS = 250.0
#: What is asserted: the run and the loading of its result never block the event loop for
#: seconds, i.e. the work is in threads and only the layers are swapped in on the GUI thread.
FREEZE_LIMIT_MS = 2000.0


class StallMeter:
    """The longest gap (ms) between ticks of a 20 ms QTimer while it runs."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.longest = 0.0

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            gap = 1000.0 * (now - self.last)
            if gap > self.longest:
                self.longest, self.when = gap, self.label()
        self.last = now

    when = ""

    @staticmethod
    def label():
        return ""

    def __enter__(self):
        self.last = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()


def _visible_size(widget):
    """Width and height of the part of ``widget`` actually on screen (0 when hidden)."""
    if not widget.isVisible():
        return 0, 0
    rect = widget.visibleRegion().boundingRect()
    return rect.width(), rect.height()


def _check_fits(viewer, explorer, label, artifacts_dir):
    qt_viewer = viewer.window._qt_viewer
    window = viewer.window._qt_window
    assert window.width() <= 1366 and window.height() <= 768
    canvas_w, canvas_h = _visible_size(qt_viewer.canvas.native)
    assert canvas_w >= 500 and canvas_h >= 350, (label, canvas_w, canvas_h)
    slider_w, slider_h = _visible_size(qt_viewer.dims)
    assert slider_w >= 300 and slider_h >= 15, (label, "z slider", slider_w, slider_h)
    table = explorer.table
    row_h = table.verticalHeader().defaultSectionSize()
    rows_shown = _visible_size(table.viewport())[1] / row_h
    assert rows_shown >= 8, (label, "atom table rows", rows_shown)
    for plot in (explorer.timecourse, explorer.histogram):
        w, h = _visible_size(plot)
        assert w >= 250 and h >= 90, (label, type(plot).__name__, w, h)
    # the plots are drawn, not blank: their pixels vary
    for plot in (explorer.timecourse, explorer.histogram):
        img = plot.grab().toImage()
        ptr = img.constBits()
        ptr.setsize(img.sizeInBytes())
        pixels = np.frombuffer(ptr, np.uint8)
        assert pixels.std() > 5, (label, type(plot).__name__, "blank plot")
    window.grab().save(str(artifacts_dir / f"napari_1366x768_{label}.png"))


def _two_model_result(src, dst):
    """A copy of the tiny SIMULATED result with a second model (its atoms, maps reversed in sign)."""
    import json

    import nibabel as nib

    shutil.copytree(src, dst)
    for part in ("atoms", "encoding", "networks"):
        shutil.copytree(dst / part / "minilm", dst / part / "other")
    for name in ("atom_maps_z.nii.gz", "atom_maps.nii.gz"):
        img = nib.load(dst / "encoding/other" / name)
        nib.save(nib.Nifti1Image(-np.asarray(img.dataobj), img.affine, img.header), dst / "encoding/other" / name)
    summary = json.loads((dst / "summary.json").read_text())
    summary["models"] = ["minilm", "other"]
    (dst / "summary.json").write_text(json.dumps(summary))
    return dst


def _check_comparison(viewer, explorer, qtbot, path, artifacts_dir):
    """Two real models side by side: each atom's best match by time-course r, r shown, both maps
    and time courses drawn (on the pipeline's MiniLM + SmolLM2 result)."""
    from napari_brainorg._napari.compare import PANEL_NAME
    from napari_brainorg.io.results import ResultFolder

    result = ResultFolder(path)
    assert result.models == ["minilm", "smollm2"]
    qtbot.waitUntil(lambda: PANEL_NAME in viewer.window.dock_widgets, timeout=30000)
    panel = viewer.window.dock_widgets[PANEL_NAME]
    qtbot.waitUntil(lambda: panel.other is not None and panel.other["key"][0] == str(result.path)
                    and panel.other["model"] == "smollm2", timeout=30000)
    from napari_brainorg._napari.orthoviews import on_screen

    L.raise_dock(panel)
    qtbot.waitUntil(lambda: on_screen(panel), timeout=5000)
    a, b = result.atom_timecourses("minilm"), result.atom_timecourses("smollm2")
    other = L.AtomMaps.from_result(result, "smollm2", stat=explorer.state.maps.stat)
    for atom in range(a.shape[1]):
        explorer.select_atom(atom)
        r = [np.corrcoef(a[:, atom], b[:, j])[0, 1] for j in range(b.shape[1])]
        best = int(np.nanargmax(np.abs(r)))
        assert panel.match == best and panel.r == pytest.approx(r[best], abs=1e-6), (atom, panel.match, r)
        assert f"r = <b>{r[best]:+.2f}</b>" in panel.info.text()
        sign = np.sign(r[best])
        np.testing.assert_allclose(panel.timecourse.other_line.get_ydata(), sign * b[:, best], rtol=1e-5)
        np.testing.assert_allclose(panel.timecourse.line.get_ydata(), a[:, atom], rtol=1e-5)
    # a click on the second-best match shows that atom's map (the panel draws smollm2's volume)
    panel.matches.setCurrentRow(1)
    row = np.abs([np.corrcoef(a[:, explorer.atom], b[:, j])[0, 1] for j in range(b.shape[1])])
    assert panel.match == int(np.argsort(-row, kind="stable")[1])
    qtbot.wait(100)
    for side in (panel.left, panel.right):  # drawn, not blank: the template's greys at least
        assert side._buffer is not None and np.asarray(side._buffer, float).std() > 10
    z = panel._z()
    from napari_brainorg._napari.orthoviews import VolumeSource, render_layers

    expected = render_layers([L.find_layer(viewer, "template"), VolumeSource(
        other.volume(panel.match), other.affine, L.diverging_threshold_colormap(
            L.find_layer(viewer, "atom_map").metadata["threshold"], other.color_limit),
        (-other.color_limit, other.color_limit))], "axial", z)
    np.testing.assert_array_equal(panel.right._buffer, expected)
    viewer.window._qt_window.grab().save(str(artifacts_dir / "napari_1366x768_compare_models.png"))


def test_1366x768_before_and_after_a_pipeline_run_and_no_stall(make_napari_viewer, qtbot, tiny_result, tmp_path,
                                                               artifacts_dir, monkeypatch, capsys):
    from napari_brainorg._napari import view as view_module

    path = _two_model_result(tiny_result[0], tmp_path / "two")
    viewer = make_napari_viewer(show=True)
    monkeypatch.setattr(view_module, "run_event_loop", lambda v: None)
    view_module.open_viewer(path, viewer=viewer)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    explorer = viewer.window.dock_widgets["Atom explorer"]
    qtbot.waitUntil(lambda: explorer.shown_state is not None, timeout=30000)
    qtbot.wait(200)
    _check_fits(viewer, explorer, "before_run", artifacts_dir)

    # model switch: read in a thread, swapped in at once; the old view stays meanwhile
    old_layer = L.find_layer(viewer, "atom_map")
    with StallMeter() as switch:
        explorer.switch_model("other")
        assert L.find_layer(viewer, "atom_map") is old_layer  # nothing removed before the new one is ready
        qtbot.waitUntil(lambda: explorer.shown_state.model == "other", timeout=30000)
        qtbot.wait(100)
    layer = L.find_layer(viewer, "atom_map")
    assert "of other" in layer.name
    np.testing.assert_allclose(layer.data.min(), -float(tiny_result[1]["z"][..., 0][tiny_result[1]["mask"]
                               & L.inside_mni_brain(tiny_result[1]["affine"], tiny_result[1]["mask"].shape)].max()),
                               rtol=1e-5)

    # a pipeline run from the widget (its tab), then the explorer again
    from napari_brainorg._napari.pipeline_widget import PipelineWidget

    widget = viewer.window.dock_widgets["Run pipeline"]
    assert isinstance(widget, PipelineWidget)
    story = tmp_path / "story.tsv"
    from napari_brainorg.io.stimuli import read_story

    words = read_story("pieman").to_dataframe()
    words[words["onset"] < 55.0][["word", "onset", "offset"]].to_csv(story, sep="\t", index=False)
    # a small run, as in test_pipeline_widget: 55 s of pieman, 4 atoms, 2 SIMULATED subjects
    widget.story.setCurrentText(str(story))
    widget.n_volumes.setValue(40)
    widget.model.setCurrentText("minilm")
    widget.n_subjects.setValue(2)
    widget.sim_resolution.setValue(8.0)
    widget.n_atoms.setValue(4)
    widget.out.setText(str(tmp_path / "run"))
    # two real models (MiniLM and SmolLM2): the run's result is also the one the comparison is checked on
    tiny = {"features": {"models": ["minilm", "smollm2"]},
            "atoms": {"max_iter": 20}, "encoding": {"n_folds": 2, "gap": 2, "alphas": [1.0, 100.0, 10000.0]},
            "networks": {"n_permutations": 20, "atlases": ["yeo7"]}}
    outcome = {}
    widget.finished.connect(lambda result: outcome.setdefault("result", result))
    widget.failed.connect(lambda message: outcome.setdefault("failed", message))
    texts = []
    widget.progress.valueChanged.connect(lambda _v: texts.append(widget.status.text()))
    meter = StallMeter()
    meter.label = lambda: widget.status.text()
    with meter as run:
        widget.run(tiny)
        qtbot.waitUntil(lambda: bool(outcome), timeout=600000)
        qtbot.waitUntil(lambda: explorer.shown_state.result.path == tmp_path / "run", timeout=60000)
        qtbot.wait(100)
    assert "failed" not in outcome, outcome.get("failed")
    assert any("%" in t for t in texts), texts[-5:]  # overall progress was shown
    _check_comparison(viewer, explorer, qtbot, tmp_path / "run", artifacts_dir)
    L.raise_dock(explorer)
    qtbot.wait(200)
    _check_fits(viewer, explorer, "after_run", artifacts_dir)
    import os

    load = os.getloadavg()[0]
    with capsys.disabled():  # the figures are printed whether the limit is checked or not
        print(f"\nlongest event-loop stall: model switch {switch.longest:.0f} ms, pipeline run {run.longest:.0f} ms"
              f" (after: {run.when!r}); load average {load:.1f} on {os.cpu_count()} cores")
        print(f"target (not asserted): {STALL_TARGET_MS:.0f} ms; "
              + ("met" if max(switch.longest, run.longest) < STALL_TARGET_MS else "NOT met"))
    (artifacts_dir / "stall.json").write_text(json.dumps({
        "model_switch_ms": round(switch.longest, 1), "pipeline_run_ms": round(run.longest, 1),
        "after": run.when, "load_average": load, "cores": os.cpu_count(), "target_ms": STALL_TARGET_MS}))
    if load > 2 * (os.cpu_count() or 1):
        # a shared machine this busy measures the other jobs, not this plugin; say so
        pytest.skip(f"freeze limit not checked: load average {load:.1f} on {os.cpu_count()} cores "
                    f"(measured: model switch {switch.longest:.0f} ms, pipeline run {run.longest:.0f} ms)")
    assert switch.longest < FREEZE_LIMIT_MS, switch.longest
    assert run.longest < FREEZE_LIMIT_MS, run.longest
