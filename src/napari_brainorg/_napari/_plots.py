"""Small matplotlib canvases docked beside napari: an atom's time course and layer histogram.

Switching atoms must stay well under 100 ms, and a full matplotlib draw (ticks,
text layout) costs more than that on a slow machine. So each canvas fixes its
axes once per result (limits that fit every atom), draws that static part once,
keeps it as a background bitmap, and afterwards only redraws the changing artists
(the line, the bars, the title, the cursor) on top of it and blits them
(matplotlib's blitting; a resize triggers one full draw again).

Full draws of several canvases are spread over turns of the event loop (one canvas per
turn: :meth:`_BlitCanvas._draw_idle`): a window shown, a result loaded or a model switched
redraws every plot, and Qt paints all the widgets of a window in one turn. A canvas
given nothing to show yet (a panel docked before its result is read) draws nothing.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

_FACE = "#262930"  # napari's dark theme background
_FG = "#d6d6d6"

#: milliseconds before a canvas whose full draw was put off tries again
DRAW_GAP_MS = 10
#: whether a canvas made its full draw in this turn of the event loop
_TURN = {"drawn": False}


def _new_turn() -> None:
    _TURN["drawn"] = False


def _style(ax) -> None:
    ax.set_facecolor(_FACE)
    for spine in ax.spines.values():
        spine.set_color(_FG)
    ax.tick_params(colors=_FG, labelsize=8.5)
    ax.xaxis.label.set_color(_FG)
    ax.yaxis.label.set_color(_FG)


class _BlitCanvas(FigureCanvasQTAgg):
    """A canvas whose animated artists are redrawn over a cached background."""

    def __init__(self, parent=None, figsize=(4, 1.8), title: str = ""):
        fig = Figure(figsize=figsize, dpi=90, facecolor=_FACE)
        super().__init__(fig)
        if parent is not None:
            self.setParent(parent)
        self.ax = fig.add_subplot(111)
        fig.subplots_adjust(left=0.14, right=0.98, bottom=0.25, top=0.86)
        _style(self.ax)
        # static: text is the slowest thing Agg draws, so nothing per atom is text
        self.ax.set_title(title, fontsize=9, color=_FG, loc="left")
        self._background = None
        self._has_content = False  # nothing to show yet: no draw (the panel's background)
        self.mpl_connect("draw_event", self._on_draw)

    def _animated(self) -> list:
        return []

    def _draw_idle(self):  # noqa: D401 - matplotlib's name
        """matplotlib's pending full draw, unless another canvas made one in this turn of the
        event loop (each is 50 to 150 ms): then in a later turn, the old image meanwhile."""
        from qtpy.QtCore import QTimer

        if not getattr(self, "_has_content", True):  # empty axes before a result: not worth a frozen turn
            self._draw_pending = False
            return
        if getattr(self, "_draw_pending", False):
            if _TURN["drawn"]:
                QTimer.singleShot(DRAW_GAP_MS, self._draw_idle)
                return
            _TURN["drawn"] = True
            QTimer.singleShot(0, _new_turn)
        super()._draw_idle()

    def resizeEvent(self, event):  # noqa: N802 - Qt's name
        # margins in pixels, not fractions: tick labels and axis titles stay inside a short plot
        super().resizeEvent(event)
        w, h = max(self.width(), 50), max(self.height(), 50)
        self.figure.subplots_adjust(left=min(0.4, 52 / w), right=1 - min(0.2, 8 / w),
                                    bottom=min(0.45, 36 / h), top=1 - min(0.3, 20 / h))

    def _on_draw(self, event) -> None:
        self._background = self.copy_from_bbox(self.figure.bbox)
        for artist in self._animated():
            if artist.get_visible():
                self.ax.draw_artist(artist)

    def full_redraw(self) -> None:
        """Redraw everything (after the axes changed); the background is captured again."""
        self._has_content = True
        self._background = None
        self.draw_idle()

    def refresh(self) -> None:
        """Redraw only the animated artists over the cached background."""
        self._has_content = True
        if self._background is None:
            self.draw_idle()
            return
        self.restore_region(self._background)
        for artist in self._animated():
            if artist.get_visible():
                self.ax.draw_artist(artist)
        # update(), not blit(): blit repaints at once, and every repaint of a widget in
        # napari's window composites the whole window (it holds an OpenGL canvas); Qt
        # merges update() requests into one repaint per event-loop turn
        self.update()


class TimecourseCanvas(_BlitCanvas):
    """An atom's time course over the story, with the words of the volume under the cursor.

    Parameters
    ----------
    parent : QWidget, optional
    """

    def __init__(self, parent=None):
        # a short title (a docked panel is ~400 px wide); the hover is said in the tooltip
        super().__init__(parent, figsize=(4, 1.8), title="atom's time course")
        self.setToolTip("Hover over the plot for the words heard during each volume")
        self.ax.set_xlabel("time (s)", fontsize=9)
        self.ax.set_ylabel("unit norm", fontsize=9)
        (self.line,) = self.ax.plot([], [], color="#f5a623", lw=1.0, animated=True)
        self.cursor = self.ax.axvline(0.0, color="#7fd3ff", lw=0.8, visible=False, animated=True)
        self.words_text = self.ax.text(
            0.01, 0.97, "", transform=self.ax.transAxes, va="top", ha="left",
            fontsize=8.5, color=_FG, clip_on=True, animated=True,
        )
        self.tr = 1.0
        self.words: list[str] = []
        self.timecourse = np.zeros(0)
        self.mpl_connect("motion_notify_event", self._on_move)

    def _animated(self) -> list:
        return [self.line, self.cursor, self.words_text]

    def set_story(self, tr: float, words_per_volume: list[str], timecourses: np.ndarray | None = None) -> None:
        """The scan's TR (s), the words of each volume, and (for the axes' limits) every atom's
        time course, of shape (n_volumes, k)."""
        self.tr = float(tr)
        self.words = list(words_per_volume)
        if timecourses is not None and np.size(timecourses):
            self.fit_axes(np.asarray(timecourses, dtype=float))
        self.full_redraw()

    def fit_axes(self, series: np.ndarray) -> None:
        """Axes' limits for ``series`` (n_volumes, ...): the story's time, the values with 5 % margins."""
        if not np.size(series):
            return
        lo, hi = float(np.nanmin(series)), float(np.nanmax(series))
        pad = 0.05 * (hi - lo or 1.0)
        self.ax.set_xlim(0.0, max((series.shape[0] - 1) * self.tr, self.tr))
        self.ax.set_ylim(lo - pad, hi + pad)

    def set_timecourse(self, timecourse: np.ndarray, atom: int) -> None:
        """Show ``timecourse`` of shape (n_volumes,) for atom ``atom``."""
        self.timecourse = np.asarray(timecourse, dtype=float)
        times = np.arange(self.timecourse.size) * self.tr
        self.line.set_data(times, self.timecourse)
        self.atom = int(atom)
        lo, hi = self.ax.get_ylim()
        if self.timecourse.size and (self.timecourse.min() < lo or self.timecourse.max() > hi):
            pad = 0.05 * float(np.ptp(self.timecourse) or 1.0)
            self.ax.set_ylim(min(lo, self.timecourse.min() - pad), max(hi, self.timecourse.max() + pad))
            self.full_redraw()
            return
        self.refresh()

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
            self.refresh()
            return ""
        words = self.words[volume] if volume < len(self.words) else ""
        self.cursor.set_xdata([volume * self.tr, volume * self.tr])
        self.cursor.set_visible(True)
        self.words_text.set_text(f"volume {volume} ({volume * self.tr:.1f} s): {words or '(no words)'}")
        self.refresh()
        return words

    def _on_move(self, event) -> None:
        if event.inaxes is not self.ax or event.xdata is None:
            return
        self.show_volume(self.volume_at(event.xdata))


class LayerHistogramCanvas(_BlitCanvas):
    """How an atom's ANs spread over the model's layers (bar per layer)."""

    def __init__(self, parent=None):
        super().__init__(parent, figsize=(4, 1.6), title="member ANs per layer")
        self.ax.set_xlabel("layer", fontsize=9)
        self.ax.set_ylabel("ANs", fontsize=9)
        self.bars = None
        self.layer_names: list[str] = []

    def _animated(self) -> list:
        return list(self.bars or [])

    def set_layers(self, layer_names: list[str], counts: np.ndarray | None = None) -> None:
        """One (empty) bar per layer; ``counts`` of shape (k, n_layers) fixes the y range."""
        if self.bars is not None:
            self.bars.remove()
        self.layer_names = [str(n) for n in layer_names]
        x = np.arange(len(self.layer_names))
        self.bars = self.ax.bar(x, np.zeros(len(x)), color="#5b9bd5")
        for bar in self.bars:
            bar.set_animated(True)
        # about one label per 40 px of the plot: "10 11 12" must not run together when narrow
        step = max(1, int(np.ceil(len(x) / max(3, self.width() // 40))))
        self.ax.set_xticks(x[::step], [self.layer_names[i] for i in x[::step]], fontsize=8.5)
        if len(x):
            self.ax.set_xlim(-0.6, len(x) - 0.4)
        top = float(np.max(counts)) if counts is not None and np.size(counts) else 1.0
        self.ax.set_ylim(0, max(1.0, top * 1.05))
        self.full_redraw()

    def set_counts(self, counts: np.ndarray, atom: int) -> None:
        """Bar heights of shape (n_layers,) for ``atom``."""
        counts = np.asarray(counts, dtype=float)
        if self.bars is None or len(self.bars) != counts.size:
            self.set_layers([str(i) for i in range(counts.size)], counts[None])
        for bar, height in zip(self.bars, counts):
            bar.set_height(height)
        self.atom = int(atom)
        if counts.size and counts.max() > self.ax.get_ylim()[1]:
            self.ax.set_ylim(0, float(counts.max()) * 1.05)
            self.full_redraw()
            return
        self.refresh()


class VoxelAtomsCanvas(LayerHistogramCanvas):
    """One voxel: each atom's map value there (bar per atom); atoms associated with the
    voxel's network are drawn in green, the others grey."""

    def __init__(self, parent=None):
        _BlitCanvas.__init__(self, parent, figsize=(4, 1.6), title="atoms' maps")
        self.ax.set_xlabel("atom", fontsize=9)  # the title says what the bars are: no y label in 150 px
        self.bars = None
        self.layer_names = []
        self.ax.axhline(0.0, color=_FG, lw=0.6)

    def set_atoms(self, n_atoms: int, limit: float) -> None:
        """``n_atoms`` bars on a fixed symmetric range ``(-limit, limit)``."""
        self.set_layers([str(i) for i in range(n_atoms)])
        self.ax.set_ylim(-limit, limit)
        self.full_redraw()

    def set_values(self, values: np.ndarray, marked: np.ndarray | None = None) -> None:
        """Bar heights of shape (k,); ``marked`` (k,) bool: atoms associated with the voxel's network."""
        values = np.asarray(values, dtype=float)
        if self.bars is None or len(self.bars) != values.size:
            self.set_atoms(values.size, float(np.max(np.abs(values))) or 1.0)
        marked = np.zeros(values.size, bool) if marked is None else np.asarray(marked, bool)
        for bar, height, on in zip(self.bars, values, marked):
            bar.set_height(height)
            bar.set_color("#4cd964" if on else "#9a9a9a")
        self.refresh()


