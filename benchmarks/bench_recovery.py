"""Recovery of planted atom -> network links by the demo pipeline, over seeds.

Runs the embedded default with MiniLM only (pieman, 64 atoms, 3 SIMULATED subjects at
4 mm, true R2 of in-network voxels 0.05-0.2) for several simulation seeds, and a null
simulation (no planted signal) per seed, and prints precision, recall and the number
of declared associations. A figure, not a test: it takes about a minute per run.

    python benchmarks/bench_recovery.py [--seeds 0 1 2] [--out /tmp/brainorg-recovery]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from napari_brainorg.pipeline import demo_config, make_config, run_pipeline


def run(out: Path, seed: int, null: bool) -> dict:
    data = demo_config(out, models=["minilm"]).model_dump()
    data["fmri"]["simulate"]["seed"] = seed
    if null:
        data["fmri"]["simulate"]["links"] = {}
    t = time.perf_counter()
    result = run_pipeline(make_config(data))
    table = result.associations(part="activated")
    row = {"seed": seed, "null": null, "wall_s": round(time.perf_counter() - t, 1),
           "n_tests": len(table), "n_declared": int(table["associated"].sum())}
    if not null:
        rec = json.loads((result.path / "recovery.json").read_text())
        row.update(precision=rec["precision"], recall=rec["recall"], tp=rec["tp"], fp=rec["fp"], fn=rec["fn"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    base = Path(args.out or tempfile.mkdtemp(prefix="brainorg-recovery-"))
    rows = []
    for seed in args.seeds:
        for null in (False, True):
            row = run(base / f"seed{seed}{'_null' if null else ''}", seed, null)
            rows.append(row)
            print(json.dumps(row), flush=True)
    planted = [r for r in rows if not r["null"]]
    nulls = [r for r in rows if r["null"]]
    print(f"\nplanted: mean precision {sum(r['precision'] for r in planted) / len(planted):.3f}, "
          f"mean recall {sum(r['recall'] for r in planted) / len(planted):.3f} over {len(planted)} seeds")
    print(f"null: {sum(r['n_declared'] for r in nulls)} associations declared in "
          f"{sum(r['n_tests'] for r in nulls)} tests over {len(nulls)} seeds")


if __name__ == "__main__":
    main()
