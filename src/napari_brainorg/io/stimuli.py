"""Stories as timed words: one :class:`WordEvents` type from every common format.

Readers
-------
- Gentle ``align.json`` (words whose ``case`` is not ``"success"`` have no times);
- Narratives ``align.csv``: no header, ``word, aligned_word|<unk>, onset, offset``,
  some rows without times;
- CSV/TSV with a header naming ``word``, ``onset`` and ``offset`` (or ``duration``);
- Praat TextGrid, long and short text formats (the word tier; empty intervals are
  silences).

Word times missing in a file are filled in from their measured neighbours (see
:func:`read_story`) and counted in one :class:`~napari_brainorg.errors.FilledTimesWarning`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import (
    BrainorgWarning,
    ConfigError,
    FilledTimesWarning,
    StoryFormatError,
    check_choice,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "STORY_FORMATS",
    "UnsortedWordsWarning",
    "WordEvents",
    "read_story",
    "read_story_onset",
]

#: Values of ``fmt`` in :func:`read_story`.
STORY_FORMATS = ("auto", "gentle_json", "narratives_csv", "table", "textgrid")

_EXTENSIONS = {
    ".json": "gentle_json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".textgrid": "textgrid",
}

_WORD_COLUMNS = ("word", "text", "token")
_ONSET_COLUMNS = ("onset", "start")
_OFFSET_COLUMNS = ("offset", "end", "stop")


class UnsortedWordsWarning(BrainorgWarning):
    """Word onsets in a story file were not in time order and were sorted."""


@dataclass(frozen=True, eq=False)
class WordEvents:
    """The words of a story and when each was heard in the scan.

    Parameters
    ----------
    words : tuple of str, length n_words
        Each word as spoken (the transcript's spelling, punctuation kept).
    onsets, offsets : ndarray of shape (n_words,), float64
        Start and end of each word in seconds of scan time (``onset_shift`` included).
    measured : ndarray of shape (n_words,), bool
        False where the file had no time for the word and it was filled in.
    source : str
        The file read, or ``"bundled:<name>"`` for a story shipped with the package.
    onset_shift : float
        Seconds added to the file's times (the story's onset in the scan).
    """

    words: tuple[str, ...]
    onsets: np.ndarray
    offsets: np.ndarray
    measured: np.ndarray
    source: str = ""
    onset_shift: float = 0.0

    def __post_init__(self):
        words = tuple(str(w) for w in self.words)
        n = len(words)
        arrays = {}
        for name, dtype in (("onsets", np.float64), ("offsets", np.float64), ("measured", bool)):
            a = np.array(getattr(self, name), dtype=dtype, copy=True).reshape(-1)
            if a.shape != (n,):
                raise StoryFormatError(
                    f"WordEvents {name!r} must have shape ({n},) like 'words'; "
                    f"got shape {np.shape(getattr(self, name))}."
                )
            a.setflags(write=False)
            arrays[name] = a
        if n and not (np.isfinite(arrays["onsets"]).all() and np.isfinite(arrays["offsets"]).all()):
            raise StoryFormatError("WordEvents onsets and offsets must all be finite numbers.")
        object.__setattr__(self, "words", words)
        for name, a in arrays.items():
            object.__setattr__(self, name, a)
        object.__setattr__(self, "onset_shift", float(self.onset_shift))

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        span = (
            f"{self.onsets[0]:.2f}-{self.offsets[-1]:.2f} s" if len(self) else "empty"
        )
        return (
            f"WordEvents({len(self)} words, {span}, {int((~self.measured).sum())} filled, "
            f"onset_shift={self.onset_shift:g}, source={self.source!r})"
        )

    @property
    def n_filled(self) -> int:
        """Number of words whose times were filled in."""
        return int((~self.measured).sum())

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per word: ``word, onset, offset, measured`` (scan seconds)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "word": list(self.words),
                "onset": self.onsets,
                "offset": self.offsets,
                "measured": self.measured,
            }
        )

    def shifted(self, seconds: float) -> WordEvents:
        """Return the same words moved ``seconds`` later in the scan.

        ``onset_shift`` grows by the same amount, so ``onsets - onset_shift`` are always
        the file's own times.
        """
        seconds = _check_onset(seconds, "seconds")
        return WordEvents(
            words=self.words,
            onsets=self.onsets + seconds,
            offsets=self.offsets + seconds,
            measured=self.measured,
            source=self.source,
            onset_shift=self.onset_shift + seconds,
        )


# ----------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    words: list[str]
    onsets: np.ndarray  # NaN where the file gives no time
    offsets: np.ndarray


def _err(path: str, line: int | None, message: str) -> StoryFormatError:
    where = f"{path} line {line}" if line is not None else str(path)
    return StoryFormatError(f"{where}: {message}")


def _parse_time(text: str, path: str, line: int, column: str) -> float:
    """A time cell: a finite number of seconds, or nothing (missing)."""
    text = text.strip()
    if text == "" or text.lower() in ("nan", "n/a", "na", "none"):
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise _err(
            path, line, f"expected a number of seconds (or nothing) for {column}; got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise _err(path, line, f"expected a finite number of seconds for {column}; got {text!r}")
    return value


def _check_pair(onset: float, offset: float, path: str, line: int | str) -> None:
    if offset < onset:
        where = f"{path} line {line}" if isinstance(line, int) else f"{path} {line}"
        raise StoryFormatError(
            f"{where}: expected offset >= onset; got onset {onset!r} and offset {offset!r}"
        )


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Praat writes UTF-16 TextGrids when a label is not ASCII.
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StoryFormatError(
            f"{path}: expected a UTF-8 or UTF-16 text file; byte {exc.start} cannot be decoded"
        ) from None


def _parse_gentle_json(text: str, path: str) -> _Parsed:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _err(path, exc.lineno, f"expected a Gentle align.json; invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("words"), list):
        raise _err(
            path,
            None,
            "expected a Gentle align.json: an object with a 'words' list "
            "(each word with 'word', 'case', 'start', 'end')",
        )
    words: list[str] = []
    onsets = np.full(len(doc["words"]), np.nan)
    offsets = np.full(len(doc["words"]), np.nan)
    for i, item in enumerate(doc["words"]):
        where = f"words[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("word"), str):
            raise StoryFormatError(f"{path} {where}: expected an object with a 'word' string; got {item!r}")
        words.append(item["word"])
        if item.get("case", "success") != "success":
            continue  # Gentle gives no time to words it could not find in the audio
        try:
            start, end = float(item["start"]), float(item["end"])
        except (KeyError, TypeError, ValueError):
            raise StoryFormatError(
                f"{path} {where}: expected numeric 'start' and 'end' for a word with "
                f"case 'success'; got start={item.get('start')!r}, end={item.get('end')!r}"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end)):
            raise StoryFormatError(f"{path} {where}: expected finite 'start' and 'end'; got {start}, {end}")
        _check_pair(start, end, path, where)
        onsets[i], offsets[i] = start, end
    return _Parsed(words, onsets, offsets)


def _csv_rows(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based line numbers."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    line = 1
    for row in reader:
        start = line
        line = reader.line_num + 1
        if not row or all(c.strip() == "" for c in row):
            continue
        rows.append((start, row))
    return rows


def _header_index(cells: list[str]) -> dict[str, int] | None:
    """Column positions of word/onset/offset(/duration) when ``cells`` is a header."""
    names = [c.strip().lower() for c in cells]

    def find(candidates):
        for c in candidates:
            if c in names:
                return names.index(c)
        return None

    word, onset = find(_WORD_COLUMNS), find(_ONSET_COLUMNS)
    if word is None or onset is None:
        return None
    return {"word": word, "onset": onset, "offset": find(_OFFSET_COLUMNS), "duration": find(("duration",))}


def _guess_delimiter(path: Path, first_line: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    if path.suffix.lower() == ".csv":
        return ","
    return "\t" if "\t" in first_line else ","


def _parse_narratives_rows(rows, path: str) -> _Parsed:
    words, onsets, offsets = [], np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for i, (line, row) in enumerate(rows):
        if len(row) != 4:
            raise _err(
                path,
                line,
                "expected 4 comma-separated columns word,aligned_word,onset,offset; "
                f"got {len(row)}",
            )
        word = row[0].strip()
        if not word:
            raise _err(path, line, "expected a word in column 1; got nothing")
        words.append(word)
        onsets[i] = _parse_time(row[2], path, line, "onset (column 3)")
        offsets[i] = _parse_time(row[3], path, line, "offset (column 4)")
        if not (math.isnan(onsets[i]) or math.isnan(offsets[i])):
            _check_pair(onsets[i], offsets[i], path, line)
    return _Parsed(words, onsets, offsets)


def _parse_table_rows(rows, columns: dict, path: str, header_line: int, n_header: int | None = None) -> _Parsed:
    n = len(rows)
    words, onsets, offsets = [], np.full(n, np.nan), np.full(n, np.nan)
    width = max(i for i in columns.values() if i is not None) + 1
    if columns["offset"] is None and columns["duration"] is None:
        raise _err(
            path,
            header_line,
            "expected a header with columns word, onset and offset (or duration); "
            "no 'offset', 'end', 'stop' or 'duration' column",
        )
    for i, (line, row) in enumerate(rows):
        if len(row) < width:
            raise _err(
                path,
                line,
                f"expected at least {width} columns as in the header (line {header_line}); "
                f"got {len(row)}",
            )
        if n_header is not None and len(row) > n_header and any(c.strip() for c in row[n_header:]):
            # an unquoted delimiter inside a word shifts every later column
            raise _err(
                path,
                line,
                f"expected {n_header} columns as in the header (line {header_line}); got {len(row)} "
                "(quote a word that holds the delimiter)",
            )
        word = row[columns["word"]].strip()
        if not word:
            raise _err(path, line, f"expected a word in column {columns['word'] + 1}; got nothing")
        words.append(word)
        onsets[i] = _parse_time(row[columns["onset"]], path, line, "onset")
        if columns["offset"] is not None:
            offsets[i] = _parse_time(row[columns["offset"]], path, line, "offset")
        else:
            duration = _parse_time(row[columns["duration"]], path, line, "duration")
            offsets[i] = onsets[i] + duration
        if not (math.isnan(onsets[i]) or math.isnan(offsets[i])):
            _check_pair(onsets[i], offsets[i], path, line)
    return _Parsed(words, onsets, offsets)


def _parse_csv(text: str, path: Path, fmt: str) -> _Parsed:
    name = str(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), None)
    if first is None:
        raise _err(name, None, "the file is empty; expected one row per word")
    delimiter = _guess_delimiter(path, first)
    rows = _csv_rows(text, delimiter)
    header_line, header = rows[0]
    columns = _header_index(header)
    if fmt == "auto":
        fmt = "table" if columns is not None else "narratives_csv"
    if fmt == "table":
        if columns is None:
            raise _err(
                name,
                header_line,
                "expected a header naming the columns word, onset and offset; "
                f"got {header!r}",
            )
        if len(rows) == 1:
            raise _err(name, None, "the file has a header but no words")
        return _parse_table_rows(rows[1:], columns, name, header_line, n_header=len(header))
    if delimiter != ",":
        raise _err(name, header_line, "expected a comma-separated Narratives align.csv; found tabs")
    return _parse_narratives_rows(rows, name)


# Praat text TextGrids, long or short: the values are the quoted strings, the numbers
# and the <exists> flag, in the same order in both formats; labels such as `xmin =` or
# `item [1]:` are skipped.
_TG_TOKEN = re.compile(
    r'(?P<str>"(?:[^"]|"")*")'
    r"|(?P<idx>\[\s*\d+\s*\])"
    r"|(?P<flag><exists>|<absent>)"
    r"|(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9?]*)"
    r"|(?P<other>\S)",
    re.DOTALL,
)


class _TokenStream:
    def __init__(self, text: str, path: str):
        self.path = path
        self.tokens: list[tuple[str, object, int]] = []
        line, seen = 1, 0
        for m in _TG_TOKEN.finditer(text):
            kind = m.lastgroup
            line += text.count("\n", seen, m.start())
            seen = m.start()
            if kind == "str":
                self.tokens.append(("str", m.group()[1:-1].replace('""', '"'), line))
            elif kind == "num":
                self.tokens.append(("num", float(m.group()), line))
            elif kind == "flag":
                self.tokens.append(("flag", m.group(), line))
        self.pos = 0

    def _next(self, expected: str):
        if self.pos >= len(self.tokens):
            last = self.tokens[-1][2] if self.tokens else 1
            raise _err(self.path, last, f"expected {expected}; the file ends early")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def string(self, what: str) -> tuple[str, int]:
        kind, value, line = self._next(f"a quoted {what}")
        if kind != "str":
            raise _err(self.path, line, f"expected a quoted {what}; got {value!r}")
        return value, line

    def number(self, what: str) -> tuple[float, int]:
        kind, value, line = self._next(f"a number ({what})")
        if kind != "num":
            raise _err(self.path, line, f"expected a number ({what}); got {value!r}")
        return value, line

    def maybe_flag(self) -> None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "flag":
            self.pos += 1


def _parse_textgrid_tiers(text: str, path: str) -> list[dict]:
    if text.startswith("ooBinaryFile"):
        raise _err(path, 1, "expected a text TextGrid; this is Praat's binary format (save it as text)")
    stream = _TokenStream(text, path)
    file_type, line = stream.string("file type")
    if file_type != "ooTextFile":
        raise _err(path, line, f'expected File type = "ooTextFile"; got {file_type!r}')
    object_class, line = stream.string("object class")
    if object_class != "TextGrid":
        raise _err(path, line, f'expected Object class = "TextGrid"; got {object_class!r}')
    stream.number("xmin")
    stream.number("xmax")
    stream.maybe_flag()
    n_tiers, _ = stream.number("number of tiers")
    tiers = []
    for _ in range(int(n_tiers)):
        tier_class, line = stream.string("tier class")
        name, _ = stream.string("tier name")
        stream.number("tier xmin")
        stream.number("tier xmax")
        n_items, _ = stream.number("number of intervals or points")
        if tier_class == "IntervalTier":
            items = []
            for _ in range(int(n_items)):
                xmin, item_line = stream.number("interval xmin")
                xmax, _ = stream.number("interval xmax")
                label, _ = stream.string("interval text")
                items.append((xmin, xmax, label, item_line))
        elif tier_class == "TextTier":
            items = []
            for _ in range(int(n_items)):
                time, item_line = stream.number("point time")
                label, _ = stream.string("point mark")
                items.append((time, time, label, item_line))
        else:
            raise _err(path, line, f'expected tier class "IntervalTier" or "TextTier"; got {tier_class!r}')
        tiers.append({"class": tier_class, "name": name, "items": items, "line": line})
    return tiers


_PHONE_TIERS = ("phone", "phones", "phoneme", "phonemes", "segment", "segments", "phon", "mau")


def _is_phone_tier(name: str) -> bool:
    return name.strip().lower() in _PHONE_TIERS


def _parse_textgrid(text: str, path: str, tier: str | None) -> _Parsed:
    if not text.strip():
        raise _err(path, None, "the file is empty; expected a Praat TextGrid")
    tiers = _parse_textgrid_tiers(text, path)
    intervals = [t for t in tiers if t["class"] == "IntervalTier"]
    names = [t["name"] for t in tiers]
    if tier is not None:
        chosen = [t for t in tiers if t["name"] == tier] or [
            t for t in tiers if t["name"].lower() == tier.lower()
        ]
        if not chosen:
            raise _err(path, None, f"expected a tier named {tier!r}; the tiers are {names}")
        chosen = chosen[0]
        if chosen["class"] != "IntervalTier":
            raise _err(path, chosen["line"], f"expected tier {tier!r} to be an IntervalTier (words with start and end); it is a TextTier")
    else:
        named = [t for t in intervals if t["name"].strip().lower() in ("words", "word")]
        if named:
            chosen = named[0]
        elif len(intervals) == 1 and not _is_phone_tier(intervals[0]["name"]):
            chosen = intervals[0]
        elif len(intervals) == 1:
            raise _err(path, intervals[0]["line"],
                       f"the only interval tier, {intervals[0]['name']!r}, holds phones, not words; expected a "
                       "tier of words named 'words' or 'word'")
        elif intervals:
            raise _err(path, None, f"expected a tier of words named 'words' or 'word' (or give tier=); "
                       f"the interval tiers are {[t['name'] for t in intervals]}")
        else:
            raise _err(
                path,
                None,
                f"expected an interval tier of words (named 'words' or 'word'); the tiers are "
                f"{[(t['name'], t['class']) for t in tiers]}",
            )
    words, onsets, offsets = [], [], []
    for xmin, xmax, label, line in chosen["items"]:
        label = label.strip()
        if not label:
            continue  # an empty interval is a silence
        _check_pair(xmin, xmax, path, line)
        words.append(label)
        onsets.append(xmin)
        offsets.append(xmax)
    return _Parsed(words, np.asarray(onsets, float), np.asarray(offsets, float))


# ------------------------------------------------------------------------------ filling


def _fill_missing(onsets: np.ndarray, offsets: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill NaN times by linear interpolation over word position.

    Between two measured words, onsets (and offsets) are interpolated linearly in the
    word index. Before the first and after the last measured word, words are laid end
    to end with the median duration of the measured words.
    """
    measured = np.isfinite(onsets) & np.isfinite(offsets)
    n = onsets.size
    if measured.all():
        return onsets, offsets, measured
    if not measured.any():
        raise _err(path, None, f"expected at least one word with an onset and an offset; none of the {n} words has both")
    position = np.arange(n)
    known = position[measured]
    duration = float(np.median(offsets[measured] - onsets[measured]))
    onsets = onsets.copy()
    offsets = offsets.copy()
    # A word with only one of its two times keeps it; the other comes from its neighbours.
    fill_on = ~np.isfinite(onsets)
    fill_off = ~np.isfinite(offsets)
    onsets[fill_on] = np.interp(position[fill_on], known, onsets[measured])
    offsets[fill_off] = np.interp(position[fill_off], known, offsets[measured])
    first, last = known[0], known[-1]
    before = position < first
    after = position > last
    if before.any():
        steps = (first - position).astype(float)
        laid_on = np.maximum(onsets[first] - steps * duration, 0.0)
        laid_off = np.minimum(laid_on + duration, onsets[first])
        onsets[before & fill_on] = laid_on[before & fill_on]
        offsets[before & fill_off] = laid_off[before & fill_off]
    if after.any():
        steps = (position - last).astype(float)
        laid_on = offsets[last] + (steps - 1) * duration
        onsets[after & fill_on] = laid_on[after & fill_on]
        offsets[after & fill_off] = laid_on[after & fill_off] + duration
    offsets = np.maximum(offsets, onsets)
    return onsets, offsets, measured


