"""An atom's top words as what they are: occurrences in passages of the story.

An atom is a slow time course (it is read through the haemodynamic response), so the
words with its strongest word-level response are often neighbours in one stretch of
the story, not a class of words. :func:`word_passages` groups the rows of
``top_words.tsv`` of one atom and direction into **passages** (occurrences no more
than :data:`PASSAGE_GAP_S` apart, within one story) and merges repeats of one word
that lie inside one shown context (``"So [I] I saw"`` and ``"So I [I] saw"`` are one
entry, ``I ×2``). :func:`passage_note` says how concentrated the list is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: occurrences closer than this (s) belong to one passage: about a sentence at the
#: story's speech rate (2-3 words/s), and shorter than the haemodynamic response's
#: width, so one passage is what one bump of the atom's time course can single out
PASSAGE_GAP_S = 4.0
#: a repeat of the same word this many words after an occurrence is inside that
#: occurrence's shown context (``top_words_table``'s 4 words after): one entry
MERGE_WORDS = 4


@dataclass
class WordEntry:
    """One listed word: its occurrences (word indices) merged when they share a context."""

    word: str
    rank: int  # best rank among the merged occurrences (1 = strongest)
    response: float  # the strongest of their responses
    onset: float  # s, first occurrence
    indices: list[int] = field(default_factory=list)
    context: str = ""


@dataclass
class Passage:
    """Consecutive listed occurrences within :data:`PASSAGE_GAP_S` of each other."""

    story: str
    start: float  # s, first onset
    end: float  # s, last onset
    entries: list[WordEntry] = field(default_factory=list)
    text: str = ""  # the passage's words, listed ones in [brackets] (from the contexts)

    @property
    def n_words(self) -> int:
        return sum(len(e.indices) for e in self.entries)

    def span(self) -> str:
        """``'46–51 s'``: whole seconds that hold every onset (one onset: ``'25.7 s'``)."""
        if self.end - self.start < 0.95:
            return f"{self.start:.1f} s"
        return f"{math.floor(self.start)}–{math.ceil(self.end)} s"


def _context_words(row) -> dict[int, str]:
    """Word index -> word of the words a row's context shows (``"a b [w] c"``)."""
    tokens = str(row["context"]).split(" ")
    at = next((n for n, t in enumerate(tokens) if t.startswith("[") and t.endswith("]")), None)
    if at is None:
        return {int(row["word_index"]): str(row["word"])}
    first = int(row["word_index"]) - at
    return {first + n: t[1:-1] if n == at else t for n, t in enumerate(tokens)}


def _story_of(volume: int, stories: list[dict] | None) -> str:
    if not stories:
        return ""
    name = stories[0]["story"]
    for s in stories:
        if volume >= s["first_volume"]:
            name = s["story"]
    return str(name)


def _join(words: dict[int, str], span, marked: set[int]) -> str:
    """The words of ``span`` (indices), ``marked`` ones in [brackets]; one "…" per gap (a
    stretch no shown context covers)."""
    out: list[str] = []
    for i in span:
        if i in words:
            out.append(f"[{words[i]}]" if i in marked else words[i])
        elif not out or out[-1] != "…":
            out.append("…")
    return " ".join(out)


def word_passages(rows, stories: list[dict] | None = None) -> list[Passage]:
    """Group one atom's top words (one direction) into passages, repeats merged.

    Parameters
    ----------
    rows : DataFrame
        Rows of ``top_words.tsv`` (``rank, word, word_index, onset, volume, response,
        context``) of one atom and one direction.
    stories : list of dict, optional
        :meth:`~napari_brainorg.io.results.ResultFolder.stories` (``story``,
        ``first_volume``): a passage never crosses a story's start and is named by it.

    Returns
    -------
    list of Passage
        Strongest first (by the best rank inside each); entries inside a passage by rank.
    """
    if rows is None or not len(rows):
        return []
    records = sorted(rows.to_dict("records"), key=lambda r: (float(r["onset"]), int(r["word_index"])))
    passages: list[Passage] = []
    known: list[dict[int, str]] = []
    for r in records:
        story = _story_of(int(r.get("volume", -1)), stories)
        onset = float(r["onset"])
        if not passages or passages[-1].story != story or onset - passages[-1].end > PASSAGE_GAP_S:
            passages.append(Passage(story=story, start=onset, end=onset))
            known.append({})
        passage, words = passages[-1], known[-1]
        passage.end = onset
        words.update(_context_words(r))
        index, word = int(r["word_index"]), str(r["word"])
        same = next((e for e in passage.entries if e.word.lower() == word.lower()
                     and 0 < index - max(e.indices) <= MERGE_WORDS), None)
        if same is not None:  # a repeat inside the shown context: one entry
            same.indices.append(index)
            same.rank = min(same.rank, int(r["rank"]))
            if abs(float(r["response"])) > abs(same.response):
                same.response = float(r["response"])
            continue
        passage.entries.append(WordEntry(word=word, rank=int(r["rank"]), response=float(r["response"]),
                                         onset=onset, indices=[index], context=str(r["context"])))
    for passage, words in zip(passages, known):
        listed = {i for e in passage.entries for i in e.indices}
        passage.text = _join(words, range(min(words), max(words) + 1), listed)
        for entry in passage.entries:  # a merged entry shows all its occurrences
            if len(entry.indices) > 1:
                lo, hi = min(entry.indices), max(entry.indices)
                shown = range(max(min(words), lo - 6), min(max(words), hi + 4) + 1)
                entry.context = _join(words, shown, set(entry.indices))
        passage.entries.sort(key=lambda e: e.rank)
    passages.sort(key=lambda p: min(e.rank for e in p.entries))
    return passages


def passage_note(passages: list[Passage]) -> str:
    """One line on how concentrated the list is, e.g. ``'all 10 from one passage: 46–50 s of
    pieman'``, ``'9 of 15 from one passage: 46–50 s'`` or ``'15 words from 12 passages'``."""
    if not passages:
        return ""
    total = sum(p.n_words for p in passages)
    largest = max(passages, key=lambda p: p.n_words)
    where = largest.span() + (f" of {largest.story}" if largest.story else "")
    if len(passages) == 1:
        return f"all {total} from one passage: {where}"
    if largest.n_words >= max(3, total / 2):
        return f"{largest.n_words} of {total} from one passage: {where}"
    return f"{total} words from {len(passages)} passages"
