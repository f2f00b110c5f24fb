#!/usr/bin/env python
"""Wall time of the embedded default experiment (baseline and OE), end to end as a user runs it.

    python scripts/benchmark_default.py [--repeats 1] [--out bench.json]

Each run is a fresh ``oe-train`` process (imports, data, 30 epochs, test, results), in a
temporary output directory; the script prints wall time and mean FPR95 per λ.
"""

from __future__ import annotations

import argparse
import json
import os
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
    subprocess.run([sys.executable, "-m", "oe_lightning.train", f"loss.lambda_oe={lambda_oe}",
                    f"hydra.run.dir={run_dir}"], check=True, env=env, capture_output=True)
    wall = time.perf_counter() - started
    return wall, json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lam in args.lambdas:
            walls, results = [], None
            for _ in range(args.repeats):
                wall, results = run_once(lam, Path(tmp))
                walls.append(wall)
            rows.append({"lambda_oe": lam, "wall_s_median": round(statistics.median(walls), 2),
                         "wall_s": [round(w, 2) for w in walls],
                         "mean_fpr95": results["mean"]["fpr95"],
                         "id_accuracy": results["id_accuracy"]})
    print(f"{'λ':>5} {'wall s (median)':>16} {'mean FPR95 %':>13} {'ID acc %':>9}")
    for r in rows:
        print(f"{r['lambda_oe']:>5} {r['wall_s_median']:>16.2f} {100 * r['mean_fpr95']:>13.2f} "
              f"{100 * r['id_accuracy']:>9.2f}")
    if args.out:
        args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
