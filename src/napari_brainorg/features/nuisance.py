"""Low-level nuisance regressors of a story, and the pause labels of forced aligners.

What a voxel's response to speech owes to *how much* is said and *how plain* it is
(not to what a model makes of it) is captured by four regressors on the volume grid,
each built with the same word -> volume operator ``H`` as the ANs
(:func:`.alignment.hrf_operator`, the feature step's ``alignment``), so an atom and a
confound are on the same footing:

``word_rate``
    ``H @ 1``: every word an event of amplitude 1 (words per second through the HRF).
``word_length``
    ``H @ (letters - mean)``: a parametric modulator, each word's number of letters
    (letters and digits) centred over the story's words, so it carries length beyond
    rate (SPM's convention for parametric modulators).
``word_frequency``
    ``H @ (zipf - mean)``: each word's Zipf frequency (log10 of occurrences per billion
    words + 9) from the ``wordfreq`` package's English lists (bundled with the package,
    no network), centred like ``word_length``. Words ``wordfreq`` does not know get Zipf
    0 (rarer than anything it lists).
``pause``
    Silences inside the story: every gap of at least ``min_pause`` seconds between the
    end of one word and the start of the next (pause labels removed first) is a boxcar
    of its duration through the HRF (``"glover"``/``"spm"``); for the ``"lanczos"`` and
    ``"fir"`` operators, which take onsets only, an event at the gap's middle with the
    gap's duration as amplitude.

Each column is z-scored over volumes (like the ANs); a column with no variance (e.g.
no pause in the scan) is dropped with a :class:`NuisanceWarning`.

Pause labels
------------
Forced aligners write silences and breaths as pseudo-words: Montreal Forced Aligner
and HTK ``sp``/``sil``, Kaldi ``<sil>``/``SIL``, Penn/P2FA ``sp``, CMU Sphinx
``<sil>``/``<s>``/``</s>``, FAVE ``{SL}``/``{LG}`` (laughter) / ``{NS}`` (noise), Festival
``pau``. Read as words they would be run through the language model and counted in the
word rate. :data:`DEFAULT_PAUSE_LABELS` are treated as silence (matched case-blind
after stripping spaces); :func:`remove_pause_labels` drops them and warns with the count.
``<unk>`` and ``spn`` (MFA's "spoken noise") are *not* in the list: they mark speech the
aligner could not transcribe, so the speaker was talking; pass your own list to change it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BrainorgWarning, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from ..io.stimuli import WordEvents

__all__ = [
    "DEFAULT_PAUSE_LABELS",
    "NUISANCE_COLUMNS",
    "NuisanceWarning",
    "PauseLabelsWarning",
    "nuisance_regressors",
    "pause_intervals",
    "remove_pause_labels",
    "word_frequencies",
    "word_lengths",
]

#: Labels of forced aligners read as silence, not words (case-blind).
DEFAULT_PAUSE_LABELS: tuple[str, ...] = (
    "sp", "sil", "sils", "<sil>", "<sp>", "{sl}", "{lg}", "{ns}", "<s>", "</s>", "pau", "silence", "<silence>",
)

#: Columns of :func:`nuisance_regressors`, in order.
NUISANCE_COLUMNS = ("word_rate", "word_length", "word_frequency", "pause")

_LETTERS = re.compile(r"[^\W_]", re.UNICODE)


class PauseLabelsWarning(BrainorgWarning):
    """Pause labels of a forced aligner were found among the words and removed."""


class NuisanceWarning(BrainorgWarning):
    """A nuisance regressor had no variance over the volumes and was left out."""


def _labels(pause_labels: Iterable[str] | None) -> frozenset[str]:
    if pause_labels is None:
        return frozenset()
    if isinstance(pause_labels, str):
        raise ConfigError(f"'pause_labels' must be a list of labels; the string {pause_labels!r} was provided.")
    return frozenset(str(p).strip().lower() for p in pause_labels)


def remove_pause_labels(words: WordEvents, pause_labels: Iterable[str] | None = DEFAULT_PAUSE_LABELS,
                        *, warn: bool = True) -> tuple[WordEvents, int]:
    """Drop the words that are pause labels.

    An empty word is not a pause label: it stays (a word without tokens contributes
    nothing to the ANs, see :mod:`.extract`; it counts in the word rate).

    Parameters
    ----------
    words : WordEvents
    pause_labels : iterable of str or None
        Labels read as silence, compared case-blind after stripping spaces. None or an
        empty list keeps every word.

    Returns
    -------
    words : WordEvents
        The words without the pause labels (same source and onset shift).
    n_removed : int

    Warns
    -----
    PauseLabelsWarning
        With the count and the labels found, when any were removed.
    """
    from ..io.stimuli import WordEvents

    labels = _labels(pause_labels)
    if not labels:
        return words, 0
    is_pause = np.array([w.strip().lower() in labels for w in words.words], dtype=bool)
    n = int(is_pause.sum())
    if n == 0:
        return words, 0
    if warn:
        found = sorted({words.words[i].strip() for i in np.flatnonzero(is_pause)})
        warnings.warn(
            f"{n} of {len(words)} entries of {words.source or 'the story'} are pause labels {found} "
            "and were treated as silence, not words (option pause_labels).",
            PauseLabelsWarning, stacklevel=2,
        )
    keep = ~is_pause
    kept = WordEvents(words=tuple(w for w, k in zip(words.words, keep) if k), onsets=words.onsets[keep],
                      offsets=words.offsets[keep], measured=words.measured[keep], source=words.source,
                      onset_shift=words.onset_shift)
    return kept, n


def pause_intervals(words: WordEvents, min_pause: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Silences between words: (onsets, durations) of the gaps of at least ``min_pause`` s.

    A gap runs from the latest offset of the words so far to the next word's onset;
    only gaps inside the story (between its first and its last word) count.
    """
    if not np.isfinite(min_pause) or min_pause < 0:
        raise ConfigError(f"'min_pause' must be a number of seconds >= 0; {min_pause!r} was provided.")
    if len(words) < 2:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(words.onsets, kind="stable")
    on, off = words.onsets[order], words.offsets[order]
    ends = np.maximum.accumulate(off)[:-1]
    gaps = on[1:] - ends
    keep = gaps >= max(min_pause, 1e-9)
    return ends[keep], gaps[keep]


