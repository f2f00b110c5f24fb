"""Training-step time of every OE method relative to the paper's OE (uniform cross-entropy), side by side.

Each method is the module ``oe-train loss=<name>`` builds (``building.build_module``); every step is the
module's ``training_step`` (the method's mixing, one forward over ID + OE, its loss), the backward pass and an SGD
step, on the same fixed batches. Methods are interleaved round by round, so drift in the machine's speed
touches all alike; the median step time over the rounds is reported, with its ratio to ``uniform_ce``.

    python scripts/benchmark_methods.py                          # the digits' SmallCNN, batches 128 + 256
    python scripts/benchmark_methods.py --model resnet18_32x32   # OpenOOD's ResNet-18 on 32x32, batches 32 + 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from oe_lightning.config import config_dir
from oe_lightning.module import OutlierExposureModule

# name -> the overrides that choose it; "wasserstein_matrix": a K x K cost (|i - j|) by entropic Sinkhorn
MATRIX = "[" + ",".join("[" + ",".join(str(abs(i - j)) for j in range(10)) + "]" for i in range(10)) + "]"
METHODS = {"uniform_ce": ["loss=uniform_ce"], "energy": ["loss=energy"], "js_uniform": ["loss=js_uniform"],
           "oecc": ["loss=oecc"], "wasserstein": ["loss=wasserstein"],
           "wasserstein_matrix": ["loss=wasserstein", f"loss.fn.cost={MATRIX}"], "wood": ["loss=wood"],
           "mixoe": ["loss=mixoe"], "background": ["loss=background"]}


def build(method: str, model: str) -> tuple[OutlierExposureModule, torch.optim.Optimizer]:
    """The LightningModule ``oe-train`` builds for the method (on the digits' config, ``model``), and its SGD."""
    from hydra import compose, initialize_config_dir

    from oe_lightning.building import build_module

    model_choice = "small_cnn" if model == "small_cnn" else "openood_resnet18_32x32"
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*METHODS[method], f"model={model_choice}"])
    torch.manual_seed(0)
    module = build_module(cfg)
    return module, torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, nesterov=True)


def step(module: OutlierExposureModule, optimizer: torch.optim.Optimizer, batch: dict, index: int) -> float:
    """One training step's wall seconds: loss, backward, optimiser step."""
    started = time.perf_counter()
    torch.manual_seed(index)  # what the module's on_train_batch_start does under a Trainer
    loss = module.training_step(batch, index)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("small_cnn", "resnet18_32x32"), default="small_cnn")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape, n_in = ((1, 8, 8), 128) if args.model == "small_cnn" else ((1, 32, 32), 32)  # the digits' 1 channel
    g = torch.Generator().manual_seed(1)
    batch = {"in": (torch.rand(n_in, *shape, generator=g), torch.randint(0, 10, (n_in,), generator=g)),
             "oe": torch.rand(2 * n_in, *shape, generator=g)}
    built = {m: build(m, args.model) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for m in METHODS:  # warm-up
        step(*built[m], batch, 0)
    for r in range(args.rounds):
        for m in METHODS:
            times[m].append(step(*built[m], batch, r + 1))
    base = statistics.median(times["uniform_ce"])
    print(f"{args.model}, batches {n_in} ID + {2 * n_in} OE, {args.threads} thread(s), median of {args.rounds} steps")
    print(f"{'method':<19} {'ms/step':>8} {'vs OE':>6}")
    for m in METHODS:
        median = statistics.median(times[m])
        print(f"{m:<19} {1000 * median:8.2f} {median / base:6.2f}")


if __name__ == "__main__":
    main()
