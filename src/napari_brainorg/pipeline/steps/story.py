"""Step ``story``: the timed words placed in the scan's volumes, and the nuisance regressors.

Reads
    the story files (``story.path``, or each of ``stories:``) and their events files.
Writes
    ``story/words.tsv`` (words without pause labels, with their volume) and
    ``story/nuisance.tsv`` (word rate, word length and frequency, pauses: HRF-convolved
    like the ANs). With several stories each is read, aligned and run on its own (its
    words go to its own volumes, with its own TR: the HRF never carries one story into
    the next), then stacked in story order::

        story/stories.tsv            story, source, onset, tr, n_volumes, first_volume, n_words
        story/<story>/words.tsv      that story's words (volume within the story)
        story/<story>/nuisance.tsv   that story's confounds
        story/words.tsv              every story's words: story column, volume on the stacked axis
        story/nuisance.tsv           every story's confounds, stacked

Sets
    ``ctx.runs`` = [(story, n_volumes, tr), ...] (where each story's rows are) and
    ``ctx.confounds`` (the stacked nuisance table).
Key
    each story's options except its paths, the onset, the alignment method, and the
    contents of the story and events files.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..context import StepContext, story_file


def step_story(ctx: StepContext):
    """Timed words without pause labels -> story/words.tsv; nuisance regressors on the
    volume grid (same operator as the ANs) -> story/nuisance.tsv and ``ctx.confounds``."""
    import warnings

    import pandas as pd

    from ...features.alignment import volume_of_words
    from ...features.nuisance import PauseLabelsWarning, nuisance_regressors, remove_pause_labels
    from ...io.stimuli import read_story, read_story_onset

    if ctx.config.multi_story:  # each story on its own, stacked (pipeline._stories)

        return step_stories(ctx)
    cfg = ctx.config.story
    ctx.runs = [(cfg.label, cfg.n_volumes, cfg.tr)]
    onset = read_story_onset(cfg.events) if cfg.events else cfg.onset
    words = read_story(cfg.path, onset=onset)
    words, n_pause_labels = remove_pause_labels(words, cfg.pause_labels)
    outputs = ["story/words.tsv", "story/nuisance.tsv"]
    # paths are not part of a key (a moved study is the same study): their contents are
    if ctx.cached("story", [cfg.model_dump(mode="json", exclude={"path", "events"}), onset,
                            ctx.config.features.alignment], outputs,
                  inputs=[story_file(cfg.path), cfg.events]):
        nuisance = pd.read_csv(ctx.out / outputs[1], sep="\t", index_col="volume")
    else:
        df = words.to_dataframe()
        df["volume"] = volume_of_words(words.onsets, cfg.n_volumes, cfg.tr)
        ctx.writer.write_table(outputs[0], df)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PauseLabelsWarning)  # already removed and warned above
            nuisance = nuisance_regressors(words, cfg.tr, cfg.n_volumes, alignment=ctx.config.features.alignment,
                                           pause_labels=None, min_pause=cfg.min_pause)
        ctx.writer.write_table(outputs[1], nuisance.reset_index())
        ctx.done("story", {"nuisance": nuisance.attrs.get("provenance", {})})
    ctx.confounds = nuisance
    n_in = int(((words.onsets >= 0) & (words.onsets < cfg.n_volumes * cfg.tr)).sum())
    ctx.summary["story"] = {"source": words.source, "onset": onset, "n_words": len(words),
                            "n_words_in_scan": n_in, "n_filled_times": int((~words.measured).sum()),
                            "n_pause_labels_removed": n_pause_labels,
                            "nuisance_regressors": list(nuisance.columns)}
    return words


def step_stories(ctx):
    """Read every story: words -> ``story/<story>/``; stacked tables; ``ctx.runs``.

    Returns
    -------
    words : list of WordEvents
        One per story, in order (pause labels removed).
    """
    import pandas as pd

    from ...features.alignment import volume_of_words
    from ...features.nuisance import PauseLabelsWarning, nuisance_regressors, remove_pause_labels
    from ...io.stimuli import read_story, read_story_onset

    config = ctx.config
    alignment = config.features.alignment
    all_words, runs, rows, frames, nuisances, key_parts, inputs = [], [], [], [], [], [], []
    for cfg in config.story_list:
        onset = read_story_onset(cfg.events) if cfg.events else cfg.onset
        words = read_story(cfg.path, onset=onset)
        words, n_pause = remove_pause_labels(words, cfg.pause_labels)
        all_words.append(words)
        runs.append((cfg.label, cfg.n_volumes, cfg.tr))
        rows.append({"story": cfg.label, "source": words.source, "onset": onset, "tr": cfg.tr,
                     "n_volumes": cfg.n_volumes, "n_words": len(words), "n_pause_labels_removed": n_pause,
                     "n_words_in_scan": int(((words.onsets >= 0) & (words.onsets < cfg.n_volumes * cfg.tr)).sum())})
        key_parts.append([cfg.model_dump(mode="json", exclude={"path", "events"}), onset])
        inputs += [story_file(cfg.path), cfg.events]
    starts = np.cumsum([0] + [n for _, n, _ in runs])
    for row, start in zip(rows, starts[:-1]):
        row["first_volume"] = int(start)
    names = [r[0] for r in runs]
    outputs = ["story/words.tsv", "story/nuisance.tsv", "story/stories.tsv",
               *[f"story/{n}/{f}" for n in names for f in ("words.tsv", "nuisance.tsv")]]
    if ctx.cached("story", [key_parts, alignment], outputs, inputs=inputs):
        for n in names:
            nuisances.append(pd.read_csv(ctx.out / f"story/{n}/nuisance.tsv", sep="\t", index_col="volume"))
    else:
        for (name, n_volumes, tr), words, cfg, start in zip(runs, all_words, config.story_list, starts):
            df = words.to_dataframe()
            df["volume"] = volume_of_words(words.onsets, n_volumes, tr)
            ctx.writer.write_table(f"story/{name}/words.tsv", df)
            stacked = df.copy()
            stacked.insert(0, "story", name)
            stacked["volume"] = np.where(df["volume"] >= 0, df["volume"] + start, -1)
            frames.append(stacked)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PauseLabelsWarning)  # removed and warned above
                nuisance = nuisance_regressors(words, tr, n_volumes, alignment=alignment, pause_labels=None,
                                               min_pause=cfg.min_pause)
            ctx.writer.write_table(f"story/{name}/nuisance.tsv", nuisance.reset_index())
            nuisances.append(nuisance)
        ctx.writer.write_table("story/words.tsv", pd.concat(frames, ignore_index=True))
        ctx.writer.write_table("story/stories.tsv", pd.DataFrame(rows))
        ctx.writer.write_table("story/nuisance.tsv", _stack_nuisance(nuisances, names).reset_index())
        ctx.done("story", {"nuisance": nuisances[0].attrs.get("provenance", {})})
    ctx.runs = runs
    ctx.confounds = _stack_nuisance(nuisances, names)
    ctx.summary["story"] = {
        "source": " + ".join(str(r["source"]) for r in rows), "onset": rows[0]["onset"],
        "n_words": int(sum(r["n_words"] for r in rows)), "n_words_in_scan": int(sum(r["n_words_in_scan"] for r in rows)),
        "n_pause_labels_removed": int(sum(r["n_pause_labels_removed"] for r in rows)),
        "nuisance_regressors": [c for c in ctx.confounds.columns if c != "story"]}
    ctx.summary["stories"] = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows]
    return all_words


def _stack_nuisance(tables, names):
    """The stories' confounds one after another, on the stacked volume axis; a column
    that a story lacks is 0 there."""
    import pandas as pd

    parts = []
    start = 0
    for table, name in zip(tables, names):
        t = table.reset_index(drop=True).select_dtypes("number")
        t.index = np.arange(start, start + len(t))
        start += len(t)
        parts.append(t)
    out = pd.concat(parts).fillna(0.0)
    out.index.name = "volume"
    return out
