"""Backbones used by the tests through ``model._target_=tests.helpers...``."""

from __future__ import annotations

import torch
from torch import Tensor

from oe_lightning.models import SmallCNN


class NaNAfterSteps(SmallCNN):
    """A SmallCNN whose training forward passes return NaN logits after ``nan_after`` of them."""

    def __init__(self, nan_after: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.nan_after = nan_after
        self.train_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        logits = super().forward(x)
        if self.training:
            self.train_calls += 1
            if self.train_calls > self.nan_after:
                return logits * torch.nan
        return logits
