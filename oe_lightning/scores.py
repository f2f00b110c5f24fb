"""OOD scores computed from logits. Convention: a larger score means more likely OOD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oe_lightning.errors import OEUserError
from oe_lightning.transport import COSTS, wasserstein_to_classes


class MaxSoftmax(nn.Module):
    """Negative maximum softmax probability (Hendrycks & Gimpel, 2017; the paper's default)."""

    def forward(self, logits: Tensor) -> Tensor:
        """Minus the max softmax probability, one per sample."""
        return -F.softmax(logits, dim=1).max(dim=1).values


class MaxLogit(nn.Module):
    """Negative maximum logit (Hendrycks et al., 2022)."""

    def forward(self, logits: Tensor) -> Tensor:
        """Minus the max logit, one per sample."""
        return -logits.max(dim=1).values


class Energy(nn.Module):
    """Free energy -T · logsumexp(logits / T) (Liu et al., 2020)."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, logits: Tensor) -> Tensor:
        """The free energy -T · logsumexp(logits / T), one per sample."""
        return -self.temperature * torch.logsumexp(logits / self.temperature, dim=1)


class UniformCrossEntropyScore(nn.Module):
    """The OE term itself, negated: mean(logits) - logsumexp(logits) (the paper's ``--score OE``).

    Equals minus the cross-entropy from the prediction to the uniform distribution, which is
    largest (-log K) for a uniform prediction.
    """

    def forward(self, logits: Tensor) -> Tensor:
        """mean(logits) - logsumexp(logits), one per sample."""
        return logits.mean(dim=1) - torch.logsumexp(logits, dim=1)


class Entropy(nn.Module):
    """Shannon entropy of the softmax prediction."""

    def forward(self, logits: Tensor) -> Tensor:
        """The entropy of the softmax prediction in nats, one per sample."""
        log_p = F.log_softmax(logits, dim=1)
        return -(log_p.exp() * log_p).sum(dim=1)


class GeneralizedEntropy(nn.Module):
    """GEN (Liu, Lochman & Zach, CVPR 2023): ``sum_j p_j^γ (1 - p_j)^γ`` over the ``top_m`` largest softmax
    probabilities; larger (a flatter prediction) = more OOD. OpenOOD's ``gen_postprocessor.py``
    (``generalized_entropy``, lines 31-37) returns its negative as a confidence, with γ = 0.1 and M = 100."""

    def __init__(self, gamma: float = 0.1, top_m: int = 100):
        super().__init__()
        if not (isinstance(gamma, int | float) and 0 < gamma <= 1) or not (isinstance(top_m, int) and top_m >= 1):
            raise OEUserError(f"GEN takes gamma in (0, 1] and top_m >= 1 (the paper: gamma=0.1, top_m=100), got "
                              f"gamma={gamma!r}, top_m={top_m!r}.")
        self.gamma, self.top_m = float(gamma), top_m

    def forward(self, logits: Tensor) -> Tensor:
        """``sum_j p_j^γ (1 - p_j)^γ`` over the ``top_m`` largest softmax probabilities (all, if fewer),
        one per sample."""
        top = F.softmax(logits, dim=1).topk(min(self.top_m, logits.shape[1]), dim=1).values
        return (top.pow(self.gamma) * (1 - top).pow(self.gamma)).sum(dim=1)


class WassersteinScore(nn.Module):
    """WOOD's score (wyn430/WOOD ``WOOD_Loss.py``, ``sink_dist_test_v2``): ``min_k W(softmax(logits), e_k)``, the
    Wasserstein distance to the nearest one-hot class distribution under the 0-1 cost (``1 - max_k p_k``, which
    ranks as MSP does) or ``ordinal``; larger = more OOD. Exact, where the reference runs an entropic Sinkhorn."""

    def __init__(self, cost: str = "zero_one"):
        super().__init__()
        if cost not in COSTS:
            raise OEUserError(f"cost={cost!r} must be one of {', '.join(COSTS)}.")
        self.cost = cost

    def forward(self, logits: Tensor) -> Tensor:
        """One score per sample: the distance to the nearest class distribution."""
        return wasserstein_to_classes(F.softmax(logits, dim=1), self.cost).min(dim=1).values
