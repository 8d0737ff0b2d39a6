"""How long a Cancel takes to stop AN extraction, the longest single stretch between checks.

For each bundled model, ``extract_an_responses`` runs on the pieman story (TR 1.5 s, 300
volumes, the pipeline's default chunk of 512 words) in a thread; the cancel event is set
``--after`` seconds into the forward passes (after the first progress report), and the
figure is the wall time from setting it to the extraction raising ``CancelledError``.
Target: under 1 s. Several cancels at different moments (``--repeats``), median and max;
the machine's load is printed (load stretches every figure).

Run::

    python benchmarks/bench_cancel.py [--models minilm smollm2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time


def cancel_latency(loaded, story, after: float) -> float:
    """Seconds from setting the cancel event to the extraction stopping."""
    from napari_brainorg.errors import CancelledError
    from napari_brainorg.features.extract import extract_an_responses

    cancel = threading.Event()
    started = threading.Event()
    outcome: dict = {}

    def progress(stage, done, total):
        if done > 0:
            started.set()

    def run():
        try:
            extract_an_responses(story, loaded, tr=1.5, n_volumes=300, progress=progress, cancel=cancel)
            outcome["finished"] = True
        except CancelledError:
            outcome["stopped"] = time.perf_counter()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # the first progress report after a chunk: the forward passes are under way
    started.wait(600)
    time.sleep(after)
    t0 = time.perf_counter()
    cancel.set()
    thread.join(600)
    if "stopped" not in outcome:
        raise RuntimeError("the extraction finished before the cancel: use a smaller --after")
    return outcome["stopped"] - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--after", type=float, default=0.7,
                        help="seconds after the first chunk's report at which Cancel is pressed (default 0.7; "
                             "each repeat adds 0.37 s, so the cancels fall at different places of a chunk)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from napari_brainorg.features.models import load_language_model
    from napari_brainorg.io.stimuli import read_story

    story = read_story("pieman")
    print(f"cancel latency of AN extraction (pieman, 300 volumes, chunks of 512 words); "
          f"{os.cpu_count()} CPUs; target < 1 s")
    for name in args.models:
        loaded = load_language_model(name)
        figures = [cancel_latency(loaded, story, args.after + 0.37 * i) for i in range(args.repeats)]
        print(f"  {name:8s} median {statistics.median(figures):.2f} s   max {max(figures):.2f} s   "
              f"(n={len(figures)}; load average {os.getloadavg()[0]:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
