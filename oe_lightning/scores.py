"""OOD scores computed from logits. Convention: a larger score means more likely OOD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaxSoftmax(nn.Module):
    """Negative maximum softmax probability (Hendrycks & Gimpel, 2017; the paper's default)."""

    def forward(self, logits: Tensor) -> Tensor:
        return -F.softmax(logits, dim=1).max(dim=1).values


class MaxLogit(nn.Module):
    """Negative maximum logit (Hendrycks et al., 2022)."""

    def forward(self, logits: Tensor) -> Tensor:
        return -logits.max(dim=1).values


class Energy(nn.Module):
    """Free energy -T · logsumexp(logits / T) (Liu et al., 2020)."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, logits: Tensor) -> Tensor:
        return -self.temperature * torch.logsumexp(logits / self.temperature, dim=1)


class UniformCrossEntropyScore(nn.Module):
    """The OE term itself, negated: mean(logits) - logsumexp(logits) (the paper's ``--score OE``).

    Equals minus the cross-entropy from the prediction to the uniform distribution, which is
    largest (-log K) for a uniform prediction.
    """

    def forward(self, logits: Tensor) -> Tensor:
        return logits.mean(dim=1) - torch.logsumexp(logits, dim=1)


class Entropy(nn.Module):
    """Shannon entropy of the softmax prediction."""

    def forward(self, logits: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1)
        return -(log_p.exp() * log_p).sum(dim=1)
