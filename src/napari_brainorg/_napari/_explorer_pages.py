"""The atom explorer's lower tabs: the selected atom's top words, and what explains a clicked voxel.

Both are built to be read docked at 1366 x 768: one line per listed word (its context
in the tooltip, the passage it belongs to above it), and the voxel's plots side by side
under two short lines that say which model each number comes from.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ._plots import VoxelAtomsCanvas, VoxelTimecourseCanvas
from ._top_words import passage_note, word_passages

#: colours of the voxel's lines, named in the label above the plot
MEASURED_COLOR = "#bdbdbd"
PREDICTED_COLOR = "#f5a623"
HELDOUT_COLOR = "#c58cff"


def _squeeze(label: QLabel) -> QLabel:
    """A label that wraps and never widens the dock (its text may be long)."""
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
    return label


class _TallestLabel(QLabel):
    """A wrapped label as tall as the tallest text it showed at its width.

    A voxel's description takes a line more inside a network than outside: without this,
    the plots under it would change size from click to click, and a canvas that changes
    size draws itself anew (ticks, titles), where a click otherwise redraws only its data.
    """

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(text)
        if self.isVisible():
            needed = self.heightForWidth(self.width())
            if needed > self.minimumHeight():
                self.setMinimumHeight(needed)

    def resizeEvent(self, event):  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():  # another width: the lines it needs now
            self.setMinimumHeight(max(0, self.heightForWidth(event.size().width())))


class TopWordsPage(QWidget):
    """The words that most activate and most suppress an atom, side by side, grouped by passage.

    Attributes
    ----------
    up, down : QListWidget
        One item per passage of several listed words (its time window; its text in the
        tooltip) followed by its words, one line each; a word alone in its passage is
        one line with its time.
    up_note, down_note : QLabel
        How concentrated each list is (:func:`._top_words.passage_note`).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.up, self.down = QListWidget(), QListWidget()
        self.up_note, self.down_note = _squeeze(QLabel("")), _squeeze(QLabel(""))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        for title, lst, note, tip in (
                ("most activate", self.up, self.up_note, "Words whose word-level response of this atom is highest"),
                ("most suppress", self.down, self.down_note, "Words whose word-level response of this atom is lowest")):
            lst.setToolTip(tip)
            lst.setWordWrap(False)
            lst.setTextElideMode(Qt.ElideRight)
            lst.setUniformItemSizes(True)  # one line each: as many rows as the height allows
            lst.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # a long line is elided
            column = QVBoxLayout()
            column.setSpacing(1)
            column.addWidget(QLabel(f"<b>{title}</b>"))
            column.addWidget(note)
            column.addWidget(lst, 1)
            layout.addLayout(column)
        small = QFont(self.font())
        small.setPointSizeF(max(small.pointSizeF() - 1.0, 7.0))
        for note in (self.up_note, self.down_note):
            note.setFont(small)

    def show_atom(self, top, atom: int, stories: list[dict] | None = None) -> None:
        """Fill both lists from ``top`` (``top_words.tsv``, every atom) for ``atom``."""
        for lst, note in ((self.up, self.up_note), (self.down, self.down_note)):
            lst.clear()
            note.setText("")
        if top is None or not len(top):
            self.up.addItem("(no top_words.tsv in this result)")
            return
        rows = top[top["atom"] == atom]
        for direction, lst, note in (("activate", self.up, self.up_note), ("suppress", self.down, self.down_note)):
            passages = word_passages(rows[rows["direction"] == direction], stories)
            text = passage_note(passages)
            note.setText(text)
            note.setToolTip(f"{text}. An atom is a slow time course: its strongest words are often one "
                            "stretch of the story (a passage), not a class of words.")
            several = len({s.get("story") for s in stories or []}) > 1
            for passage in passages:
                self._add_passage(lst, passage, several)

    @staticmethod
    def _add_passage(lst: QListWidget, passage, name_story: bool = False) -> None:
        """A heading for a passage of several listed words, then one line per word."""
        story = f" of {passage.story}" if passage.story else ""
        if len(passage.entries) > 1:  # the story in the heading only when the run has several
            header = QListWidgetItem(f"{passage.span()}{story if name_story else ''} · {passage.n_words} words")
            font = QFont(lst.font())
            font.setBold(True)
            header.setFont(font)
            header.setFlags(Qt.ItemIsEnabled)  # a heading, not a word to select
            header.setToolTip(f"…{passage.text}…")
            header.setData(Qt.UserRole, "passage")
            lst.addItem(header)
        for entry in passage.entries:
            times = f" ×{len(entry.indices)}" if len(entry.indices) > 1 else ""
            text = f"{entry.word}{times}  {entry.response:+.2f}"
            if len(passage.entries) > 1:
                text = f"   {text}"
            else:
                text = f"{text}  · {entry.onset:.1f} s"
            item = QListWidgetItem(text)
            item.setToolTip(f"{entry.onset:.1f} s{story} (rank {entry.rank}): …{entry.context}…")
            item.setData(Qt.UserRole, "word")
            lst.addItem(item)

    def word_items(self, lst: QListWidget) -> list[str]:
        """The texts of ``lst``'s word entries (not the passage headings)."""
        return [lst.item(n).text().strip() for n in range(lst.count())
                if lst.item(n).data(Qt.UserRole) == "word"]


