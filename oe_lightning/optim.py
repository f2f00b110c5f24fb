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
