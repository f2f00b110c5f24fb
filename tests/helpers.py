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
    """A callback that stops its own process once training reaches the step in the environment
    variable ``OE_TEST_KILL_AT`` (never without it, so a killed and a resumed run have the same
    config): ``+callbacks.kill._target_=tests.helpers.KillAtStep``.

    ``OE_TEST_KILL_SIGNAL``: ``KILL`` (default: no clean-up, as an OOM killer or a node failure),
    or ``TERM`` / ``USR1`` (a preemption notice, handled). ``OE_TEST_KILL_WHILE_SAVING=1``: SIGKILL
    in the middle of writing the first checkpoint at or after that step, half of its bytes written.
    """

    def __new__(cls):
        import io
        import os
        import signal

        import pytorch_lightning as pl

        step = int(os.environ.get("OE_TEST_KILL_AT", "0"))
        signum = getattr(signal, "SIG" + os.environ.get("OE_TEST_KILL_SIGNAL", "KILL"))
        while_saving = os.environ.get("OE_TEST_KILL_WHILE_SAVING") == "1"

        def half_then_die(obj, file, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        real_save = torch.save

        class _Kill(pl.Callback):
            sent = False

            def on_train_batch_end(self, trainer, *args, **kwargs):
                if step and trainer.global_step >= step and not while_saving and not self.sent:
                    self.sent = True
                    os.kill(os.getpid(), signum)

            def on_save_checkpoint(self, trainer, pl_module, checkpoint):
                if step and trainer.global_step >= step and while_saving:
                    import oe_lightning.checkpoint_writing as writing

                    writing.torch.save = half_then_die

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


class RecordOEDraws:
    """A callback writing, at each epoch's first batch (after outlier mining), the OE indices this rank's sampler
    draws to ``OE_TEST_DRAWS_DIR/rank<r>_epoch<e>.json``: ``+callbacks.draws._target_=tests.helpers.RecordOEDraws``."""

    def __new__(cls):
        import json
        import os

        import pytorch_lightning as pl

        class Recorder(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx:
                    return
                sampler = trainer.datamodule.oe_sampler
                folder = os.environ["OE_TEST_DRAWS_DIR"]
                with open(f"{folder}/rank{trainer.global_rank}_epoch{trainer.current_epoch}.json", "w") as f:
                    json.dump({"subset": sampler.subset.tolist(), "drawn": list(sampler)}, f)

        return Recorder()
