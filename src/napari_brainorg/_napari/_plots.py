"""Small matplotlib canvases docked beside napari: an atom's time course and layer histogram.

Each canvas draws its artists once and afterwards only changes their data, so
switching atoms costs a redraw, not a new figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

_FACE = "#262930"  # napari's dark theme background
_FG = "#d6d6d6"


def _style(ax) -> None:
    ax.set_facecolor(_FACE)
    for spine in ax.spines.values():
        spine.set_color(_FG)
    ax.tick_params(colors=_FG, labelsize=7)
    ax.xaxis.label.set_color(_FG)
    ax.yaxis.label.set_color(_FG)
    ax.title.set_color(_FG)


class TimecourseCanvas(FigureCanvasQTAgg):
    """An atom's time course over the story, with the words of the volume under the cursor.

    Parameters
    ----------
    parent : QWidget, optional
    """

    def __init__(self, parent=None):
        fig = Figure(figsize=(4, 1.8), dpi=90, facecolor=_FACE, layout="constrained")
        super().__init__(fig)
        if parent is not None:
            self.setParent(parent)
        self.ax = fig.add_subplot(111)
        _style(self.ax)
        self.ax.set_xlabel("time (s)", fontsize=8)
        self.ax.set_ylabel("atom", fontsize=8)
        (self.line,) = self.ax.plot([], [], color="#f5a623", lw=1.0)
        self.cursor = self.ax.axvline(0.0, color="#7fd3ff", lw=0.8, visible=False)
        self.words_text = self.ax.text(
            0.01, 0.97, "", transform=self.ax.transAxes, va="top", ha="left",
            fontsize=7, color=_FG, clip_on=True,
        )
        self.tr = 1.0
        self.words: list[str] = []
        self.timecourse = np.zeros(0)
        self.mpl_connect("motion_notify_event", self._on_move)

    def set_story(self, tr: float, words_per_volume: list[str]) -> None:
        """The scan's TR (s) and the words heard during each volume."""
        self.tr = float(tr)
        self.words = list(words_per_volume)

    def set_timecourse(self, timecourse: np.ndarray, atom: int) -> None:
        """Show ``timecourse`` of shape (n_volumes,) for atom ``atom``."""
        self.timecourse = np.asarray(timecourse, dtype=float)
        times = np.arange(self.timecourse.size) * self.tr
        self.line.set_data(times, self.timecourse)
        if self.timecourse.size:
            lo, hi = float(self.timecourse.min()), float(self.timecourse.max())
            pad = 0.05 * (hi - lo or 1.0)
            self.ax.set_xlim(0.0, max(times[-1], self.tr))
            self.ax.set_ylim(lo - pad, hi + pad)
        self.ax.set_title(f"atom {atom}: time course", fontsize=8, color=_FG)
        self.draw_idle()

    def volume_at(self, time_s: float) -> int | None:
        """Index of the volume acquired at ``time_s`` seconds, or ``None`` outside the scan."""
        if not self.timecourse.size:
            return None
        volume = int(round(time_s / self.tr))
        return volume if 0 <= volume < self.timecourse.size else None

    def show_volume(self, volume: int | None) -> str:
        """Mark ``volume`` and print its words; returns the words shown."""
        if volume is None:
            self.cursor.set_visible(False)
            self.words_text.set_text("")
            self.draw_idle()
            return ""
        words = self.words[volume] if volume < len(self.words) else ""
        self.cursor.set_xdata([volume * self.tr, volume * self.tr])
        self.cursor.set_visible(True)
        label = f"volume {volume} ({volume * self.tr:.1f} s): {words or '(no words)'}"
        self.words_text.set_text(label)
        self.draw_idle()
        return words

    def _on_move(self, event) -> None:
        if event.inaxes is not self.ax or event.xdata is None:
            return
        self.show_volume(self.volume_at(event.xdata))


class LayerHistogramCanvas(FigureCanvasQTAgg):
    """How an atom's ANs spread over the model's layers (bar per layer)."""

    def __init__(self, parent=None):
        fig = Figure(figsize=(4, 1.6), dpi=90, facecolor=_FACE, layout="constrained")
        super().__init__(fig)
        if parent is not None:
            self.setParent(parent)
        self.ax = fig.add_subplot(111)
        _style(self.ax)
        self.ax.set_xlabel("layer", fontsize=8)
        self.ax.set_ylabel("ANs", fontsize=8)
        self.bars = None
        self.layer_names: list[str] = []

    def set_layers(self, layer_names: list[str]) -> None:
        """Draw one (empty) bar per layer; later atoms only change the heights."""
        self.ax.cla()
        _style(self.ax)
        self.ax.set_xlabel("layer", fontsize=8)
        self.ax.set_ylabel("ANs", fontsize=8)
        self.layer_names = [str(n) for n in layer_names]
        x = np.arange(len(self.layer_names))
        self.bars = self.ax.bar(x, np.zeros(len(x)), color="#5b9bd5")
        step = max(1, len(x) // 12)
        self.ax.set_xticks(x[::step], [self.layer_names[i] for i in x[::step]], fontsize=7)
        self.draw_idle()

    def set_counts(self, counts: np.ndarray, atom: int) -> None:
        """Bar heights of shape (n_layers,) for ``atom``."""
        counts = np.asarray(counts, dtype=float)
        if self.bars is None or len(self.bars) != counts.size:
            self.set_layers([str(i) for i in range(counts.size)])
        for bar, height in zip(self.bars, counts):
            bar.set_height(height)
        self.ax.set_ylim(0, max(1.0, float(counts.max()) * 1.1) if counts.size else 1.0)
        self.ax.set_title(f"atom {atom}: {int(counts.sum())} ANs over layers", fontsize=8, color=_FG)
        self.draw_idle()
