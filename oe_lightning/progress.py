"""A progress bar that costs nothing per step: Lightning's rich bar, redrawn at most every 0.2 s."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar as _LightningRichProgressBar


class RichProgressBar(_LightningRichProgressBar):
    """Lightning's :class:`~pytorch_lightning.callbacks.RichProgressBar`, redrawn (and its metrics
    read) at most every ``min_interval_s`` seconds and at every loop's last batch.

    Lightning's bar redraws and converts the shown metrics after every batch: ~6 ms a step on CPU,
    more than a whole training step on a GPU. Looks the same to a person; costs ~µs per step.
    On the ranks where Lightning disables the bar (every DDP rank but 0) nothing is read: the
    totals a disabled bar would read are never set there.
    """

    def __init__(self, min_interval_s: float = 0.2, **kwargs: Any):
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._last_draw = 0.0

    def _due(self, current: int, total: int | float) -> bool:
        now = time.monotonic()
        if current >= total or now - self._last_draw >= self.min_interval_s:
            self._last_draw = now
            return True
        return False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Lightning's update, only on an enabled bar and when a redraw is due."""
        if self.is_enabled and self._due(batch_idx + 1, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Lightning's update, only on an enabled bar and when a redraw is due."""
        if self.is_enabled and self._due(batch_idx + 1, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        """Lightning's update, only on an enabled bar and when a redraw is due."""
        if self.is_enabled and self._due(batch_idx + 1, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        """Lightning's update, only on an enabled bar and when a redraw is due."""
        if self.is_enabled and self._due(batch_idx + 1, self.total_predict_batches_current_dataloader):
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
