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


class KillAtStep:
    """A callback that kills its own process (SIGKILL: no clean-up, as an OOM killer or a node
    failure would) once training reaches the step in the environment variable ``OE_TEST_KILL_AT``
    (never without it, so a killed and a resumed run have the same config):
    ``+callbacks.kill._target_=tests.helpers.KillAtStep``."""

    def __new__(cls):
        import os
        import signal

        import pytorch_lightning as pl

        step = int(os.environ.get("OE_TEST_KILL_AT", "0"))

        class _Kill(pl.Callback):
            def on_train_batch_end(self, trainer, *args, **kwargs):
                if step and trainer.global_step >= step:
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Kill()


class CrashingCNN(SmallCNN):
    """A SmallCNN whose training forward raises (a bug, not bad input) when ``crash`` is true."""

    def __init__(self, crash: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.crash = crash

    def forward(self, x: Tensor) -> Tensor:
        if self.crash and self.training:
            raise RuntimeError("simulated bug in the backbone")
        return super().forward(x)
