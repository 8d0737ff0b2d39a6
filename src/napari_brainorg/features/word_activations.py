"""The word-level activations an extraction keeps: ``word_activations.npy``.

The extraction (:func:`.extract.extract_an_responses`) computes every AN's activation
for every word before the word -> volume operator. With ``cache_dir`` and a size budget
(``word_activations_max_gb``) it keeps them beside the AN responses, so that what
needs them later (each atom's response to each word, ``top_words``) reads them instead
of running the model over the story a second time.

The file is a plain ``.npy`` of float32, shape (n_words, n_ans): one row per word of the
story the extraction read (pause labels removed), one column per AN at the site in the
model's order (layer by layer, unit by unit: :func:`.sites.an_index`), every AN, also
those the AN responses dropped. Rows of words without tokens are zero. It is written
chunk by chunk as the words come out of the model, with positioned writes into a file
of the final size (not through a writable memory map, whose dirty pages would count in
the process's memory until flushed), so memory holds one chunk whatever the story's
length; it is moved to its name only once complete, before ``provenance.json``, whose
``word_activations`` record vouches for it (shape, dtype, the words without tokens) or
says why it was not kept.

Float32, not float16: the top words read from the file are then exactly those of a second
pass of the model. Float16 would halve the disk (the full demo's four stories: 0.95 GiB
for SmolLM2's 46,080 ANs, 0.19 GiB for MiniLM's 9,216) and, on pieman, change the word
responses by up to 2e-4 (MiniLM) and 1e-5 (SmolLM2) of the largest, no top word
(``benchmarks/bench_top_words.py`` prints both).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["WORD_ACTIVATIONS_FILE", "StoredWordActivations", "WordActivationWriter", "open_word_activations"]

#: The file's name in an extraction's folder.
WORD_ACTIVATIONS_FILE = "word_activations.npy"

_DTYPE = np.dtype("<f4")
_GIB = 1024.0 ** 3


def word_activations_bytes(n_words: int, n_ans: int) -> int:
    """Size on disk of the word activations of ``n_words`` words x ``n_ans`` ANs (float32, no header)."""
    return int(n_words) * int(n_ans) * _DTYPE.itemsize


class WordActivationWriter:
    """Streams chunks of word activations into ``folder/word_activations.npy``.

    Parameters
    ----------
    folder : path-like
        The extraction's folder.
    n_words : int
        Rows of the file (the story's words).
    max_gb : float
        The most GiB the file may take; beyond it nothing is written and :meth:`record`
        says why (0: never kept).

    Notes
    -----
    Any file of an earlier extraction is removed when the writer is made: it belongs to
    other inputs, and a file the new ``provenance.json`` does not vouch for is never read.
    """

    def __init__(self, folder: str | os.PathLike, n_words: int, max_gb: float):
        self.target = Path(folder) / WORD_ACTIVATIONS_FILE
        self.target.unlink(missing_ok=True)
        self.n_words = int(n_words)
        self.max_gb = float(max_gb)
        self._tmp: Path | None = None
        self._fd: int | None = None
        self._offset = 0
        self._n_ans: int | None = None
        self._skipped: str | None = None
        self._kept = False
        self._seen = np.zeros(self.n_words, dtype=bool)

    def add(self, word_index: np.ndarray, values) -> None:
        """Write one chunk: ``values`` (torch tensor or ndarray of shape (len(word_index), n_ans))
        into the rows ``word_index`` (sorted, as :func:`.activations.iter_word_activations` yields them)."""
        if self._skipped is not None:
            return
        try:
            self._add(word_index, values)
        except OSError as exc:  # e.g. a full disk or a file-size limit: say which file
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.target)) from exc

    def _add(self, word_index: np.ndarray, values) -> None:
        if self._n_ans is None and not self._open(int(values.shape[1])):
            return
        block = values.cpu().numpy() if hasattr(values, "cpu") else np.asarray(values)
        block = np.ascontiguousarray(block, dtype=_DTYPE)
        word_index = np.asarray(word_index, dtype=np.int64)
        self._seen[word_index] = True
        row_bytes = self._n_ans * _DTYPE.itemsize
        # consecutive words in one write each (a chunk's words are consecutive but for
        # words without tokens, which stay zero)
        breaks = np.flatnonzero(np.diff(word_index) != 1) + 1
        for run in np.split(np.arange(len(word_index)), breaks):
            if run.size:
                data = block[run[0]:run[-1] + 1]
                _pwrite_all(self._fd, memoryview(data).cast("B"), self._offset + int(word_index[run[0]]) * row_bytes)

    def _open(self, n_ans: int) -> bool:
        """Create the temporary file of its final size (zeros); False when over the budget."""
        self._n_ans = n_ans
        size = word_activations_bytes(self.n_words, n_ans)
        if size > self.max_gb * _GIB:
            self._skipped = (f"{self.n_words} words x {n_ans} ANs take {size / _GIB:.2f} GiB in float32, over "
                             f"the budget of {self.max_gb:g} GiB (features.word_activations_max_gb)")
            return False
        from ..io.results import ResultWriter

        ResultWriter(self.target.parent)  # the folder and its marker (the folder was written by napari-brainorg)
        self._tmp = self.target.with_name(f".{WORD_ACTIVATIONS_FILE}.{os.getpid()}.part")
        # the header, then a file of the final size: rows never written (words without tokens) read as zeros
        header = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=_DTYPE, shape=(self.n_words, n_ans))
        self._offset = int(header.offset)
        del header
        self._fd = os.open(self._tmp, os.O_WRONLY)
        return True

    def finish(self) -> dict:
        """Move the complete file to its name; the ``word_activations`` record of the provenance."""
        if self._fd is None:
            return self.record()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.replace(self._tmp, self.target)
        self._tmp = None
        self._kept = True
        return self.record()

    def abort(self) -> None:
        """Remove a partial file (a cancelled or failed extraction)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def record(self) -> dict:
        """What ``provenance.json`` says of the file: kept (shape, dtype, words without tokens) or why not."""
        if not self._kept:
            return {"file": WORD_ACTIVATIONS_FILE, "kept": False,
                    "reason": self._skipped or "no word has a token"}
        return {"file": WORD_ACTIVATIONS_FILE, "kept": True, "dtype": _DTYPE.str,
                "shape": [self.n_words, self._n_ans],
                "columns": "every AN at the site in the model's order (layer by layer, unit by unit)",
                "words_without_tokens": np.flatnonzero(~self._seen).tolist()}


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written (it may write fewer at once)."""
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


class StoredWordActivations:
    """A ``word_activations.npy`` read by blocks of columns through a memory map.

    ``stored[:, columns]`` maps the file, copies the columns (float32) and unmaps it, so
    the pages read do not stay in the process's memory between blocks.

    Attributes
    ----------
    path : Path
    shape : (int, int)
        (n_words, n_ans).
    has_tokens : ndarray of shape (n_words,), bool
        The words the model saw (the others' rows are zero).
    """

    def __init__(self, path: Path, shape: tuple[int, int], has_tokens: np.ndarray):
        self.path, self.shape, self.has_tokens = Path(path), (int(shape[0]), int(shape[1])), has_tokens

    def __getitem__(self, key) -> np.ndarray:
        mapped = np.load(self.path, mmap_mode="r")
        try:
            # the indexing copies the columns out of the map: nothing refers to it afterwards
            return np.asarray(mapped[key], dtype=_DTYPE)
        finally:
            del mapped


def open_word_activations(folder: str | os.PathLike, provenance: dict, n_words: int,
                          words_sha256: str) -> tuple[StoredWordActivations | None, str]:
    """The word activations an extraction kept, or why they cannot be used.

    Parameters
    ----------
    folder : path-like
        The extraction's folder.
    provenance : dict
        Its ``provenance.json``.
    n_words : int
        Words of the story the caller reads them for.
    words_sha256 : str
        That story's hash (:func:`.extract.story_sha256`): the rows must be its words.

    Returns
    -------
    stored : StoredWordActivations or None
    reason : str
        Why ``stored`` is None (empty otherwise).
    """
    path = Path(folder) / WORD_ACTIVATIONS_FILE
    record = provenance.get("word_activations")
    if not isinstance(record, dict):
        return None, f"{str(folder)!r} has no {WORD_ACTIVATIONS_FILE} (extracted by an earlier version)"
    if not record.get("kept"):
        return None, f"the extraction did not keep them: {record.get('reason', 'no reason recorded')}"
    if not path.is_file():
        return None, f"{str(path)!r} is missing"
    if provenance.get("story", {}).get("words_sha256") != words_sha256:
        return None, f"{str(path)!r} holds the words of another story"
    shape = tuple(record.get("shape", ()))
    try:
        header = np.load(path, mmap_mode="r")
        found, dtype = header.shape, header.dtype
        del header
    except (OSError, ValueError) as exc:
        return None, f"{str(path)!r} cannot be read ({exc})"
    if found != shape or dtype != _DTYPE or shape[0] != int(n_words):
        return None, (f"{str(path)!r} has shape {found} and dtype {dtype}; expected {shape} float32 for "
                      f"{n_words} words as provenance.json records")
    has_tokens = np.ones(shape[0], dtype=bool)
    has_tokens[np.asarray(record.get("words_without_tokens", []), dtype=np.int64)] = False
    return StoredWordActivations(path, shape, has_tokens), ""