def _check_onset(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name!r} must be a number of seconds; {value!r} was provided.") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name!r} must be a finite number of seconds; {value!r} was provided.")
    return value


def _resolve(story) -> tuple[Path, str]:
    """A path, or a bundled story name, to (file, source label)."""
    if isinstance(story, (str, os.PathLike)) and os.path.exists(story):
        path = Path(story)
        if path.is_dir():
            for candidate in ("align.json", "align.csv"):
                if (path / candidate).is_file():
                    return path / candidate, str(path / candidate)
            raise StoryFormatError(
                f"{path} is a folder without align.json or align.csv; give the story file itself."
            )
        return path, str(path)
    if isinstance(story, str) and not any(s in story for s in ("/", "\\", ".")):
        from ..datasets import story_path

        return story_path(story), f"bundled:{story}"
    if not isinstance(story, (str, os.PathLike)):
        raise StoryFormatError(
            f"'story' must be a path or a bundled story name; {type(story).__name__} was provided."
        )
    raise FileNotFoundError(f"The story file {os.fspath(story)!r} does not exist.")


def read_story(
    story: str | os.PathLike,
    onset: float = 0.0,
    *,
    fmt: str = "auto",
    tier: str | None = None,
) -> WordEvents:
    """Read a story's timed words.

    Parameters
    ----------
    story : str or path-like
        A file (``.json`` Gentle, ``.csv``/``.tsv``/``.txt`` table or Narratives
        ``align.csv``, ``.TextGrid``), a folder holding ``align.json`` or ``align.csv``,
        or the name of a bundled story (see
        :func:`napari_brainorg.datasets.list_stories`), e.g. ``"pieman"``.
    onset : float
        Seconds added to every time in the file: where the story's audio starts in the
        scan (see :func:`read_story_onset`).
    fmt : {"auto", "gentle_json", "narratives_csv", "table", "textgrid"}
        ``"auto"`` chooses from the extension, and for CSV files from the first row
        (a header naming ``word`` and ``onset`` means a table, otherwise Narratives).
    tier : str or None
        TextGrid only: the tier holding the words. Default: an interval tier named
        ``words`` or ``word`` (any case), else the first interval tier.

    Returns
    -------
    WordEvents
        ``n_words`` words in time order, with scan times.

    Raises
    ------
    StoryFormatError
        A file that cannot be read; the message names the file, the line and what was
        expected.
    ConfigError
        An unknown bundled story name or ``fmt``.
    FileNotFoundError
        A path that does not exist.

    Warns
    -----
    FilledTimesWarning
        When some words had no time in the file: their onsets and offsets are
        interpolated linearly over word position between the nearest measured words;
        words before the first or after the last measured word are laid end to end with
        the median measured duration. ``WordEvents.measured`` marks them.
    UnsortedWordsWarning
        When onsets are not in time order; the words are sorted by onset (stable).
    """
    check_choice("fmt", fmt, STORY_FORMATS)
    onset = _check_onset(onset, "onset")
    path, source = _resolve(story)
    name = str(path)
    kind = fmt
    if kind == "auto":
        suffix = path.suffix.lower()
        if suffix not in _EXTENSIONS:
            raise StoryFormatError(
                f"{name}: cannot tell the story format from the extension {path.suffix!r}; "
                f"expected one of {sorted(set(_EXTENSIONS) - {'.textgrid'}) + ['.TextGrid']}, "
                f"or pass fmt= one of {list(STORY_FORMATS[1:])}."
            )
        kind = _EXTENSIONS[suffix]
    text = _read_text(path)
    if not text.strip():
        raise StoryFormatError(f"{name}: the file is empty; expected one word per row or entry.")
    if kind == "gentle_json":
        parsed = _parse_gentle_json(text, name)
    elif kind == "textgrid":
        parsed = _parse_textgrid(text, name, tier)
    else:
        parsed = _parse_csv(text, path, "auto" if kind == "csv" else kind)
    if not parsed.words:
        raise StoryFormatError(f"{name}: no words found; expected at least one timed word.")

    onsets, offsets, measured = _fill_missing(parsed.onsets, parsed.offsets, name)
    n_filled = int((~measured).sum())
    if n_filled:
        warnings.warn(
            f"filled {n_filled} of {len(parsed.words)} word times in {name} "
            "(linear interpolation between measured neighbours by word position; "
            "median word duration at the ends)",
            FilledTimesWarning,
            stacklevel=2,
        )
    words = parsed.words
    if np.any(np.diff(onsets) < 0):
        n_back = int((np.diff(onsets) < 0).sum())
        order = np.argsort(onsets, kind="stable")
        words = [words[i] for i in order]
        onsets, offsets, measured = onsets[order], offsets[order], measured[order]
        warnings.warn(
            f"{name}: {n_back} word onsets go back in time; the words were sorted by onset "
            "(ties keep the file's order)",
            UnsortedWordsWarning,
            stacklevel=2,
        )
    return WordEvents(
        words=tuple(words),
        onsets=onsets + onset,
        offsets=offsets + onset,
        measured=measured,
        source=source,
        onset_shift=onset,
    )


