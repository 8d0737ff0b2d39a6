"""How fast the atom explorer responds: clicking an atom, moving the threshold, a voxel, a model.

Each figure is the wall time from the user's action (a mouse click on a table row,
a new slider value) until the event loop is idle again, i.e. the map layer has its
new data or colormap, the napari canvas and both matplotlib plots have been redrawn.
Median and 90th percentile over ``--repeats`` actions, in ms. Target: < 100 ms.

Two more figures put these in context: "handler" is the part spent in the plugin's
code before control returns to Qt (new data / colormap in the layer, plots updated),
and "floor" is the same measurement for a change that does nothing but make napari
redraw (an opacity nudge of the map layer): under Xvfb the window is composited by
software OpenGL, so that floor depends on the window size and the machine's load,
which is printed too.

Orthogonal views: "ortho-view click" is a click in the coronal panel until the crosshair,
napari's axial slice and the sagittal plane are redrawn; "panels redrawn" is the plugin's
drawing of both panels from the layers; "select_atom, ortho shown" an atom click while
the panels are on screen (they redraw with the map). "select_atom, compare shown": an atom
click while the Compare models tab is in front (best match, two small maps, two lines).

Model switch (a result with two models; a single-model result is copied with a
SIMULATED second model, its maps reversed in sign): "until repaint" is from choosing
the model until the new model's table, plots and map are shown; the work reads
files in a thread, so the figure that says whether the GUI froze is "longest stall",
the longest gap between ticks of a 20 ms QTimer meanwhile (the GUI-thread part:
swapping data into the layers, filling the table, drawing the plots).

Runs on

- the quick demo result (``brainorg demo --quick``; built into the napari sample-data
  cache when missing, or give its folder as DIR), and
- ``--worst-case``: 64 SIMULATED atom maps on the full MNI152 2 mm grid (the largest
  grid the pipeline writes), to show how the figures scale.

Needs an X server; without ``$DISPLAY`` it re-runs itself under ``xvfb-run``::

    nice -n 10 .venv/bin/python benchmarks/bench_napari.py [DIR] [--worst-case] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _reexec_under_xvfb(screen: tuple[int, int] = (1600, 1000)) -> None:
    """Run this script again under ``xvfb-run`` (a ``screen`` of that size) when there is no X server."""
    if os.environ.get("DISPLAY") or os.environ.get("BRAINORG_BENCH_NO_XVFB"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("No $DISPLAY and no xvfb-run: run this benchmark under an X server.")
    env = dict(os.environ, BRAINORG_BENCH_NO_XVFB="1")
    cmd = [xvfb, "-a", "-s", f"-screen 0 {screen[0]}x{screen[1]}x24", sys.executable, *sys.argv]
    sys.exit(subprocess.call(cmd, env=env))


def worst_case_result(path: Path, n_atoms: int = 64, seed: int = 0) -> Path:
    """A SIMULATED result folder: ``n_atoms`` maps on the MNI152 2 mm grid, in Yeo-7 networks."""
    import nibabel as nib
    import pandas as pd

    from napari_brainorg import datasets
    from napari_brainorg.io.results import ResultWriter

    rng = np.random.default_rng(seed)
    w = ResultWriter(path)
    mask_img = nib.load(datasets.mni_mask_path())
    mask = np.asarray(mask_img.dataobj) > 0
    atlas = np.rint(np.asarray(nib.load(datasets.atlas_path("yeo7")).dataobj)).astype(np.int16) * mask
    n_vox = int(mask.sum())
    z = np.zeros(mask.shape + (n_atoms,), np.float32)
    z[mask] = rng.normal(0, 1, (n_vox, n_atoms)).astype(np.float32)
    for a in range(n_atoms):
        z[..., a][atlas == 1 + a % 7] += 4.0
    aff = mask_img.affine
    w.write_nifti("encoding/sim/mask.nii.gz", nib.Nifti1Image(mask.astype(np.uint8), aff))
    w.write_nifti("encoding/sim/atom_maps_z.nii.gz", nib.Nifti1Image(z, aff))
    w.write_nifti("encoding/sim/r2_cv.nii.gz", nib.Nifti1Image(np.abs(z[..., 0]) / 40, aff))
    w.write_nifti("networks/atlas_yeo7.nii.gz", nib.Nifti1Image(atlas, aff))
    names = datasets.atlas_labels("yeo7")
    w.write_table("networks/atlas_yeo7.tsv", pd.DataFrame({
        "index": range(1, 8), "network": names, "r": rng.random(7), "g": rng.random(7),
        "b": rng.random(7), "a": np.ones(7)}))
    n_volumes = 300
    atoms = rng.normal(size=(n_volumes, n_atoms)).astype(np.float32)
    w.write_npy("atoms/sim/atoms.npy", atoms / np.linalg.norm(atoms, axis=0))
    hist = pd.DataFrame(rng.integers(0, 100, (n_atoms, 6)), columns=[str(i) for i in range(6)])
    hist.insert(0, "atom", range(n_atoms))
    w.write_table("atoms/sim/layer_hist.tsv", hist)
    w.write_table("atoms/sim/atoms.tsv", pd.DataFrame({"atom": range(n_atoms), "n_ans": hist.drop(columns="atom").sum(axis=1)}))
    w.write_json("summary.json", {"models": ["sim"], "tr": 1.5, "n_volumes": n_volumes, "simulated": True,
                                  "atlases": ["yeo7"], "note": "SIMULATED benchmark maps"})
    return path


def with_second_model(path: Path, dst: Path) -> Path:
    """``path`` itself when it has two models, else a copy with a SIMULATED second model
    (``<model>-reversed``: the first model's files, atom maps reversed in sign)."""
    import json

    import nibabel as nib

    from napari_brainorg.io._naming import bids_label, find_map
    from napari_brainorg.io.results import ResultFolder

    result = ResultFolder(path)
    if len(result.models) > 1:
        return path
    model = result.models[0]
    shutil.copytree(path, dst, ignore=shutil.ignore_patterns("features", "simulated", "figures"))
    other = f"{model}-reversed"
    for part in ("atoms", "encoding", "networks"):
        if (dst / part / model).is_dir():
            shutil.copytree(dst / part / model, dst / part / other)
    # the maps' BIDS names carry the model: the copies get the second model's
    theirs, ours = f"desc-{bids_label(model)}", f"desc-{bids_label(other)}"
    for f in (dst / "encoding" / other).glob(f"*{theirs}*"):
        f.rename(f.with_name(f.name.replace(theirs, ours)))
    for name in ("atom_maps_z", "atom_maps"):
        f = find_map(dst, other, name)
        if f is not None:
            img = nib.load(f)
            nib.save(nib.Nifti1Image(-np.asarray(img.dataobj), img.affine, img.header), f)
    summary = json.loads((dst / "summary.json").read_text())
    summary["models"] = [model, other]
    (dst / "summary.json").write_text(json.dumps(summary))
    return dst


def measure(result_path: Path, repeats: int, window=(1500, 950)) -> dict[str, float]:
    import warnings

    # a toast about the Qt binding would sit over the canvas and be repainted with it
    warnings.filterwarnings("ignore", message=".*PyQt5 backend.*")
    import napari  # noqa: F401
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_brainorg._napari.view import open_viewer

    viewer = open_viewer(result_path, pipeline=False, show=True)
    viewer.window._qt_window.resize(*window)
    app = QApplication.instance()
    explorer = viewer.window.dock_widgets["Atom explorer"]
    t0 = time.perf_counter()
    while explorer.shown_state is None:
        app.processEvents()
        if time.perf_counter() - t0 > 300:
            raise TimeoutError("the explorer did not load the result")
        time.sleep(0.005)
    load_s = time.perf_counter() - t0
    for _ in range(20):
        app.processEvents()
    n_atoms = explorer.state.maps.n_atoms
    table = explorer.table

    def settle():
        # until nothing is pending: the map layer, the canvas and the plots have redrawn
        app.processEvents()
        app.processEvents()

    click_ms, select_ms, thr_ms, floor_ms, handler_click, handler_thr = [], [], [], [], [], []
    from napari_brainorg._napari import layers as _layers

    map_layer = _layers.find_layer(viewer, "atom_map")
    for i in range(repeats):
        t = time.perf_counter()
        map_layer.opacity = 0.99 if i % 2 else 1.0
        settle()
        floor_ms.append(1e3 * (time.perf_counter() - t))
    rng = np.random.default_rng(0)
    for i in range(repeats):
        atom = int((explorer.atom + 1 + rng.integers(n_atoms - 1)) % n_atoms) if n_atoms > 1 else 0
        row = explorer.row_of_atom(atom)
        table.scrollToItem(table.item(row, 0))
        settle()
        rect = table.visualItemRect(table.item(row, 1))
        t = time.perf_counter()
        QTest.mouseClick(table.viewport(), Qt.LeftButton, pos=rect.center())
        settle()
        click_ms.append(1e3 * (time.perf_counter() - t))
        assert explorer.atom == atom, (explorer.atom, atom)
    for i in range(repeats):
        atom = (i * 7 + 1) % n_atoms
        t = time.perf_counter()
        explorer.select_atom(atom)
        handler_click.append(1e3 * (time.perf_counter() - t))
        settle()
        select_ms.append(1e3 * (time.perf_counter() - t))
    top = float(explorer.state.maps.vmax.max())
    for i in range(repeats):
        value = top * (0.1 + 0.8 * ((i * 0.37) % 1.0))
        t = time.perf_counter()
        explorer.threshold_slider.setValue(value)
        handler_thr.append(1e3 * (time.perf_counter() - t))
        settle()
        thr_ms.append(1e3 * (time.perf_counter() - t))
    shape = explorer.state.maps.shape
    n_vox = explorer.state.maps.values.shape[1]
    # voxel click: what explains this voxel (R², every atom's value, associated atoms)
    voxel_ms, handler_voxel = [], []
    explorer.lower_tabs.setCurrentIndex(2)
    settle()
    maps = explorer.state.maps
    kji = np.column_stack(np.unravel_index(maps.flat_index, maps.shape))
    for i in range(repeats):
        k, j, v = kji[rng.integers(len(kji))]
        world = (maps.nifti_affine @ np.r_[v, j, k, 1.0])[:3][::-1]
        viewer.dims.set_point(0, world[0])
        settle()
        t = time.perf_counter()
        explorer.show_voxel(world)
        handler_voxel.append(1e3 * (time.perf_counter() - t))
        settle()
        voxel_ms.append(1e3 * (time.perf_counter() - t))
    # orthogonal views: a click in the coronal panel moves the crosshair, the axial slice and
    # the sagittal plane; an atom click redraws both panels (only while they are shown)
    from napari_brainorg._napari.orthoviews import PANEL_NAME

    ortho_ms, handler_ortho, ortho_select_ms, ortho_render, zstep_ms = [], [], [], [], []
    ortho = viewer.window.dock_widgets.get(PANEL_NAME)
    if ortho is not None:
        _layers.raise_dock(ortho)
        for _ in range(10):
            settle()
        # napari's own cost of showing another axial slice (what the z slider costs)
        for i in range(repeats):
            t = time.perf_counter()
            viewer.dims.set_point(0, -20.0 + 4.0 * (i % 10))
            settle()
            zstep_ms.append(1e3 * (time.perf_counter() - t))
        coronal = ortho.panels["coronal"]
        rect = coronal.image_rect()
        for i in range(repeats):
            x = rect.left() + rect.width() * (0.3 + 0.4 * rng.random())
            y = rect.top() + rect.height() * (0.3 + 0.4 * rng.random())
            n_render = len(ortho.render_ms)
            t = time.perf_counter()
            QTest.mouseClick(coronal, Qt.LeftButton, pos=QPoint(int(x), int(y)))
            handler_ortho.append(1e3 * (time.perf_counter() - t))
            settle()
            ortho_ms.append(1e3 * (time.perf_counter() - t))
            ortho_render.extend(ortho.render_ms[n_render:])
        for i in range(repeats):
            atom = (i * 5 + 2) % n_atoms
            t = time.perf_counter()
            explorer.select_atom(atom)
            settle()
            ortho_select_ms.append(1e3 * (time.perf_counter() - t))
        _layers.raise_dock(explorer)
        settle()
    # two models side by side: an atom click while the comparison is shown (its best match,
    # both maps on the axial slice, both time courses)
    from napari_brainorg._napari.compare import PANEL_NAME as COMPARE

    compare_ms, handler_compare = [], []
    compare = viewer.window.dock_widgets.get(COMPARE)
    if compare is not None:
        t0 = time.perf_counter()
        while compare.other is None and time.perf_counter() - t0 < 60:
            app.processEvents()
            time.sleep(0.005)
        _layers.raise_dock(compare)
        for _ in range(10):
            settle()
        for i in range(repeats):
            atom = (i * 3 + 1) % n_atoms
            t = time.perf_counter()
            explorer.select_atom(atom)
            handler_compare.append(1e3 * (time.perf_counter() - t))
            settle()
            compare_ms.append(1e3 * (time.perf_counter() - t))
        _layers.raise_dock(explorer)
        settle()
    switch_ms, stall_ms = [], []
    models = explorer.state.result.models
    if len(models) > 1:
        from qtpy.QtCore import QTimer

        for i in range(max(3, repeats // 5)):
            model = models[(models.index(explorer.state.model) + 1) % len(models)]
            ticks = []
            timer = QTimer()
            timer.setInterval(20)
            timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
            t = time.perf_counter()
            ticks.append(t)
            timer.start()
            explorer.switch_model(model)
            while explorer.shown_state is None or explorer.shown_state.model != model:
                app.processEvents()
                time.sleep(0.002)
            settle()
            switch_ms.append(1e3 * (time.perf_counter() - t))
            timer.stop()
            ticks.append(time.perf_counter())
            stall_ms.append(1e3 * float(np.max(np.diff(ticks))))
    size = viewer.window._qt_window.size()
    viewer.close()
    return {"load_s": load_s, "n_atoms": n_atoms, "grid": shape, "n_voxels": n_vox,
            "window": (size.width(), size.height()),
            "click": click_ms, "select": select_ms, "threshold": thr_ms, "floor": floor_ms,
            "handler_select": handler_click, "handler_threshold": handler_thr,
            "model_switch": switch_ms, "model_switch_stall": stall_ms,
            "voxel": voxel_ms, "handler_voxel": handler_voxel,
            "ortho_click": ortho_ms, "handler_ortho": handler_ortho, "ortho_render": ortho_render,
            "ortho_select": ortho_select_ms, "zstep": zstep_ms,
            "compare_select": compare_ms, "handler_compare": handler_compare}


def _report(name: str, m: dict) -> None:
    print(f"\n{name}: {m['n_atoms']} atoms, layer grid {m['grid']} (z, y, x), {m['n_voxels']} mask voxels; "
          f"explorer loaded in {m['load_s']:.2f} s (worker thread); window {m['window']}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for key, label in (("click", "click on a table row"), ("select", "select_atom() call"),
                       ("threshold", "threshold slider move"),
                       ("handler_select", "  handler of select_atom"),
                       ("handler_threshold", "  handler of threshold"),
                       ("voxel", "voxel click"),
                       ("handler_voxel", "  handler of voxel click"),
                       ("ortho_click", "ortho-view click"),
                       ("handler_ortho", "  handler of ortho click"),
                       ("ortho_render", "  panels redrawn (both)"),
                       ("ortho_select", "select_atom, ortho shown"),
                       ("compare_select", "select_atom, compare shown"),
                       ("handler_compare", "  handler of it"),
                       ("floor", "floor: opacity nudge"),
                       ("zstep", "floor: napari z step"),
                       ("model_switch", "model switch (repaint)"),
                       ("model_switch_stall", "  longest stall in it")):
        v = np.asarray(m.get(key, []))
        if not v.size:
            continue
        print(f"  {label:24s} median {np.median(v):6.1f} ms   p90 {np.percentile(v, 90):6.1f} ms   "
              f"max {v.max():6.1f} ms   (n={v.size})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", nargs="?", help="a result folder (default: the cached quick demo)")
    parser.add_argument("--worst-case", action="store_true",
                        help="also measure 64 SIMULATED atoms on the full MNI152 2 mm grid")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo result")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--window", default="1500x950", help="napari window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    window = tuple(int(v) for v in args.window.lower().split("x"))
    _reexec_under_xvfb()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import napari

    print(f"napari {napari.__version__}, Qt platform {os.environ.get('QT_QPA_PLATFORM', 'xcb')}, "
          f"DISPLAY={os.environ.get('DISPLAY')}, {os.cpu_count()} CPUs")
    if not args.no_demo:
        if args.dir:
            path = Path(args.dir)
        else:
            from napari_brainorg._napari.sample_data import ensure_demo_result

            path = ensure_demo_result().path
        with tempfile.TemporaryDirectory() as tmp:
            path = with_second_model(path, Path(tmp) / "two")
            _report(f"result {path} (+ SIMULATED second model)", measure(path, args.repeats, window))
    if args.worst_case:
        with tempfile.TemporaryDirectory() as tmp:
            path = worst_case_result(Path(tmp) / "worst")
            _report("worst case (SIMULATED, MNI152 2 mm, 64 atoms)", measure(path, args.repeats, window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
