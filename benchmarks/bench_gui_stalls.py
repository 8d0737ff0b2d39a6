"""How long the napari window freezes: the longest event-loop stall of each way into the plugin.

A heartbeat (a ``QTimer`` ticking every 20 ms on the GUI thread) runs while each action
goes on in a real napari viewer (software OpenGL under Xvfb, a 1366 x 768 screen, the
window maximised on it); the longest gap between two ticks is the longest time the window
could not repaint or react to the mouse. Target: no stall over 250 ms.

Actions (each in a fresh Python process, as a user meets it: napari's own first-use costs,
such as compiling its label colormap, are paid inside the action that first needs them):

- ``view``: what ``brainorg view DIR`` does (``open_viewer``): the window appears with the
  plugin's panels docked ("window on screen after"), then the result's layers and the atom
  explorer fill in; the stall is counted from the moment the window is on screen;
- ``reader``: File ▸ Open of the result folder (``viewer.open(DIR, plugin='napari-brainorg')``)
  in a bare viewer;
- ``nifti``: File ▸ Open of one NIfTI of the result (its 4D atom maps, z);
- ``sample``: File ▸ Open Sample ▸ the plugin's demo (the result as the cached demo);
- ``pipeline end``: a finished run handed to the pipeline widget's on-finished path (its
  layers shown, the atom explorer docked and filled);
- ``voxel click``: ten clicks on brain voxels while the explorer's voxel tab is shown;
- ``model switch``: three switches between two models (the result copied with a SIMULATED
  second model, its maps reversed in sign).

"until ready" is the wall time from the action to its layers (and the explorer) being shown;
the machine's load average is printed before and after each action (load inflates every
figure; a stall measured under load says so).

Needs an X server; without ``$DISPLAY`` it re-runs itself under ``xvfb-run`` (1366x768)::

    .venv/bin/python benchmarks/bench_gui_stalls.py DIR [--actions view,reader,...]

``DIR`` is a result folder, e.g. ``brainorg demo --quick --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACTIONS = ("view", "reader", "nifti", "sample", "pipeline end", "voxel click", "model switch")
SCREEN = (1366, 768)
TARGET_MS = 250.0
TIMEOUT_S = 300.0


def _reexec_under_xvfb() -> None:
    from bench_napari import _reexec_under_xvfb as reexec  # a script's folder is on sys.path

    reexec(SCREEN)


class Heartbeat:
    """Gaps (ms) between ticks of a 20 ms ``QTimer`` on the GUI thread, with what was going on.

    With ``why=True`` a thread samples the GUI thread's Python stack every 10 ms, and each
    gap over the target is printed with the places it was seen most often (a diagnosis aid;
    the sampler needs the GIL too, so a gap spent in C code holding it shows few samples).
    """

    def __init__(self, why: bool = False):
        import threading

        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[tuple[float, float]] = []  # (gap ms, seconds since start at its end)
        self.start_time = self.last = None
        self.why = why
        self.samples: list[tuple[float, str]] = []
        self._gui = threading.get_ident()
        self._stop = threading.Event()

    def _sample(self) -> None:
        import traceback

        while not self._stop.wait(0.01):
            frame = sys._current_frames().get(self._gui)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            mine = [f for f in stack if "site-packages/pint" not in f.filename][-14:]
            text = " < ".join(f"{Path(f.filename).name}:{f.lineno}({f.name})" for f in reversed(mine))
            self.samples.append((time.perf_counter(), text))

    def _tick(self) -> None:
        now = time.perf_counter()
        gap = now - self.last
        self.gaps.append((1e3 * gap, now - self.start_time))
        if self.why and 1e3 * gap > TARGET_MS:
            from collections import Counter

            seen = Counter(s for t, s in self.samples if self.last <= t <= now)
            print(f"--- gap {1e3 * gap:.0f} ms ending at {now - self.start_time:.2f} s, "
                  f"{sum(seen.values())} samples:", file=sys.stderr)
            for text, n in seen.most_common(4):
                print(f"  {n:4d}x {text}", file=sys.stderr)
        self.last = now

    def __enter__(self) -> Heartbeat:
        self.start_time = self.last = time.perf_counter()
        self.timer.start()
        if self.why:
            import threading

            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()
        self._stop.set()
        self._tick()

    @property
    def longest(self) -> float:
        return max((g for g, _ in self.gaps), default=0.0)

    def worst(self, n: int = 3) -> list[tuple[float, float]]:
        return sorted(self.gaps, reverse=True)[:n]


def _pump(app, until, timeout: float = TIMEOUT_S, what: str = "the action") -> float:
    """Run the event loop until ``until()`` is true; returns the seconds it took."""
    t0 = time.perf_counter()
    while not until():
        app.processEvents()
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what} did not finish within {timeout:.0f} s")
        time.sleep(0.002)
    return time.perf_counter() - t0


def _settle(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


RESULT_ROLES = ("template", "r2", "atom_map", "networks")


def _has_result_layers(viewer) -> bool:
    from napari_brainorg._napari import layers as L

    return all(L.find_layer(viewer, role) is not None for role in RESULT_ROLES)


def _explorer(viewer):
    from napari_brainorg._napari.explorer import AtomExplorer

    for widget in viewer.window.dock_widgets.values():
        if isinstance(widget, AtomExplorer):
            return widget
    return None


def _explorer_shown(viewer, model: str | None = None) -> bool:
    explorer = _explorer(viewer)
    state = explorer.shown_state if explorer is not None else None
    return state is not None and (model is None or state.model == model)


def run_action(action: str, path: Path, two_models: Path | None, why: bool = False) -> dict:
    """One action in this process's fresh viewer; the figures as a dict."""
    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend.*")
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_brainorg._napari._label_tables import nifti_stem
    from napari_brainorg._napari.view import open_viewer

    extra: dict = {}
    meter = Heartbeat(why=why)
    if action == "view":
        # as `brainorg view DIR` does: the command makes the window; the stall is counted from
        # the moment the window is on screen (before, no window shows, frozen or not)
        from napari._qt.qt_event_loop import get_qapp

        app = get_qapp()
        _settle(app, 0.5)
        t0 = time.perf_counter()
        viewer = open_viewer(path)
        extra["window on screen after s"] = round(time.perf_counter() - t0, 2)
        viewer.window._qt_window.showMaximized()
        with meter:
            _pump(app, lambda: _has_result_layers(viewer) and _explorer_shown(viewer))
            ready = time.perf_counter() - t0
            _settle(app, 0.5)
        viewer.close()
        return {"action": action, "longest_ms": round(meter.longest, 1), "ready_s": round(ready, 2),
                "worst": [(round(g, 1), round(t, 2)) for g, t in meter.worst()], **extra}
    viewer = napari.Viewer(title="napari-brainorg benchmark", show=True)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    window.showMaximized()
    app = QApplication.instance()
    _settle(app, 1.0)
    if action in ("reader", "nifti", "sample"):
        target = _atom_maps_file(path) if action == "nifti" else path
        if action == "sample":
            os.environ["NAPARI_BRAINORG_DEMO"] = str(path)

        def ready_now():
            if action == "nifti":
                return any(layer.name == nifti_stem(target) for layer in viewer.layers)
            return _has_result_layers(viewer)

        with meter:
            t0 = time.perf_counter()
            if action == "sample":
                viewer.open_sample("napari-brainorg", "demo")
            else:
                viewer.open(str(target), plugin="napari-brainorg")
            _pump(app, ready_now)
            ready = time.perf_counter() - t0
            _settle(app, 0.5)
    elif action == "pipeline end":
        from napari_brainorg._napari.pipeline_widget import PipelineWidget
        from napari_brainorg.io.results import ResultFolder

        widget = PipelineWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Run pipeline")
        _settle(app, 0.5)
        done = []
        widget.finished.connect(done.append)
        widget.failed.connect(done.append)
        with meter:
            t0 = time.perf_counter()
            widget._on_finished(ResultFolder(path))
            _pump(app, lambda: bool(done) and _explorer_shown(viewer))
            ready = time.perf_counter() - t0
            _settle(app, 0.5)
        if not hasattr(done[0], "path"):
            raise RuntimeError(f"the pipeline widget failed to show the result: {done[0]}")
    elif action == "voxel click":
        open_viewer(path, viewer=viewer, pipeline=False)
        _pump(app, lambda: _explorer_shown(viewer))
        explorer = _explorer(viewer)
        explorer.lower_tabs.setCurrentIndex(explorer.lower_tabs.indexOf(explorer.voxel_plot.parentWidget()))
        _settle(app, 1.0)
        maps = explorer.state.maps
        kji = np.column_stack(np.unravel_index(maps.flat_index, maps.shape))
        rng = np.random.default_rng(0)
        times = []
        with meter:
            for k, j, i in kji[rng.choice(len(kji), 10, replace=False)]:
                world = (maps.nifti_affine @ np.r_[i, j, k, 1.0])[:3][::-1]
                t0 = time.perf_counter()
                explorer.show_voxel(world)
                app.processEvents()
                times.append(time.perf_counter() - t0)
                _settle(app, 0.3)
        ready = float(np.max(times))
        extra["median handler + repaint ms"] = round(1e3 * float(np.median(times)), 1)
    elif action == "model switch":
        if two_models is None:
            raise ValueError("the model switch needs a result with two models")
        open_viewer(two_models, viewer=viewer, pipeline=False)
        _pump(app, lambda: _explorer_shown(viewer))
        _settle(app, 2.0)  # the comparison panel loads the second model meanwhile
        explorer = _explorer(viewer)
        models = explorer.state.result.models
        times = []
        with meter:
            for i in range(3):
                model = models[(i + 1) % len(models)]
                t0 = time.perf_counter()
                explorer.switch_model(model)
                _pump(app, lambda model=model: _explorer_shown(viewer, model))
                times.append(time.perf_counter() - t0)
                _settle(app, 0.5)
        ready = float(np.max(times))
    else:
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
    viewer.close()
    return {"action": action, "longest_ms": round(meter.longest, 1), "ready_s": round(ready, 2),
            "worst": [(round(g, 1), round(t, 2)) for g, t in meter.worst()], **extra}