def read_story_onset(
    events_tsv: str | os.PathLike,
    *,
    stim_file: str | None = None,
    trial_type: str | None = None,
) -> float:
    """Where a story's audio starts in the scan, from a BIDS ``events.tsv``.

    Narratives' word times are relative to the audio file, and the audio file starts in
    the scan at the smallest onset among the events that play it. For pieman the audio
    holds 13 s of music and then the story, so the events are music at 0 s and story at
    15 s, both ``pieman_audio.wav``: the onset to add to the word times is 0 s.

    Parameters
    ----------
    events_tsv : path-like
        A BIDS events file with an ``onset`` column.
    stim_file : str or None
        Keep only rows whose ``stim_file`` names this file (compared by file name, so
        ``"stimuli/pieman_audio.wav"`` matches ``"pieman_audio.wav"``). None: all rows.
    trial_type : str or None
        Keep only rows of this ``trial_type``.

    Returns
    -------
    float
        Seconds from the first volume to the start of the audio.
    """
    import pandas as pd

    path = Path(events_tsv)
    if not path.is_file():
        raise FileNotFoundError(f"The events file {os.fspath(events_tsv)!r} does not exist.")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise StoryFormatError(f"{path}: the file is empty; expected a BIDS events.tsv with an 'onset' column.") from None
    if "onset" not in table.columns:
        raise StoryFormatError(
            f"{path} line 1: expected a tab-separated header with an 'onset' column; "
            f"got columns {list(table.columns)}"
        )
    keep = np.ones(len(table), bool)
    for column, wanted in (("stim_file", stim_file), ("trial_type", trial_type)):
        if wanted is None:
            continue
        if column not in table.columns:
            raise StoryFormatError(
                f"{path}: {column}={wanted!r} was asked for but the file has no {column!r} column; "
                f"columns: {list(table.columns)}"
            )
        values = table[column].str.strip()
        if column == "stim_file":
            match = values.map(lambda v: Path(v).name) == Path(wanted).name
        else:
            match = values == wanted
        if not (keep & match.to_numpy()).any():
            raise StoryFormatError(
                f"{path}: no event has {column} {wanted!r}; the file has "
                f"{sorted(set(values[keep]))}"
            )
        keep &= match.to_numpy()
    onsets = []
    for i in np.flatnonzero(keep):
        cell = table["onset"].iloc[i].strip()
        if cell.lower() in ("", "n/a", "nan"):
            continue
        onsets.append(_parse_time(cell, str(path), int(i) + 2, "onset"))
    if not onsets:
        raise StoryFormatError(f"{path}: no event with a numeric onset among the selected rows.")
    return float(min(onsets))
