"""Per-step cost of the framework against a hand-written PyTorch loop doing the same OE step.

Both train the same model from the same initial weights on the same in-memory batches (ID + OE,
so the data path is left out): the raw loop is forward(cat(in, oe)), CE + λ·OE, backward, SGD
(Nesterov) and the paper's per-step cosine schedule; the framework is ``OutlierExposureModule`` in
a Lightning ``Trainer`` with the default run's progress bar, LR monitor and CSV logger
(validation and checkpoints off: the raw loop has neither). Runs alternate; medians are reported.

    python scripts/benchmark_overhead.py                       # small CNN (embedded default) + WRN-40-2, CPU
    python scripts/benchmark_overhead.py --models wrn_40_2 --steps 60 --device cuda   # on a GPU

Prints steps/s of both, their ratio, the framework's extra milliseconds per step, and where the
framework's time outside forward/backward/optimizer goes (Lightning's SimpleProfiler, one extra run).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.profilers import SimpleProfiler

from oe_lightning.losses import UniformCrossEntropy
from oe_lightning.models import SmallCNN, WideResNet
from oe_lightning.module import OutlierExposureModule
from oe_lightning.optim import paper_cosine
from oe_lightning.progress import RichProgressBar

MODELS = {  # name: (factory, (channels, size), batch, OE batch): the default run's and the paper's CIFAR runs
    # a linear model: a step costs ~0.5 ms, so the framework's fixed cost per step shows plainly
    "linear": (lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), (1, 8), 128, 256),
    "small_cnn": (lambda: SmallCNN(num_classes=10, in_channels=1), (1, 8), 128, 256),
    "wrn_40_2": (lambda: WideResNet(depth=40, widen_factor=2, num_classes=10, drop_rate=0.3), (3, 32), 128, 256),
}
LAMBDA = 0.5


def make_batches(steps: int, image: tuple[int, int], batch: int, oe_batch: int, device: str) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    channels, size = image
    return [{"in": (torch.randn(batch, channels, size, size, generator=g).to(device),
                    torch.randint(10, (batch,), generator=g).to(device)),
             "oe": torch.randn(oe_batch, channels, size, size, generator=g).to(device)} for _ in range(steps)]


def optimizer(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def raw_loop(model: torch.nn.Module, batches: list[dict], warmup: int) -> float:
    """Seconds per step after ``warmup`` steps."""
    opt = optimizer(model.parameters())
    sched = paper_cosine(opt, total_steps=len(batches))
    oe_loss = UniformCrossEntropy()
    model.train()
    sync = torch.cuda.synchronize if batches[0]["oe"].is_cuda else (lambda: None)
    for i, batch in enumerate(batches):
        if i == warmup:
            sync()
            start = time.perf_counter()
        (x, y), x_oe = batch["in"], batch["oe"]
        logits = model(torch.cat([x, x_oe]))
        loss = F.cross_entropy(logits[:len(x)], y) + LAMBDA * oe_loss(logits[len(x):], logits[:len(x)], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync()
    return (time.perf_counter() - start) / (len(batches) - warmup)


class Batches:
    """The pre-made batches as one loader (a plain list would be taken for a list of loaders)."""

    def __init__(self, batches: list[dict]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class StepClock(pl.Callback):
    """Wall time from the start of step ``warmup`` to the end of training."""

    def __init__(self, warmup: int, cuda: bool):
        self.warmup, self.cuda, self.start, self.end = warmup, cuda, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            if self.cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        if self.cuda:
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def framework(model: torch.nn.Module, batches: list[dict], warmup: int, device: str, profile: bool = False):
    module = OutlierExposureModule(backbone=model, num_classes=10, lambda_oe=LAMBDA, optimizer=optimizer,
                                   scheduler=functools.partial(paper_cosine, min_lr=1e-6))
    clock = StepClock(warmup, device == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        profiler = SimpleProfiler(dirpath=tmp, filename="profile") if profile else None  # its table to a file
        trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                             logger=CSVLogger(tmp), callbacks=[RichProgressBar(), LearningRateMonitor("step"), clock],
                             enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                             num_sanity_val_steps=0, log_every_n_steps=5, profiler=profiler, default_root_dir=tmp)
        trainer.fit(module, train_dataloaders=Batches(batches))
    return (clock.end - clock.start) / (len(batches) - warmup), trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 100, 3],
                        help="steps per run, one value per model (or one for all)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, nargs="+", default=[5, 3, 1],
                        help="alternating runs per model, one value per model (or one for all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, Lightning {pl.__version__}, device {args.device}, "
          f"{torch.get_num_threads()} threads; medians of alternating runs")
    rows = []
    for i, name in enumerate(args.models):
        factory, image, batch, oe_batch = MODELS[name]
        steps = args.steps[min(i, len(args.steps) - 1)]
        repeats = args.repeats[min(i, len(args.repeats) - 1)]
        batches = make_batches(steps, image, batch, oe_batch, args.device)
        raw, ours = [], []
        for _ in range(repeats):
            torch.manual_seed(0)
            raw.append(raw_loop(factory().to(args.device), batches, args.warmup))
            torch.manual_seed(0)
            ours.append(framework(factory(), batches, args.warmup, args.device)[0])
        r, f = statistics.median(raw), statistics.median(ours)
        rows.append((name, batch, oe_batch, steps, repeats, r, f))
        if name == "linear":  # where the framework's fixed cost goes, without a model to hide it
            torch.manual_seed(0)
            _, trainer = framework(factory(), batches, args.warmup, args.device, profile=True)
            report = trainer.profiler.recorded_durations
            heavy = ("run_training_epoch", "run_training_batch", "training_step", "optimizer_step", "backward",
                     "_fit_impl", "run_stage", "on_train_end", "train_dataloader_next")
            profile = sorted(((sum(v) / steps * 1e3, k) for k, v in report.items()
                              if not any(h in k for h in heavy) and sum(v) > 0), reverse=True)[:6]
    print(f"\n{'model':10} {'batch':>9} {'steps':>5} {'runs':>4} {'raw steps/s':>12} {'ours steps/s':>13} "
          f"{'ratio':>6} {'extra ms/step':>14}")
    for name, batch, oe_batch, steps, repeats, r, f in rows:
        print(f"{name:10} {f'{batch}+{oe_batch}':>9} {steps:5d} {repeats:4d} {1 / r:12.2f} {1 / f:13.2f} "
              f"{r / f:6.3f} {(f - r) * 1e3:+14.2f}")
    if "linear" in args.models:
        print("\nhooks outside forward/backward/optimizer, linear model (ms per step, profiled run):")
        for ms, action in profile:
            print(f"  {ms:7.3f}  {action}")


if __name__ == "__main__":
    main()
