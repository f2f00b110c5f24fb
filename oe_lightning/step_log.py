"""Per-step training values written to the loggers without making the host wait for the device.

Every ``trainer.log_every_n_steps`` steps the module hands its step losses (a device tensor) to
:class:`DeferredStepLog`: they are copied into pinned host memory asynchronously, a CUDA event
marks the copy, and the values are written, in step order, once their event has passed (looked at
without waiting at each step's end; waited for only before validation and at the epoch's end).
On CPU the copy is immediate and the same path runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor


class DeferredStepLog:
    """Named step values on their way off the device: :meth:`put` starts a copy, :meth:`flush`
    writes (with their own step and epoch) those whose copy is done. At most ``max_pending`` wait;
    beyond that the oldest is waited for."""

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self._pending: deque[tuple[Tensor, Any, int, int, tuple[str, ...]]] = deque()

    def put(self, values: Tensor, names: Sequence[str], step: int, epoch: int, loggers: Iterable[Any]) -> None:
        """Start copying ``values`` (1-D) to the host, never waiting for the device."""
        loggers = list(loggers)
        self.flush(loggers, wait=False)
        if len(self._pending) >= self.max_pending:
            self._write_oldest(loggers, wait=True)
        values = values.detach()
        cuda = values.is_cuda
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=cuda)  # torch's cached pinned blocks
        host.copy_(values, non_blocking=cuda)
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        self._pending.append((host, event, step, epoch, tuple(names)))

    def flush(self, loggers: Iterable[Any], wait: bool) -> None:
        """Write the pending values in order while their copy is done (``wait``: wait for each)."""
        loggers = list(loggers)
        while self._pending:
            event = self._pending[0][1]
            if event is not None and not wait and not event.query():
                break
            self._write_oldest(loggers, wait)

    def _write_oldest(self, loggers: list[Any], wait: bool) -> None:
        host, event, step, epoch, names = self._pending.popleft()
        if event is not None and wait:
            event.synchronize()
        metrics = dict(zip(names, host.tolist(), strict=True))
        metrics["epoch"] = epoch
        for logger in loggers:
            logger.log_metrics(metrics, step=step)