def word_lengths(words: Iterable[str]) -> np.ndarray:
    """Number of letters and digits of each word (punctuation not counted)."""
    return np.array([len(_LETTERS.findall(w)) for w in words], dtype=np.float64)


def word_frequencies(words: Iterable[str], language: str = "en") -> np.ndarray:
    """Zipf frequency of each word from ``wordfreq`` (0 for words it does not list).

    Raises
    ------
    ImportError
        When ``wordfreq`` is not installed (a dependency of napari-brainorg).
    """
    try:
        from wordfreq import zipf_frequency
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("word frequencies need the 'wordfreq' package: pip install wordfreq") from exc
    cache: dict[str, float] = {}
    values = []
    for w in words:
        key = w.strip()
        if key not in cache:
            cache[key] = float(zipf_frequency(key, language)) if key else 0.0
        values.append(cache[key])
    return np.asarray(values, dtype=np.float64)


def nuisance_regressors(
    words: WordEvents,
    tr: float,
    n_volumes: int,
    *,
    alignment: str = "glover",
    alignment_options: dict | None = None,
    pause_labels: Iterable[str] | None = DEFAULT_PAUSE_LABELS,
    min_pause: float = 0.3,
    language: str = "en",
    zscore: bool = True,
) -> pandas.DataFrame:
    """Low-level regressors of a story on the volume grid (see the module's description).

    Parameters
    ----------
    words : WordEvents
        The story's timed words (scan times). Pause labels among them are removed first.
    tr : float
        Repetition time, seconds.
    n_volumes : int
    alignment : {"glover", "spm", "lanczos", "fir"}
        The word -> volume operator, the same as the ANs'.
    alignment_options : dict or None
        ``oversampling``, ``frame_offset``, ``lanczos_window``, ``fir_delays`` of
        :func:`.alignment.hrf_operator`.
    pause_labels : iterable of str or None
        Labels read as silence (:data:`DEFAULT_PAUSE_LABELS`).
    min_pause : float
        Shortest gap between words counted as a pause, seconds.
    language : str
        ``wordfreq`` language code of the word frequencies.
    zscore : bool
        Z-score each column over volumes (default, like the ANs).

    Returns
    -------
    pandas.DataFrame of shape (n_volumes, n_regressors)
        Columns among :data:`NUISANCE_COLUMNS` (those with variance), index the volume.
        ``attrs["provenance"]`` records the options and the counts.

    Warns
    -----
    PauseLabelsWarning, NuisanceWarning
    """
    import pandas as pd

    from .alignment import ALIGNMENT_METHODS, hrf_operator
    from ..errors import check_choice

    check_choice("alignment", alignment, ALIGNMENT_METHODS)
    options = {k: v for k, v in dict(alignment_options or {}).items() if k != "durations"}
    clean, n_pauses = remove_pause_labels(words, pause_labels)
    H = hrf_operator(clean.onsets, n_volumes, tr, method=alignment, **options)
    lengths = word_lengths(clean.words)
    zipf = word_frequencies(clean.words, language)
    columns = {
        "word_rate": H.sum(axis=1),
        "word_length": H @ (lengths - lengths.mean()) if len(clean) else np.zeros(n_volumes),
        "word_frequency": H @ (zipf - zipf.mean()) if len(clean) else np.zeros(n_volumes),
    }
    p_on, p_dur = pause_intervals(clean, min_pause)
    if alignment in ("glover", "spm"):
        P = hrf_operator(p_on, n_volumes, tr, method=alignment, durations=p_dur, **options)
        columns["pause"] = P.sum(axis=1)
    else:
        P = hrf_operator(p_on + p_dur / 2, n_volumes, tr, method=alignment, **options)
        columns["pause"] = P @ p_dur
    df = pd.DataFrame(columns)
    dropped = []
    for name in list(df.columns):
        col = df[name].to_numpy()
        sd = col.std()
        if not np.isfinite(sd) or sd <= 1e-9 * max(np.sqrt(np.mean(col ** 2)), 1e-300):
            dropped.append(name)
            df = df.drop(columns=name)
        elif zscore:
            df[name] = (col - col.mean()) / sd
    if dropped:
        warnings.warn(f"nuisance regressors {dropped} have no variance over the {n_volumes} volumes "
                      "and were left out.", NuisanceWarning, stacklevel=2)
    df.index.name = "volume"
    df.attrs["provenance"] = {
        "alignment": alignment, "alignment_options": {k: v for k, v in options.items()},
        "pause_labels": sorted(_labels(pause_labels)), "n_pause_labels_removed": n_pauses,
        "n_pauses": int(p_on.size), "min_pause": float(min_pause),
        "word_frequency": f"wordfreq zipf_frequency(word, {language!r}), centred; 0 for unknown words",
        "word_length": "letters and digits per word, centred", "zscore": bool(zscore), "dropped": dropped,
    }
    return df
