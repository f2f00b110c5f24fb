#!/usr/bin/env python
"""The paper's CIFAR-10 OE fine-tune (WRN-40-2, 128 ID + 256 OE images a step) as ``oe-train`` runs
it, on data written in the real on-disk formats (CIFAR-10 pickles, a 300K-format ``.npy`` of OE
images; random pixels, so only the timings mean anything), comparing data paths side by side:

    python scripts/benchmark_finetune.py                       # on a GPU: the goal of < 60 s for 10 epochs
    python scripts/benchmark_finetune.py --train 2000 --oe 4000 --epochs 1 --model small_cnn   # a CPU

Each path is a fresh ``oe-train experiment=paper/cifar10_oe_tune oe=random_300k ...`` process:

- ``reference``: the reference's data path (per-image torchvision transforms in DataLoader workers),
  fp32, ``trainer=gpu`` where there is one;
- ``resident``: ``speed=resident`` (uint8 images on the device, crop/flip/normalise per batch), fp32;
- ``gpu``: ``speed=gpu`` (resident, bf16 autocast, channels_last).

Printed per path: wall time of the process, of the run (results.json's ``wall_time_s``: data, fit,
test), of the training steps, steps/s, and the
share of training time spent between steps (waiting for the next batch and moving it to the
device), timed with a device synchronisation at each step's end. The OOD test sets are the paper's
three synthetic ones (the image sets cannot be written here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

PATHS = {
    "reference": ["data.num_workers={workers}", "data.pin_memory=true"],
    "resident": ["speed=resident"],
    "gpu": ["speed=gpu"],
}
NOT_SYNTHETIC = ("textures", "svhn", "places365", "lsun", "cifar100")  # conf/ood/cifar10_paper.yaml


class StepWait(pl.Callback):
    """Seconds inside training steps and between them (device synchronised at each step's end);
    written to ``$OE_BENCH_TIMES`` when training ends."""

    def __init__(self) -> None:
        self.step = self.wait = 0.0
        self.steps, self.last_end, self.started = 0, None, None

    def _sync(self, module: pl.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, module) -> None:
        self.last_end = self._sync(module)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.started = self._sync(module)
        self.wait += self.started - self.last_end

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.last_end = self._sync(module)
        self.step += self.last_end - self.started
        self.steps += 1

    def on_train_end(self, trainer, module) -> None:
        Path(os.environ["OE_BENCH_TIMES"]).write_text(json.dumps(
            {"step_s": self.step, "wait_s": self.wait, "steps": self.steps}))


def _pickle(path: Path, obj: object) -> str:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_data(root: Path, n_train: int, n_test: int, n_oe: int) -> dict[str, str]:
    """CIFAR-10's python pickles and a 300K-format OE array under ``root``; the pickles' md5 sums."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    per_batch = -(-n_train // 5)
    for i in range(5):
        n = min(per_batch, n_train - i * per_batch)
        sums[f"data_batch_{i + 1}"] = _pickle(folder / f"data_batch_{i + 1}", {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()})
    sums["test_batch"] = _pickle(folder / "test_batch", {
        "data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n_test).tolist()})
    sums["batches.meta"] = _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    np.save(root / "300K_random_images.npy", rng.integers(0, 256, (n_oe, 32, 32, 3), dtype=np.uint8))
    return sums


def run(path: str, root: Path, sums: dict[str, str], baseline: Path, args: argparse.Namespace) -> dict:
    run_dir = root / "runs" / path
    times = root / f"times_{path}.json"
    checksums = "{" + ",".join(f"{k}:{v}" for k, v in sums.items()) + "}"
    device = ["trainer=gpu"] if torch.cuda.is_available() else ["trainer=cpu"]
    overrides = [
        "experiment=paper/cifar10_oe_tune", "oe=random_300k", *device, f"model={args.model}",
        f"module.pretrained={baseline}",
        f"paths.data_dir={root}", f"data.checksums={checksums}", f"trainer.max_epochs={args.epochs}",
        *(f"~ood.{name}" for name in NOT_SYNTHETIC), "logger=csv", "print_config=false", "evaluation.plots=false",
        "+callbacks.step_wait._target_=benchmark_finetune.StepWait", f"hydra.run.dir={run_dir}",
        *(o.format(workers=args.workers) for o in PATHS[path]), *args.override]
    if path != "gpu":
        overrides.append("trainer.precision=32-true")
    env = {**os.environ, "WANDB_MODE": "offline", "OE_BENCH_TIMES": str(times),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "oe_lightning.train", *overrides], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"path": path, "error": proc.returncode}
    timed = json.loads(times.read_text())
    results = json.loads((run_dir / "results.json").read_text())
    train_s = timed["step_s"] + timed["wait_s"]
    return {"path": path, "wall_s": wall, "run_s": results.get("wall_time_s"),
            "train_s": train_s, "steps": timed["steps"], "steps_per_s": timed["steps"] / train_s,
            "wait_share": timed["wait_s"] / train_s, "id_accuracy": results["id_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=50000, help="CIFAR-10 training images")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--oe", type=int, default=300000, help="OE images in the .npy")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--paths", nargs="+", default=["gpu", "resident", "reference"], choices=list(PATHS))
    parser.add_argument("--workers", type=int, default=min(8, (os.cpu_count() or 2) // 2),
                        help="DataLoader workers per loader for the reference path")
    parser.add_argument("--model", default="wrn_40_2", choices=["wrn_40_2", "small_cnn"])
    parser.add_argument("--override", nargs="*", default=[], help="more oe-train overrides for every path")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the data (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    from oe_lightning.models import SmallCNN, wrn_40_2

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        started = time.perf_counter()
        sums = write_data(root, args.train, args.test, args.oe)
        baseline = root / "baseline.pt"  # a plain state_dict, as the paper's released baselines
        model = wrn_40_2(num_classes=10) if args.model == "wrn_40_2" else SmallCNN(num_classes=10, in_channels=3)
        torch.save(model.state_dict(), baseline)
        cpu = f"CPU ({torch.get_num_threads()} threads)"
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu
        print(f"{device}, torch {torch.__version__}; data written in {time.perf_counter() - started:.1f} s "
              f"({args.train:,} train, {args.oe:,} OE images); {args.epochs} epochs per path")
        rows = [run(path, root, sums, baseline, args) for path in args.paths]
    print("\n| path | process s | run s | training s | steps | steps/s | between steps | ID acc |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['path']} | failed (exit {r['error']}) | | | | | | |")
            continue
        print(f"| {r['path']} | {r['wall_s']:.1f} | {r['run_s']:.1f} | {r['train_s']:.1f} | {r['steps']} | "
              f"{r['steps_per_s']:.2f} | "
              f"{100 * r['wait_share']:.1f}% | {100 * r['id_accuracy']:.2f} |")
    done = {r["path"]: r for r in rows if "error" not in r}
    if "reference" in done:
        for path in ("resident", "gpu"):
            if path in done:
                print(f"{path}: {done[path]['steps_per_s'] / done['reference']['steps_per_s']:.2f}x the reference "
                      f"path's steps/s")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
