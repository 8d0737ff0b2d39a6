"""How long a Cancel takes to stop AN extraction, or a whole pipeline run at any stage.

For each bundled model, ``extract_an_responses`` runs on the pieman story (TR 1.5 s, 300
volumes, the pipeline's default chunk of 512 words) in a thread: once to time it (``T``),
then ``--repeats`` times with the cancel event set at moments spread over 15-75 % of ``T``
(inside forward passes and between them); the figure is the wall time from setting it to
the extraction raising ``CancelledError``. Target: under 1 s. Median and max; the machine's
load is printed (load stretches every figure).

With ``--pipeline``, a whole run of the quick design with both bundled models (a fresh
folder each time, in a thread, as the pipeline widget runs it) is timed once, then
cancelled at ``--repeats`` moments spread over 3-97 % of its time; each figure is printed
with the stage the run was in (its last progress report), so every stage of a run is
covered: extraction, the dictionary, simulation, encoding, network tests, the report.

Run::

    python benchmarks/bench_cancel.py [--models minilm smollm2] [--repeats 3]
    python benchmarks/bench_cancel.py --pipeline [--repeats 12] [--span 0.6 0.97]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time


def timed_cancel(work, after: float | None, where=lambda: "") -> tuple[float, str]:
    """Run ``work(cancel)`` in a thread and set ``cancel`` ``after`` seconds in; returns the
    seconds from setting it to ``work`` raising ``CancelledError`` (minus the seconds to its
    end when it finished anyway, past its last check; NaN when it finished before the cancel)
    and ``where()`` at the moment it was set. ``after=None``: not cancelled, the
    whole run's seconds."""
    from napari_brainorg.errors import CancelledError

    cancel = threading.Event()
    outcome: dict = {}

    def run():
        try:
            work(cancel)
            outcome["finished"] = time.perf_counter()
        except CancelledError:
            outcome["stopped"] = time.perf_counter()

    thread = threading.Thread(target=run, daemon=True)
    start = time.perf_counter()
    thread.start()
    if after is None:
        thread.join()
        return outcome["finished"] - start, "(whole run)"
    time.sleep(after)
    t0 = time.perf_counter()
    at = where()
    cancel.set()
    thread.join(600)
    if "stopped" not in outcome:  # it finished instead: after its last check (or before the cancel)
        finished = outcome["finished"] - t0
        return (-finished if finished > 0 else float("nan")), at
    return outcome["stopped"] - t0, at


def cancel_latency(loaded, story, after: float | None) -> float:
    """Seconds from setting the cancel event ``after`` seconds into the run to the extraction
    stopping (with ``after=None``: the whole run's seconds, not cancelled)."""
    from napari_brainorg.features.extract import extract_an_responses

    return timed_cancel(lambda cancel: extract_an_responses(story, loaded, tr=1.5, n_volumes=300, cancel=cancel),
                        after)[0]


def pipeline_cancel(after: float | None) -> tuple[float, str]:
    """Seconds from setting the cancel event ``after`` seconds into a quick run with both
    models (fresh folder) to the run raising ``CancelledError``, and the stage it was in
    (with ``after=None``: the whole run's seconds)."""
    import tempfile

    from napari_brainorg.pipeline import demo_config, run_pipeline

    stage = ["(start)"]

    def progress(name, done, total):
        stage[0] = name

    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config(tmp, quick=True, models=["minilm", "smollm2"])
        return timed_cancel(lambda cancel: run_pipeline(config, progress, cancel), after, lambda: stage[0])


def main_pipeline(repeats: int, span: tuple[float, float] = (0.03, 0.97)) -> int:
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    whole, _ = pipeline_cancel(None)
    n = max(repeats, 2)
    print(f"cancel latency of a pipeline run (quick design, MiniLM + SmolLM2, {whole:.0f} s uncancelled); "
          f"{os.cpu_count()} CPUs; target < 1 s", flush=True)
    figures = []
    for i in range(n):
        moment = whole * (span[0] + (span[1] - span[0]) * i / (n - 1))
        latency, where = pipeline_cancel(moment)
        figures.append(abs(latency))
        what = (f"stopped after {latency:.2f} s" if latency >= 0 else
                f"finished {-latency:.2f} s after (past its last check)" if latency < 0 else "finished before it")
        print(f"  at {moment:5.1f} s  {where[:48]:48s}  {what}  (load average {os.getloadavg()[0]:.1f})", flush=True)
    done = [f for f in figures if f == f]
    if done:
        print(f"  median {statistics.median(done):.2f} s   max {max(done):.2f} s   (n={len(done)} of {n})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline", action="store_true",
                        help="cancel whole runs of the quick design at moments spread over the run")
    parser.add_argument("--span", nargs=2, type=float, default=(0.03, 0.97), metavar=("FROM", "TO"),
                        help="with --pipeline: the part of the run the moments are spread over (fractions)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.pipeline:
        return main_pipeline(args.repeats, tuple(args.span))
    from napari_brainorg.features.models import load_language_model
    from napari_brainorg.io.stimuli import read_story

    story = read_story("pieman")
    print(f"cancel latency of AN extraction (pieman, 300 volumes, chunks of 512 words); "
          f"{os.cpu_count()} CPUs; target < 1 s")
    for name in args.models:
        loaded = load_language_model(name)
        cancel_latency(loaded, story, None)  # torch's first run is slower: not the one timed
        whole = cancel_latency(loaded, story, None)
        n = max(args.repeats, 1)
        moments = [whole * (0.15 + 0.6 * i / max(n - 1, 1)) for i in range(n)]
        figures = [abs(f) for f in (cancel_latency(loaded, story, t) for t in moments) if f == f]
        if not figures:
            print(f"  {name:8s} every run finished before its cancel ({whole:.1f} s runs)")
            continue
        print(f"  {name:8s} median {statistics.median(figures):.2f} s   max {max(figures):.2f} s   "
              f"(n={len(figures)} of {n}, cancelled 15-75 % into a {whole:.1f} s extraction; "
              f"load average {os.getloadavg()[0]:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
