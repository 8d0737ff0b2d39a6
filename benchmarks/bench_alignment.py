"""Time to build the word -> volume operator H, against nilearn one word at a time.

Run: ``nice -n 10 python benchmarks/bench_alignment.py``. Prints, for the shortest and
the longest bundled stories, the seconds to build H with each method and the seconds
nilearn's ``compute_regressor`` takes for the same columns (one call per word), and
the largest relative difference between the two.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from napari_brainorg.errors import FilledTimesWarning
from napari_brainorg.features.alignment import ALIGNMENT_METHODS, hrf_operator
from napari_brainorg.io.stimuli import read_story

TR = 1.5


def _best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    from nilearn.glm.first_level import compute_regressor

    warnings.simplefilter("ignore", FilledTimesWarning)
    for story in ("pieman", "slumlordreach"):
        words = read_story(story)
        n_volumes = int(np.ceil(words.offsets[-1] / TR)) + 20
        print(f"{story}: {len(words)} words, {n_volumes} volumes (TR {TR} s)")
        for method in ALIGNMENT_METHODS:
            seconds, H = _best_of(lambda m=method: hrf_operator(words.onsets, n_volumes, TR, method=m))
            print(f"  {method:8s} {seconds * 1e3:9.1f} ms  H {H.shape}, {H.nbytes / 2**20:.1f} MiB")
        H = hrf_operator(words.onsets, n_volumes, TR)
        frame_times = np.arange(n_volumes) * TR
        sample = np.linspace(0, len(words) - 1, 50).astype(int)
        start = time.perf_counter()
        worst = 0.0
        for w in sample:
            ref, _ = compute_regressor(
                np.array([[words.onsets[w]], [0.0], [1.0]]), "glover", frame_times, oversampling=50
            )
            worst = max(worst, float(np.abs(H[:, w] - ref[:, 0]).max() / np.abs(ref).max()))
        per_word = (time.perf_counter() - start) / sample.size
        print(
            f"  nilearn compute_regressor: {per_word * 1e3:.2f} ms a word, "
            f"{per_word * len(words):.1f} s for all {len(words)} words; "
            f"max relative difference {worst:.1e}"
        )


if __name__ == "__main__":
    main()
