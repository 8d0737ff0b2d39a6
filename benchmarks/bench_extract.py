"""Benchmark of AN extraction: hook cost, throughput, memory and wall time.

Prints, for each bundled model on the pieman story (TR 1.5 s, 300 volumes):

1. tokens/s of the hooked extraction (hooks, pooling to words, chunk buffers) against a
   plain forward pass of the same model on the same windows, and the hooks' cost in %
   (target: under 15 %). The two are timed alternately, ``--repeats`` times each; the
   medians and the best runs of wall time are compared, and the medians of the process's
   CPU time, which other processes on a shared machine disturb far less than wall time
   (with one thread: ``--threads 1``; more threads add their waiting to CPU time); and,
   within one profiled run (torch.profiler), the time spent in the hooks' own work
   relative to the rest, which a busy machine cannot skew;
2. wall time and peak memory of ``extract_an_responses`` in a fresh process: peak RSS
   (the process's high-water mark, reset after the model is loaded where Linux allows),
   tracemalloc's peak (Python and numpy allocations; torch's own allocator is not
   traced), and for scale the size the responses would take without streaming
   (tokens x ANs x 4 bytes).

3. the same for a model of Llama-3-8B's shape with RANDOM weights
   (``features.models.llama3_8b_shaped_model``: hidden 4,096, FFN 14,336, 32 heads, 8
   key-value heads, vocabulary 128,256; built from the configuration, nothing
   downloaded; the bundled SmolLM2 tokenizer). On a GPU all 32 layers (458,752 ANs,
   bfloat16 by default); on a CPU only ``--llama-layers`` (default 1 and 2, float32),
   and the figures for 32 layers are EXTRAPOLATED linearly from those runs and
   printed as such.

Run::

    nice -n 10 python benchmarks/bench_extract.py [--models minilm smollm2 llama3-8b-shape] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _pieman():
    from napari_brainorg.io.stimuli import read_story

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_story("pieman")


def throughput(model_name: str, repeats: int) -> dict:
    """Hooked extraction vs plain forward on the same windows of pieman."""
    import torch

    from napari_brainorg.features.activations import (
        _pad_id,
        iter_word_activations,
        prepare_story,
        window_batches,
    )
    from napari_brainorg.features.models import load_language_model

    lm = load_language_model(model_name)
    words = _pieman().words
    prepared = prepare_story(lm, words)
    tokens, policy, plan = prepared
    batches = [(torch.as_tensor(ids), torch.as_tensor(mask))
               for _, ids, mask in window_batches(tokens, plan, 512, _pad_id(lm.tokenizer))]
    n_model_tokens = int(sum(int(mask.sum()) for _, mask in batches))

    def plain() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for ids, mask in batches:
                lm.model(input_ids=ids, attention_mask=mask)
        return time.perf_counter() - wall, time.process_time() - cpu

    def hooked() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for chunk in iter_word_activations(lm, words, prepared=prepared):
            del chunk
        return time.perf_counter() - wall, time.process_time() - cpu

    plain(), hooked()  # warm-up: first calls pay for allocations and kernel selection
    runs_plain, runs_hooked = [], []
    for _ in range(repeats):
        runs_plain.append(plain())
        runs_hooked.append(hooked())
    t_plain, c_plain = (list(x) for x in zip(*runs_plain))
    t_hooked, c_hooked = (list(x) for x in zip(*runs_hooked))
    mp, mh = statistics.median(t_plain), statistics.median(t_hooked)
    bp, bh = min(t_plain), min(t_hooked)
    cp, ch = statistics.median(c_plain), statistics.median(c_hooked)
    # The hooks' own work (gathering tokens, pooling them into word rows, the chunk
    # buffer) is labelled "brainorg.pool_words": its share of one run's CPU time,
    # measured within that run, does not depend on how busy the machine was.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function("brainorg.total"):
            for chunk in iter_word_activations(lm, words, prepared=prepared):
                del chunk
    events = prof.key_averages()
    pool_us = sum(e.cpu_time_total for e in events if e.key == "brainorg.pool_words")
    total_us = sum(e.cpu_time_total for e in events if e.key == "brainorg.total")
    n_ans = lm.n_layers * lm.ffn_size
    return {
        "hook_share_pct_profiled": round(100 * pool_us / max(total_us - pool_us, 1), 1),
        "model": model_name,
        "n_layers": lm.n_layers,
        "n_ans": n_ans,
        "story_tokens": tokens.n_tokens,
        "model_tokens": n_model_tokens,
        "windows": plan.n_windows,
        "context": policy.context,
        "plain_s": [round(t, 3) for t in t_plain],
        "hooked_s": [round(t, 3) for t in t_hooked],
        "plain_tok_per_s": round(n_model_tokens / mp, 1),
        "hooked_tok_per_s": round(n_model_tokens / mh, 1),
        "hook_cost_pct": round(100 * (mh - mp) / mp, 1),
        "hook_cost_pct_best": round(100 * (bh - bp) / bp, 1),
        "plain_cpu_s": [round(t, 3) for t in c_plain],
        "hooked_cpu_s": [round(t, 3) for t in c_hooked],
        "hook_cost_pct_cpu": round(100 * (ch - cp) / cp, 1),
        "hook_cost_pct_cpu_best": round(100 * (min(c_hooked) - min(c_plain)) / min(c_plain), 1),
        "torch_threads": torch.get_num_threads(),
    }


LLAMA = "llama3-8b-shape"


def memory_run(model_name: str) -> dict:
    """One extraction on pieman (TR 1.5 s, 300 volumes); run in a fresh process.

    ``model_name`` ``"llama3-8b-shape:N"``: the Llama-3-8B-shaped model with RANDOM
    weights and its first N layers.
    """
    import tracemalloc

    import torch

    from napari_brainorg.features.extract import extract_an_responses
    from napari_brainorg.features.models import llama3_8b_shaped_model, load_language_model

    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    if model_name.startswith(LLAMA + ":"):
        lm = llama3_8b_shaped_model(int(model_name.split(":")[1]))
    else:
        lm = load_language_model(model_name)
    if cuda:
        torch.cuda.synchronize()
    t_load = time.perf_counter() - t0
    gpu_after_load = torch.cuda.memory_allocated() if cuda else 0
    rss_loaded = _rss_kib("VmRSS")
    words = _pieman()
    # Reference: the peak of one plain forward pass over the story's longest window.
    from napari_brainorg.features.activations import _pad_id, prepare_story, window_batches

    tokens, _, plan = prepare_story(lm, words.words)
    longest = max((ids for _, ids, _ in window_batches(tokens, plan, 1, _pad_id(lm.tokenizer))),
                  key=lambda a: a.shape[1])
    reset = _reset_peak_rss()
    with torch.inference_mode():
        lm.model(input_ids=torch.as_tensor(longest[:1]), **({"use_cache": False} if lm.spec.causal else {}))
    forward_peak = _rss_kib("VmHWM")
    del tokens, plan, longest
    _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tracemalloc.start()
    t1 = time.perf_counter()
    res = extract_an_responses(words, lm, tr=1.5, n_volumes=300)
    if cuda:
        torch.cuda.synchronize()
    t_extract = time.perf_counter() - t1
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    prov = res.provenance
    return {
        "model": model_name,
        "name": lm.spec.name,
        "n_layers": lm.n_layers,
        "device": prov["device"],
        "dtype": prov["dtype"],
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_weights_gib": round(gpu_after_load / 2**30, 2),
        "gpu_peak_extraction_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "n_ans": prov["n_ans"],
        "n_words": prov["story"]["n_words"],
        "n_tokens": prov["n_tokens"],
        "load_s": round(t_load, 2),
        "extract_s": round(t_extract, 2),
        "rss_after_load_mib": round(rss_loaded / 1024, 1),
        "peak_rss_mib": round(_rss_kib("VmHWM") / 1024, 1),
        "peak_rss_reset_after_load": reset,
        "plain_forward_peak_rss_mib": round(forward_peak / 1024, 1),
        "tracemalloc_peak_mib": round(traced_peak / 2**20, 1),
        "responses_mib": round(res.responses.nbytes / 2**20, 1),
        "accumulator_float64_mib": round(300 * prov["n_ans"] * 8 / 2**20, 1),
        "tokens_x_ans_float32_mib": round(prov["n_tokens"] * prov["n_ans"] * 4 / 2**20, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2", LLAMA],
                        help=f"bundled models to measure, and {LLAMA!r} (random weights, Llama-3-8B's shape)")
    parser.add_argument("--llama-layers", nargs="+", type=int, default=None,
                        help="layers of the Llama-3-8B-shaped model (default: 32 on CUDA; 1 and 2 on CPU, "
                             "extrapolated to 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (medians compared)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", choices=("throughput", "memory"), default=None, help="run one part only")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args._child:
        print(json.dumps(memory_run(args._child)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    bundled = [m for m in args.models if m != LLAMA]
    if args.only in (None, "throughput"):
        print("\n== hooks vs plain forward (pieman, same windows) ==")
        for name in bundled:
            r = throughput(name, args.repeats)
            print(f"{name}: {r['n_ans']} ANs, {r['story_tokens']} story tokens -> {r['model_tokens']} "
                  f"model tokens in {r['windows']} windows of <= {r['context']}")
            print(f"  plain  {r['plain_tok_per_s']:8.1f} tokens/s  runs {r['plain_s']} s")
            print(f"  hooked {r['hooked_tok_per_s']:8.1f} tokens/s  runs {r['hooked_s']} s")
            print(f"  CPU time: plain {r['plain_cpu_s']} s, hooked {r['hooked_cpu_s']} s")
            print(f"  hook cost: wall {r['hook_cost_pct']:+.1f} % (medians), {r['hook_cost_pct_best']:+.1f} % "
                  f"(best runs); CPU time {r['hook_cost_pct_cpu']:+.1f} % (medians), "
                  f"{r['hook_cost_pct_cpu_best']:+.1f} % (best runs)")
            print(f"  profiled: time inside the hooks' pooling = {r['hook_share_pct_profiled']:.1f} % of the "
                  "rest of the run")
    if args.only in (None, "memory"):
        print("\n== extract_an_responses(pieman, TR 1.5 s, 300 volumes), fresh process each ==")
        runs = list(bundled)
        if LLAMA in args.models:
            layers = args.llama_layers or ([32] if torch.cuda.is_available() else [1, 2])
            runs += [f"{LLAMA}:{n}" for n in layers]
        llama = []
        for name in runs:
            cmd = [sys.executable, __file__, "--_child", name]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: FAILED ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            where = f"{r['device']} ({r['gpu']})" if r["gpu"] else r["device"]
            print(f"{r['name']}: {r['n_layers']} layers, {r['n_ans']:,} ANs, {r['n_words']} words, "
                  f"{r['n_tokens']} tokens; {r['dtype']} on {where}")
            print(f"  load {r['load_s']} s, extraction {r['extract_s']} s")
            print(f"  RSS after load {r['rss_after_load_mib']} MiB; peak RSS of one plain forward pass "
                  f"over the longest window {r['plain_forward_peak_rss_mib']} MiB; peak RSS of the "
                  f"extraction {r['peak_rss_mib']} MiB "
                  f"({'peaks reset after load' if r['peak_rss_reset_after_load'] else 'whole process'}); "
                  f"tracemalloc peak {r['tracemalloc_peak_mib']} MiB")
            if r["gpu"]:
                print(f"  GPU memory: weights {r['gpu_weights_gib']} GiB, peak during extraction "
                      f"{r['gpu_peak_extraction_gib']} GiB")
            print(f"  for scale: responses {r['responses_mib']} MiB, float64 accumulator "
                  f"{r['accumulator_float64_mib']} MiB, tokens x ANs would be {r['tokens_x_ans_float32_mib']} MiB")
            if name.startswith(LLAMA):
                llama.append(r)
        cpu_runs = sorted((r for r in llama if not r["gpu"]), key=lambda r: r["n_layers"])
        if len(cpu_runs) >= 2 and cpu_runs[-1]["n_layers"] < 32:
            a, b = cpu_runs[0], cpu_runs[-1]
            dl = b["n_layers"] - a["n_layers"]

            def at32(key):
                slope = (b[key] - a[key]) / dl
                return b[key] + slope * (32 - b["n_layers"]), slope

            t32, t_slope = at32("extract_s")
            l32, _ = at32("load_s")
            m32, m_slope = at32("rss_after_load_mib")
            p32, _ = at32("peak_rss_mib")
            print(f"\nEXTRAPOLATED, NOT MEASURED: the Llama-3-8B-shaped model with all 32 layers (458,752 ANs) "
                  f"on this CPU in {b['dtype']}, linear in the layer count from the {a['n_layers']}- and "
                  f"{b['n_layers']}-layer runs above:")
            with open("/proc/meminfo") as fh:
                ram = int(fh.readline().split()[1]) / 2**20
            print(f"  extraction ~{t32:.0f} s ({t_slope:.1f} s per layer), build ~{l32:.0f} s; weights "
                  f"~{m32 / 1024:.1f} GiB resident after load ({m_slope:.0f} MiB per layer), peak RSS "
                  f"~{p32 / 1024:.1f} GiB ({'fits' if p32 / 1024 < ram else 'does NOT fit'} this machine's "
                  f"{ram:.0f} GiB); bfloat16 would halve the weights")
            n_tokens = b["n_tokens"]
            print(f"  streaming at 458,752 ANs: float64 accumulator {300 * 458752 * 8 / 2**30:.2f} GiB, a chunk of "
                  f"512 words {512 * 458752 * 4 / 2**30:.2f} GiB; tokens x ANs (not held) would be "
                  f"{n_tokens * 458752 * 4 / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