class VoxelTimecourseCanvas(TimecourseCanvas):
    """One voxel's measured (grey) and predicted (orange; a held-out prediction, violet)
    time course, with the words of the volume under the cursor (the hover of
    :class:`TimecourseCanvas`). The line above the plot names the colours."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.ax.set_title("voxel's time course", fontsize=9, color=_FG, loc="left")
        self.ax.set_ylabel("BOLD", fontsize=9)
        (self.measured_line,) = self.ax.plot([], [], color="#bdbdbd", lw=0.9, animated=True)
        (self.heldout_line,) = self.ax.plot([], [], color="#c58cff", lw=0.9, animated=True)
        # the y axis follows each voxel's range: drawn with the lines over the cached
        # background (the story's time axis, titles), a click redraws only them
        self.ax.yaxis.set_animated(True)
        self.measured = np.zeros(0)

    def _animated(self) -> list:
        return [self.ax.yaxis, self.measured_line, self.heldout_line, self.line, self.cursor, self.words_text]

    def set_voxel(self, measured: np.ndarray, predicted: np.ndarray, heldout: np.ndarray | None = None) -> None:
        """Show ``measured`` and ``predicted`` of shape (n_volumes,) (and ``heldout``, the
        held-out prediction, when given); the y range fits all."""
        self.measured = np.asarray(measured, dtype=float)
        self.timecourse = np.asarray(predicted, dtype=float)
        times = np.arange(self.timecourse.size) * self.tr
        self.measured_line.set_data(times, self.measured)
        self.line.set_data(times, self.timecourse)
        series = [self.measured, self.timecourse]
        if heldout is not None and np.size(heldout) == self.timecourse.size:
            self.heldout_line.set_data(times, np.asarray(heldout, dtype=float))
            series.append(np.asarray(heldout, dtype=float))
        else:
            self.heldout_line.set_data([], [])
        xlim = self.ax.get_xlim()
        self.fit_axes(np.column_stack(series))
        if self.ax.get_xlim() != xlim:  # another story's length: the background changes
            self.full_redraw()
            return
        self.refresh()
