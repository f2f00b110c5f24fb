"""Per-step training values written to the loggers without making the host wait for the device.

Every ``trainer.log_every_n_steps`` steps the module hands its step losses (a device tensor) to
:class:`DeferredStepLog`: they are copied into pinned host memory asynchronously, a CUDA event
marks the copy, and the values are written once the event has passed (looked at without waiting
at each step's end; waited for before validation, at the epoch's end and before the next copy,
long after it finished). On CPU the copy is immediate and the same path runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor


class DeferredStepLog:
    """One pending set of named step values: :meth:`put` copies them off the device, :meth:`flush`
    writes them (with their own step and epoch) to the loggers once the copy is done."""

    def __init__(self) -> None:
        self._buffer: Tensor | None = None
        self._pending: tuple[Any, int, int, Sequence[str]] | None = None

    def put(self, values: Tensor, names: Sequence[str], step: int, epoch: int, loggers: Iterable[Any]) -> None:
        """Start copying ``values`` (1-D) to the host; an earlier pending set is written first."""
        self.flush(loggers, wait=True)
        values = values.detach()
        cuda = values.is_cuda
        if self._buffer is None or self._buffer.shape != values.shape or self._buffer.dtype != values.dtype:
            self._buffer = torch.empty(values.shape, dtype=values.dtype, pin_memory=cuda)
        self._buffer.copy_(values, non_blocking=cuda)
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        self._pending = (event, step, epoch, tuple(names))

    def flush(self, loggers: Iterable[Any], wait: bool) -> bool:
        """Write the pending values if their copy is done (``wait``: wait for it); whether any were written."""
        if self._pending is None:
            return False
        event, step, epoch, names = self._pending
        if event is not None:
            if not wait and not event.query():
                return False
            event.synchronize()
        metrics = dict(zip(names, self._buffer.tolist(), strict=True))
        metrics["epoch"] = epoch
        self._pending = None
        for logger in loggers:
            logger.log_metrics(metrics, step=step)
        return True