def _atom_maps_file(path: Path) -> Path:
    """The first model's 4D atom maps (z) of the result, under whichever name the folder has."""
    from napari_brainorg.io.results import ResultFolder

    result = ResultFolder(path)
    return result.map_path(result.models[0], "atom_maps_z")


def _child(args) -> int:
    before = os.getloadavg()[0]
    figures = run_action(args.child, Path(args.dir), Path(args.two_models) if args.two_models else None,
                         why=args.why)
    figures["load_before"] = round(before, 2)
    figures["load_after"] = round(os.getloadavg()[0], 2)
    print("RESULT " + json.dumps(figures), flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="a result folder (e.g. from `brainorg demo --quick --out DIR`)")
    parser.add_argument("--actions", default=",".join(ACTIONS),
                        help=f"comma-separated, from: {', '.join(ACTIONS)} (default: all)")
    parser.add_argument("--why", action="store_true",
                        help="print where the GUI thread was during each stall over the target (to stderr)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--two-models", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _reexec_under_xvfb()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        return _child(args)
    actions = [a.strip() for a in args.actions.split(",") if a.strip()]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        parser.error(f"unknown action(s) {unknown}; expected some of {list(ACTIONS)}")
    path = Path(args.dir).resolve()
    import napari

    print(f"napari {napari.__version__}, screen {SCREEN[0]}x{SCREEN[1]} (Xvfb, software GL), "
          f"{os.cpu_count()} CPUs; result {path}; heartbeat 20 ms; target: no stall over {TARGET_MS:.0f} ms")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        two = None
        if "model switch" in actions:
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_napari import with_second_model

            two = with_second_model(path, Path(tmp) / "two")
        for action in actions:
            cmd = [sys.executable, __file__, str(path), "--child", action] + (["--why"] if args.why else [])
            if two is not None:
                cmd += ["--two-models", str(two)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if args.why else subprocess.PIPE,
                                  text=True, timeout=900)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{action}: FAILED (exit {proc.returncode})\n{(proc.stdout + (proc.stderr or ''))[-3000:]}")
                continue
            row = json.loads(line[len("RESULT "):])
            rows.append(row)
            extra = {k: v for k, v in row.items()
                     if k not in ("action", "longest_ms", "ready_s", "worst", "load_before", "load_after")}
            print(f"  {action:14s} longest stall {row['longest_ms']:7.0f} ms   until ready {row['ready_s']:6.2f} s   "
                  f"load {row['load_before']:.1f} -> {row['load_after']:.1f}   "
                  f"worst gaps (ms @ s) {row['worst']}" + (f"   {extra}" if extra else ""), flush=True)
    if rows:
        worst = max(rows, key=lambda r: r["longest_ms"])
        print(f"longest stall of all: {worst['longest_ms']:.0f} ms ({worst['action']}); "
              f"{'met' if worst['longest_ms'] <= TARGET_MS else 'NOT met'}: target {TARGET_MS:.0f} ms; "
              f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