class VoxelPage(QWidget):
    """A clicked voxel: every atom's map value there, and its measured and predicted time course.

    Two lines above the plots say where the voxel is and which model each number comes
    from: the R² layer's (held-out ridge, or the in-sample sparse fit), and the r of the
    prediction drawn (the saved prediction's model, e.g. the sparse fit in sample; the
    held-out ridge prediction as a third line when the result saved one).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = _squeeze(_TallestLabel("Click a voxel of the brain to see what explains it."))
        self.label.setTextFormat(Qt.RichText)
        self.subject_combo = QComboBox()
        self.subject_combo.setToolTip("Whose time course: the mean over subjects or one subject")
        self.course_label = _squeeze(QLabel(""))
        self.course_label.setTextFormat(Qt.RichText)
        self.heldout_check = QCheckBox("held-out")
        self.heldout_check.setToolTip("Also draw the held-out (cross-validated ridge) prediction")
        self.heldout_check.setVisible(False)
        self.atoms_plot = VoxelAtomsCanvas(self)
        self.timecourse = VoxelTimecourseCanvas(self)
        # side by side: both keep the page's height; their figure-size hints (360 px each)
        # must not widen the dock and squeeze the canvas
        for canvas in (self.atoms_plot, self.timecourse):
            canvas.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
            canvas.setMinimumWidth(120)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.label)
        row = QHBoxLayout()
        row.addWidget(self.course_label, 1)
        row.addWidget(self.heldout_check)
        layout.addLayout(row)
        # the subject's choice above its plot: no row of its own
        course = QVBoxLayout()
        course.setSpacing(1)
        course.addWidget(self.subject_combo)
        course.addWidget(self.timecourse, 1)
        plots = QHBoxLayout()
        plots.addWidget(self.atoms_plot, 2)
        plots.addLayout(course, 3)
        layout.addLayout(plots, 1)


def r2_source(kind: str | None) -> str:
    """Which model an R² layer's numbers come from (its ``metadata['kind']``)."""
    return {"cv": "ridge, held-out", "sparse": "sparse fit, in sample"}.get(kind or "", "R² map")


def course_text(label: str, r: float, heldout_r: float | None = None, heldout_label: str = "") -> str:
    """The line naming the drawn lines and the r of each prediction (rich text)."""
    parts = [f'<span style="color:{PREDICTED_COLOR}">■</span> {label}: r = {r:.2f}']
    if heldout_r is not None:
        parts.append(f'<span style="color:{HELDOUT_COLOR}">■</span> {heldout_label or "held-out"}: r = {heldout_r:.2f}')
    parts.append(f'<span style="color:{MEASURED_COLOR}">■</span> measured')
    return " · ".join(parts)
