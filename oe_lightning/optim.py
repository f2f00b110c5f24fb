"""Learning-rate schedules."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine_annealing(step: int, total_steps: int, min_factor: float = 1e-6) -> float:
    """LR factor at ``step``: half a cosine from 1 down to ``min_factor`` over ``total_steps``."""
    progress = min(step / max(total_steps, 1), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def paper_cosine(optimizer: Optimizer, total_steps: int, min_factor: float = 1e-6) -> LambdaLR:
    """The paper's per-step cosine annealing: every LR goes from lr to ``min_factor``·lr."""
    return LambdaLR(optimizer, lambda step: cosine_annealing(step, total_steps, min_factor))
