"""Learning-rate schedules."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine_annealing(step: int, total_steps: int, min_factor: float = 1e-6) -> float:
    """LR factor at ``step``: half a cosine from 1 down to ``min_factor`` over ``total_steps``."""
    progress = min(step / max(total_steps, 1), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def paper_cosine(optimizer: Optimizer, total_steps: int, min_lr: float = 1e-6) -> LambdaLR:
    """The paper's per-step cosine annealing: every LR goes from its initial value down to ``min_lr``.

    As hendrycks/outlier-exposure CIFAR/oe_tune.py:142-148 (``cosine_annealing(step, total, 1,
    1e-6 / args.learning_rate)``): the floor is an absolute learning rate, 1e-6 whatever the start.
    """
    if not min_lr >= 0:
        raise ValueError(f"module.scheduler.min_lr must be >= 0, got {min_lr}.")
    factors = [min_lr / group["lr"] if group["lr"] > 0 else 0.0 for group in optimizer.param_groups]
    return LambdaLR(optimizer, [lambda step, f=f: cosine_annealing(step, total_steps, f) for f in factors])


def epoch_cosine(optimizer: Optimizer, total_steps: int, epochs: int) -> LambdaLR:
    """Cosine annealing stepped once per epoch, as ``CosineAnnealingLR(T_max=epochs)`` with ``scheduler.step()``
    after each epoch (the reference's text classifiers, NLP_classification/train.py:131,155): epoch ``e`` trains
    at ``lr · (1 + cos(π e / epochs)) / 2``. Stepped per step here, so ``total_steps`` must be ``epochs`` whole
    epochs of ``total_steps // epochs`` steps."""
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"module.scheduler.epochs must be an integer >= 1 (trainer.max_epochs), got {epochs!r}.")
    per_epoch = max(total_steps // epochs, 1)
    return LambdaLR(optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step // per_epoch, epochs) / epochs)))
