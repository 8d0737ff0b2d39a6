"""Top words from the extraction's kept word activations against a second pass of the model.

On one bundled story and one bundled model (the pipeline's own steps, one folder):

1. the features step with the word activations kept and, in a second folder, without
   them (``features.word_activations_max_gb`` 0): wall time and disk size;
2. the top-words step reading ``word_activations.npy`` ("after") and the same step with
   the file hidden, which runs the model over the story again ("before"): wall and CPU
   time, the peak of numpy's memory during the step (tracemalloc: the arrays of word
   activations; torch's own memory for the model is not traced), and whether
   ``word_responses.npy`` and ``top_words.tsv`` are identical;
3. the same step reading the activations rounded to float16 (half the disk): the
   largest change of the word responses and how many top-words entries change.

Run::

    nice -n 10 python benchmarks/bench_top_words.py [--model smollm2] [--story pieman] [--volumes 300]

Prints the load average at the start and the end (a loaded machine inflates wall times).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np


def _timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def _steps(out: Path, args, budget_gb: float):
    """Story and features in ``out``; (context, words, features seconds)."""
    from napari_brainorg.io.results import ResultWriter
    from napari_brainorg.pipeline import make_config
    from napari_brainorg.pipeline.context import StepContext
    from napari_brainorg.pipeline.steps.features import step_features
    from napari_brainorg.pipeline.steps.story import step_story

    config = make_config({
        "story": {"path": args.story, "tr": 1.5, "n_volumes": args.volumes, "onset": 0.0},
        "features": {"models": [args.model], "center_words": True, "word_activations_max_gb": budget_gb},
        "atoms": {"n_atoms": args.atoms, "max_iter": args.max_iter},
        "out": str(out),
    })
    ctx = StepContext(config, ResultWriter(out), None, None)
    words = step_story(ctx)
    ans, wall, _ = _timed(step_features, ctx, words, args.model)
    return ctx, words, ans, wall


def _top_words(ctx, words, model, codes, index):
    """The top-words step run afresh; (word responses, table, wall s, CPU s, traced peak MB)."""
    import pandas as pd

    from napari_brainorg.pipeline.steps.top_words import step_top_words

    (ctx.out / f".cache/top_words/{model}.json").unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the second pass says it runs the model again
        tracemalloc.start()
        try:
            _, wall, cpu = _timed(step_top_words, ctx, words, model, model, codes, index)
            peak = tracemalloc.get_traced_memory()[1] / 1e6
        finally:
            tracemalloc.stop()
    return (np.load(ctx.out / f"atoms/{model}/word_responses.npy"),
            pd.read_csv(ctx.out / f"atoms/{model}/top_words.tsv", sep="\t", keep_default_na=False), wall, cpu, peak)


def _compare(a, b) -> str:
    responses_a, table_a = a[:2]
    responses_b, table_b = b[:2]
    same_words = (table_a["word_index"].to_numpy() == table_b["word_index"].to_numpy())
    scale = float(np.abs(responses_a).max())
    return (f"word_responses identical: {np.array_equal(responses_a, responses_b)} (max |diff| "
            f"{np.abs(responses_a - responses_b).max():.2e}, {np.abs(responses_a - responses_b).max() / scale:.1e} "
            f"of the largest); top_words.tsv entries with another word: {int((~same_words).sum())} of "
            f"{len(same_words)}; max |diff| of the z responses "
            f"{np.abs(table_a['response'] - table_b['response']).max():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--story", default="pieman")
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--atoms", type=int, default=16)
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--out", default=None, help="folder for the two results (default: a temporary one)")
    args = parser.parse_args()

    from napari_brainorg.features.models import load_language_model
    from napari_brainorg.features.word_activations import WORD_ACTIVATIONS_FILE
    from napari_brainorg.pipeline.steps.atoms import step_atoms

    base = Path(args.out or tempfile.mkdtemp(prefix="bench_top_words_"))
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; {args.model} on "
          f"{args.story} ({args.volumes} volumes); results in {base}")
    load_language_model(args.model)  # the weights in the page cache before anything is timed

    _, _, _, wall_without = _steps(base / "without", args, 0.0)
    ctx, words, ans, wall_with = _steps(base / "with", args, 2.0)
    folder = ctx.out / "features" / args.model
    kept = folder / WORD_ACTIVATIONS_FILE
    print(f"{len(words)} words, {ans.provenance['n_ans']} ANs ({ans.n_ans} kept in the AN responses)")
    print(f"features step: {wall_without:.1f} s without keeping the word activations, {wall_with:.1f} s keeping "
          f"them; folder {_size_mb(base / 'without/features' / args.model):.1f} MB -> {_size_mb(folder):.1f} MB "
          f"({WORD_ACTIVATIONS_FILE} {_size_mb(kept):.1f} MB float32, {_size_mb(kept) / 2:.1f} MB in float16)")

    _, codes, index = step_atoms(ctx, ans, args.model)
    after = _top_words(ctx, words, args.model, codes, index)
    hidden = kept.with_name("hidden.npy")
    kept.rename(hidden)
    try:
        before = _top_words(ctx, words, args.model, codes, index)
    finally:
        hidden.rename(kept)
    print(f"top-words step, before (second pass of the model): {before[2]:.2f} s wall, {before[3]:.2f} s CPU, "
          f"numpy peak {before[4]:.0f} MB")
    print(f"top-words step, after (reading {WORD_ACTIVATIONS_FILE}):   {after[2]:.2f} s wall, {after[3]:.2f} s CPU, "
          f"numpy peak {after[4]:.0f} MB ({before[2] / max(after[2], 1e-9):.1f}x faster)")
    print("  " + _compare(before, after))

    # float16: the same file with its values rounded to half precision
    shutil.copyfile(kept, hidden)
    try:
        rounded = np.load(kept).astype(np.float16).astype(np.float32)
        np.save(kept, rounded)
        del rounded
        half = _top_words(ctx, words, args.model, codes, index)
    finally:
        os.replace(hidden, kept)
    print("float16 storage against float32: " + _compare(after, half))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
