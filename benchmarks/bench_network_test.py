"""The networks step's association test: fixed budget against the sequential p, on the same data.

SIMULATED data: the quick demo's study (pieman, 8 simulated subjects at 6 mm, MiniLM's 16
atoms, smith10 and yeo7; 544 tests) unless ``--result`` names another finished result
folder. Every variant runs the pipeline's own networks step (and what follows it: the FDR
across models, the network readouts, the report) on a copy of the folder whose networks
steps are cleared, so every other step is reused; each runs in its own process:

- ``fixed``: ``networks.sequential_h: 0``, every cell makes every first draw (10,000) and
  every cell at the floor every further draw (90,000);
- ``sequential``: the default ``networks.sequential_h`` (Besag & Clifford's sequential p,
  further draws only for the floor cells whose decision is open);
- ``before`` (with ``--before-src DIR``): the test of another source tree (e.g. the main
  branch's ``src``) with its own defaults.

Printed per variant: the networks step's wall and CPU time (of the step alone, from the
run's timings and the process's CPU clock around it), the machine's load before and after,
the cell draws the p-values counted (``test.json``), the declarations and the recovery of
the planted links. Then the DECISION COMPARISON against ``fixed``: the declared
(atom, atlas, network, direction) sets, identical or every difference listed, and the
p-values side by side for every cell with p < 0.05 in either.

    python benchmarks/bench_network_test.py [--result DIR] [--before-src /path/to/main/src] [--h 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = ["atom", "atlas", "network", "direction"]


def _child(args) -> None:
    """One variant in this process: the networks step on a copy of the result, its figures as JSON."""
    import pandas as pd
    import yaml

    import napari_brainorg.pipeline.run as run_module
    from napari_brainorg.pipeline import make_config, run_pipeline

    src, out = Path(args.result), Path(args.child_out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    shutil.rmtree(out / ".cache" / "networks", ignore_errors=True)
    data = yaml.safe_load((out / "config.yaml").read_text())
    data["out"] = str(out)
    if args.variant == "fixed":
        data["networks"]["sequential_h"] = 0
    elif args.variant == "sequential" and args.h is not None:
        data["networks"]["sequential_h"] = args.h
    clock = {"cpu": 0.0, "wall": 0.0}
    step = run_module.step_networks

    def timed_step(*a, **k):  # the step's own CPU time (the process's clock around it)
        c, t = time.process_time(), time.perf_counter()
        try:
            return step(*a, **k)
        finally:
            clock["cpu"] += time.process_time() - c
            clock["wall"] += time.perf_counter() - t

    run_module.step_networks = timed_step
    load = os.getloadavg()[0]
    run_pipeline(make_config(data))
    summary = json.loads((out / "summary.json").read_text())
    tables = []
    for slug in summary["networks"]:
        for part in ("activated", "deactivated"):
            df = pd.read_csv(out / f"networks/{slug}/association_{part}.tsv", sep="\t")  # baselines too
            df["model"] = slug
            tables.append(df)
    table = pd.concat(tables, ignore_index=True)
    cols = ["model"] + KEY + ["statistic", "p", "q", "associated"] + (["n_draws"] if "n_draws" in table else [])
    tests = list(summary["networks"].values())
    recovery = json.loads((out / "recovery.json").read_text()) if (out / "recovery.json").exists() else {}
    print(json.dumps({
        "variant": args.variant, "step_wall_s": clock["wall"], "step_cpu_s": clock["cpu"],
        "timings_networks_s": summary["timings_s"].get("networks"), "load_before": load,
        "load_after": os.getloadavg()[0],
        "n_draws": sum(int(t.get("n_draws") or 0) for t in tests),
        "budgets": [[t.get("n_permutations"), t.get("n_refine"), t.get("sequential_h")] for t in tests],
        "recovery": {k: recovery.get(k) for k in ("precision", "recall", "tp", "fp", "fn")},
        "rows": table[cols].astype({"atom": str, "network": str}).to_dict("records")}))


def _run_variant(variant: str, args, src_path: str | None) -> dict:
    env = dict(os.environ)
    if src_path:
        env["PYTHONPATH"] = src_path + os.pathsep + env.get("PYTHONPATH", "")
    out = Path(args.work) / variant
    cmd = [sys.executable, __file__, "--child", variant, "--child-out", str(out), "--result", args.result]
    if args.h is not None:
        cmd += ["--h", str(args.h)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"variant {variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _declared(res: dict) -> set:
    return {tuple([r["model"]] + [str(r[k]) for k in KEY]) for r in res["rows"] if r["associated"]}


def _compare(ref: dict, other: dict) -> None:
    a, b = _declared(ref), _declared(other)
    name = other["variant"]
    print(f"\nDECISION COMPARISON fixed vs {name}: fixed declares {len(a)}, {name} {len(b)}: "
          + ("IDENTICAL sets" if a == b else f"{len(a ^ b)} differences"))
    for d in sorted(a - b):
        print("  only fixed:", d)
    for d in sorted(b - a):
        print(f"  only {name}:", d)
    import pandas as pd

    key = ["model"] + KEY
    left = pd.DataFrame(ref["rows"]).set_index(key)
    right = pd.DataFrame(other["rows"]).set_index(key)
    both = left.merge(right, left_index=True, right_index=True, suffixes=("_fixed", f"_{name}"))
    near = both[(both["p_fixed"] < 0.05) | (both[f"p_{name}"] < 0.05)].sort_values("p_fixed")
    shown = ["statistic_fixed", "p_fixed", f"p_{name}", "q_fixed", f"q_{name}", "associated_fixed",
             f"associated_{name}"] + [c for c in (f"n_draws_{name}",) if c in near]
    with pd.option_context("display.width", 250, "display.max_rows", 500, "display.float_format", "{:.3g}".format):
        print(f"p where either is < 0.05 ({len(near)} cells of {len(both)}):")
        print(near[shown].to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", default=None, help="a finished result folder (default: the quick demo, made here)")
    parser.add_argument("--before-src", default=None, help="another source tree to time as 'before' (its src folder)")
    parser.add_argument("--h", type=int, default=None, help="networks.sequential_h of the sequential variant")
    parser.add_argument("--work", default=None, help="folder for the copies (default: a temporary one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        _child(args)
        return
    args.work = args.work or tempfile.mkdtemp(prefix="brainorg-network-test-")
    if args.result is None:
        from napari_brainorg.pipeline import demo_config, run_pipeline

        args.result = str(Path(args.work) / "quick-demo")
        print(f"making the quick demo's result in {args.result} ...", flush=True)
        run_pipeline(demo_config(args.result, quick=True))
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}; "
          f"{os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    variants = ([("before", args.before_src)] if args.before_src else []) + [("fixed", None), ("sequential", None)]
    results = {}
    for variant, src_path in variants:
        res = results[variant] = _run_variant(variant, args, src_path)
        rec = res["recovery"]
        print(f"{variant:>10}: networks step wall {res['step_wall_s']:.2f} s, CPU {res['step_cpu_s']:.2f} s "
              f"(run timings: {res['timings_networks_s']} s); load {res['load_before']:.2f} -> "
              f"{res['load_after']:.2f}; cell draws counted {res['n_draws'] or 'n/a'}; budgets "
              f"[first, further, h] {res['budgets']}; declared {len(_declared(res))}; recovery precision "
              f"{rec['precision']}, recall {rec['recall']} (tp {rec['tp']}, fp {rec['fp']}, fn {rec['fn']})",
              flush=True)
    ref, seq = results["fixed"], results["sequential"]
    for variant in [v for v in results if v != "sequential"]:
        other = results[variant]
        print(f"networks step, sequential against {variant}: wall {other['step_wall_s'] / seq['step_wall_s']:.1f}x "
              f"less, CPU {other['step_cpu_s'] / seq['step_cpu_s']:.1f}x less")
    for variant in results:
        if variant != "fixed":
            _compare(ref, results[variant])
    print(f"\nuptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
