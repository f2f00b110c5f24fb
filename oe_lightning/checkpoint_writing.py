"""Writing checkpoints so that a kill, a full disk or a preemption costs at most a few steps.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file beside its target, syncs it
  and renames it into place: a checkpoint file is complete or absent, never truncated. (Lightning's
  own writer stages the file in the system temp folder and *copies* it over when that is another
  filesystem, as on most clusters; a kill during the copy leaves a truncated checkpoint.)
- :class:`StepCheckpoint` writes ``checkpoints/step.ckpt`` every N training steps, mid-epoch.
- :class:`PreemptionCheckpoint` turns SIGTERM / SIGUSR1 / SIGUSR2 (SLURM preemption, ``scancel``, a time
  limit) into a checkpoint after the current step, then exits with 128 + the signal number.

``auto_resume`` continues from the newest of them (:func:`oe_lightning.runner.resume_checkpoint`);
the training loaders restore their position (:class:`~oe_lightning.data.samplers.ResumableLoader`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import CheckpointIO, TorchCheckpointIO

from oe_lightning.errors import OEUserError, Preempted
from oe_lightning.results import replacing
from oe_lightning.run_folder import PREEMPTION_CHECKPOINT, STEP_CHECKPOINT

log = logging.getLogger("oe_lightning")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target's folder, ``fsync``, then ``os.replace``.

    A failed write (disk full, quota, read-only folder) removes the temporary file, leaves the
    previous checkpoints as they were and raises an error that names the file and the cause.
    Remote paths (``s3://`` ...) go to Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (see the class); a failed local write raises an
        ``OEUserError`` naming the file, the cause and the free space."""
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(path, "wb", suffix=".partial") as file:  # a kill leaves only .*.partial
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
        except (OSError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "inline_container" not in str(err):
                raise  # not the writer (torch's zip writer reports a failed write as RuntimeError)
            raise OEUserError(
                f"Writing the checkpoint {str(path)!r} failed: {_why(err, path.parent)}. Nothing was "
                f"overwritten: the run's earlier checkpoints in {str(path.parent)!r} are intact. Free space "
                f"(or fix the folder's permissions) and run the same command again: auto_resume continues "
                f"from the newest good checkpoint."
            ) from err


def _why(err: BaseException, folder: Path) -> str:
    """A write failure in words, with the free space of the folder's disk."""
    cause = err.strerror if isinstance(err, OSError) and err.strerror else "the file could not be written"
    try:
        free = shutil.disk_usage(folder).free
        return f"{cause} ({free / 2**20:,.1f} MiB free on that disk)"
    except OSError:
        return cause


def with_atomic_checkpoints(plugins: list[Any]) -> list[Any]:
    """``plugins`` plus :class:`AtomicCheckpointIO`, unless the config chose a checkpoint writer."""
    if any(isinstance(p, CheckpointIO) for p in plugins):
        return plugins
    return [*plugins, AtomicCheckpointIO()]


def add_to_checkpoint(path: str | Path, values: dict[str, Any]) -> None:
    """Store plain ``values`` (key -> value) under ``checkpoint["oe_lightning"]`` of the file ``path``
    points to (a ``last.ckpt`` link's target), rewritten atomically."""
    from oe_lightning.checkpoints import read_checkpoint

    target = Path(path).resolve()
    checkpoint = read_checkpoint(target)
    checkpoint.setdefault("oe_lightning", {}).update(values)
    AtomicCheckpointIO().save_checkpoint(checkpoint, target)


class StepCheckpoint(pl.Callback):
    """Every ``every_n_steps`` training steps write ``<dirpath>/step.ckpt`` (replacing the previous
    one), so a kill mid-epoch loses at most that many steps. Not at an epoch's last batch: the
    epoch's own checkpoint follows its validation. ``None`` or 0: off."""

    def __init__(self, dirpath: str, every_n_steps: int | None = None):
        self.path = Path(dirpath) / STEP_CHECKPOINT
        self.every_n_steps = every_n_steps or 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Write ``step.ckpt`` when the global step is a multiple of ``every_n_steps``, except at an epoch's
        last batch."""
        if (self.every_n_steps and trainer.global_step % self.every_n_steps == 0
                and batch_idx + 1 < trainer.num_training_batches):
            trainer.save_checkpoint(self.path)


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM, SIGUSR1 or SIGUSR2 (submitit's preemption notice) during training: finish the
    current step, write
    ``<dirpath>/preempted.ckpt``, hand the signal to the handler that was there before (submitit's
    requeue, Lightning's), and exit with 128 + the signal number. Rerunning the same command resumes
    from that checkpoint (``auto_resume``) and ends exactly as an uninterrupted run.

    Single process: a flag checked after each step (no device synchronisation). Under DDP the ranks
    agree every ``ddp_check_every`` steps (one all-reduce), so all of them save the same step.
    """

    def __init__(self, dirpath: str, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1", "SIGUSR2"),
                 ddp_check_every: int = 10):
        self.path = Path(dirpath) / PREEMPTION_CHECKPOINT
        self.signals = [getattr(signal, name) for name in signals if hasattr(signal, name)]
        self.ddp_check_every = max(1, ddp_check_every)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is None:
            log.warning("received %s: writing a checkpoint after this training step, then exiting",
                        signal.Signals(signum).name)
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Forget any earlier signal and install the handler for ``signals`` (left alone outside the main thread)."""
        self.received = None
        for signum in self.signals:
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave signals alone
                self._previous[signum] = signal.signal(signum, self._handler)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, previous)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the signal handlers that were there before training."""
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Restore the signal handlers that were there before training."""
        self._restore()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """After a step, if a signal arrived (under DDP: on any rank, asked every ``ddp_check_every`` steps): write
        ``preempted.ckpt``, hand the signal to the previous handler and raise ``Preempted`` (exit 128 + its number)."""
        received = self.received is not None
        if trainer.world_size > 1:
            if trainer.global_step % self.ddp_check_every:
                return
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        signum = self.received or signal.SIGTERM
        trainer.save_checkpoint(self.path)
        previous = self._previous.get(signum)
        self._restore()
        if callable(previous):
            previous(signum, None)
        raise Preempted(
            f"Stopped by {signal.Signals(signum).name} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; saved {self.path}. Run the same command again to resume from it "
            f"(auto_resume=true), or pass ckpt_path={self.path}.",
            exit_code=128 + int(signum),
        )
