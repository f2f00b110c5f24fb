#!/usr/bin/env python
"""Throughput of the paper's setting on this machine's accelerator (GPU if any, else CPU).

    python scripts/benchmark_throughput.py train              # WRN-40-2 OE-tune steps/s, fp32 vs bf16-mixed
    python scripts/benchmark_throughput.py eval               # images/s scoring the CIFAR-10 OOD suite shape
    python scripts/benchmark_throughput.py all --scale 0.02 --out bench.json   # small, for a CPU

``train``: CIFAR-shaped in-memory batches of 128 ID + 256 OE images (the paper's sizes) through the
real OutlierExposureModule and Lightning Trainer; steps/s after warm-up steps, per precision.
``eval``: the test loop (ID test set, then every OOD set, MSP score, exact metrics) over sets sized
as the paper's CIFAR-10 suite (times ``--scale``); images/s over the whole ``trainer.test``, and
its ratio to a hand-written ``no_grad`` loop over the same loaders (alternating runs, medians).
Data live in memory, so the figures measure the model and framework, not disk or JPEG decoding.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from oe_lightning.data import OEDataModule
from oe_lightning.data.embedded import TensorImages
from oe_lightning.evaluation import OODEvaluation
from oe_lightning.models import wrn_40_2
from oe_lightning.module import OutlierExposureModule

# the paper's CIFAR-10 OOD suite: set sizes as its evaluation code loads them
CIFAR10_SUITE = {"gaussian": 10000, "rademacher": 10000, "blobs": 10000, "textures": 5640, "svhn": 26032,
                 "places365": 10000, "lsun": 10000, "isun": 8925, "cifar100": 10000}
ID_TEST = 10000


def random_images(n: int, labelled: bool, seed: int, transform=None) -> TensorImages:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g) if labelled else torch.full((n,), -1)
    return TensorImages(torch.randn(n, 3, 32, 32, generator=g), labels)


class StepTimer(Callback):
    """Wall time of training steps after ``warmup`` steps (device synchronised)."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.steps = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.started is not None:
            self.steps += 1

    def steps_per_s(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return self.steps / (time.perf_counter() - self.started)


def trainer(precision: str, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="auto", devices=1, precision=precision, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      **kwargs)


def bench_train(steps: int, warmup: int, precision: str) -> dict:
    n_id = 128 * (steps + warmup)
    dm = OEDataModule(train=lambda transform: random_images(n_id, True, 0),
                      test=lambda transform: random_images(128, True, 1), num_classes=10,
                      oe=lambda transform: random_images(256 * 4, False, 2),
                      batch_size=128, oe_batch_size=256, val_fraction=0.0, drop_last=True)
    module = OutlierExposureModule(wrn_40_2(10), num_classes=10, lambda_oe=0.5,
                                   optimizer=functools.partial(torch.optim.SGD, lr=0.001, momentum=0.9,
                                                               nesterov=True, weight_decay=5e-4))
    timer = StepTimer(warmup)
    trainer(precision, max_epochs=1, callbacks=[timer]).fit(module, dm)
    rate = timer.steps_per_s()
    return {"precision": precision, "steps_per_s": round(rate, 3), "images_per_s": round(rate * 384, 1),
            "timed_steps": timer.steps}


def _suite(scale: float) -> OEDataModule:
    sizes = {name: max(int(n * scale), 1) for name, n in CIFAR10_SUITE.items()}
    n_id = max(int(ID_TEST * scale), 1)
    dm = OEDataModule(train=lambda transform: random_images(8, True, 0),
                      test=lambda transform: random_images(n_id, True, 1), num_classes=10,
                      ood={name: functools.partial(random_images, n, False, 10 + i)
                           for i, (name, n) in enumerate(sizes.items())},
                      batch_size=200, val_fraction=0.0)
    dm.setup("test")
    return dm


def _ours(dm: OEDataModule, precision: str) -> float:
    """``trainer.test`` with :class:`OODEvaluation` (MSP scores, exact metrics): seconds."""
    torch.manual_seed(0)
    evaluation = OODEvaluation(wrn_40_2(10))
    run = trainer(precision)
    started = time.perf_counter()
    run.test(evaluation, dm, verbose=False)
    return time.perf_counter() - started


def _plain(dm: OEDataModule, precision: str) -> float:
    """The peer: a hand-written ``no_grad`` loop over the same loaders (MSP, then our exact metrics
    per OOD set): seconds."""
    from oe_lightning.metrics import ood_metrics

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = wrn_40_2(10).to(device).eval()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    started = time.perf_counter()
    scores = {}
    with torch.no_grad(), autocast:
        for name, loader in zip(dm.test_names, dm.test_dataloader(), strict=True):
            parts = []
            for batch in loader:
                x = (batch[0] if isinstance(batch, list | tuple) else batch).to(device, non_blocking=True)
                parts.append(-torch.softmax(model(x).float(), 1).amax(1))
            scores[name] = torch.cat(parts).cpu()
    names = dm.test_names
    for name in names[1:]:
        ood_metrics(scores[names[0]], scores[name])
    return time.perf_counter() - started


def bench_eval(scale: float, precision: str, repeats: int = 2) -> dict:
    """Our test phase against a plain loop on the same sets, alternating runs; medians."""
    dm = _suite(scale)
    total = sum(dm.test_set_sizes().values())
    ours, plain = [], []
    for _ in range(repeats):
        plain.append(_plain(dm, precision))
        ours.append(_ours(dm, precision))
    ours_s, plain_s = statistics.median(ours), statistics.median(plain)
    return {"precision": precision, "images": total, "wall_s": round(ours_s, 2),
            "images_per_s": round(total / ours_s, 1), "plain_loop_images_per_s": round(total / plain_s, 1),
            "ratio_to_plain_loop": round(plain_s / ours_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("train", "eval", "all"))
    parser.add_argument("--steps", type=int, default=50, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the suite's set sizes (eval)")
    parser.add_argument("--precisions", default="32-true,bf16-mixed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    report: dict = {"device": device, "torch": torch.__version__, "train": [], "eval": []}
    for precision in args.precisions.split(","):
        if args.what in ("train", "all"):
            report["train"].append(bench_train(args.steps, args.warmup, precision))
        if args.what in ("eval", "all"):
            report["eval"].append(bench_eval(args.scale, precision))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
