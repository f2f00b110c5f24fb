#!/usr/bin/env python
"""The default embedded experiment end to end, as a user runs it: the numbers the README quotes.

    python scripts/benchmark_default.py [--repeats 1] [--lambdas 0 0.5] [--out bench.json]

Each run is a fresh ``oe-train loss.lambda_oe=λ`` process (imports, data, 30 epochs, test,
results.json) in a temporary directory. Printed: the machine (torch version, CPU threads), wall
time per λ (median over repeats), ID accuracy and FPR95 per OOD set, and whether repeats agree.

Results depend on the torch version and the number of CPU threads (float sums are reduced in a
different order with another thread count), not on the run: repeats on one machine are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(lambda_oe: float, out_dir: Path) -> tuple[float, dict]:
    run_dir = out_dir / f"lambda_{lambda_oe}_{time.time_ns()}"
    env = {**os.environ, "WANDB_MODE": "offline"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "oe_lightning.train", f"loss.lambda_oe={lambda_oe}", "print_config=false",
                    f"hydra.run.dir={run_dir}"], check=True, env=env, capture_output=True)
    wall = time.perf_counter() - started
    return wall, json.loads((run_dir / "results.json").read_text())


def machine() -> dict:
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "processor": platform.processor() or platform.machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lam in args.lambdas:
            walls, means = [], []
            for _ in range(args.repeats):
                wall, results = run_once(lam, Path(tmp))
                walls.append(wall)
                means.append(results["mean"]["fpr95"])
            rows.append({"lambda_oe": lam, "wall_s_median": round(statistics.median(walls), 1),
                         "wall_s": [round(w, 1) for w in walls], "repeats_identical": len(set(means)) == 1,
                         "id_accuracy": results["id_accuracy"], "mean": results["mean"],
                         "ood": results["ood"], "results": results})
    info = machine()
    print(f"torch {info['torch']}, {info['threads']} CPU threads ({info['cpu_count']} cores), "
          f"Python {info['python']}, {args.repeats} run(s) per λ")
    sets = list(rows[0]["ood"])
    print(f"{'λ':>4} {'wall s':>7} {'ID acc':>7} " + " ".join(f"{s[:12]:>12}" for s in sets) + f" {'mean FPR95':>10}")
    for r in rows:
        per_set = " ".join(f"{100 * r['ood'][s]['fpr95']:>12.2f}" for s in sets)
        print(f"{r['lambda_oe']:>4} {r['wall_s_median']:>7.1f} {100 * r['id_accuracy']:>7.2f} {per_set} "
              f"{100 * r['mean']['fpr95']:>10.2f}")
    from oe_lightning.report import print_results

    print_results(rows[-1]["results"])  # the end-of-run table of the last λ, as oe-train prints it
    if args.repeats > 1:
        print("repeats identical: " + ", ".join(f"λ={r['lambda_oe']}: {r['repeats_identical']}" for r in rows))
    if args.out:
        args.out.write_text(json.dumps({"machine": info, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
