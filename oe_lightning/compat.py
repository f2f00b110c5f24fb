"""Every use of a private (underscore or undocumented internal) name of Lightning, torch, torchvision,
torchmetrics or OmegaConf, in one place.

The rest of the package imports these instead of touching private names, so an upgrade that moves or
renames one breaks here, and ``tests/test_compat.py`` (one test per entry, on real objects) says which.
Checked with pytorch-lightning 2.6.6 (its bundled lightning_fabric), torch 2.14.1, torchvision 0.29.1,
torchmetrics 1.9.0, omegaconf 2.3.1 and wandb 0.31.0; pyproject.toml bounds what these were checked against.

Only the standard library is imported here at module level: ``oe_lightning.results`` (and through it
``oe-table``) imports this module without loading Lightning. The classes that subclass Lightning or
torch classes (:data:`ScriptLauncher`, :data:`DDPStrategyWithScriptLauncher`,
:data:`ContinuingExperimentWriter`, :data:`BatchNormBase`) are built on first access.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

CHECKED_WITH = {"pytorch-lightning": "2.6.6", "torch": "2.14.1", "torchvision": "0.29.1",
                "torchmetrics": "1.9.0", "omegaconf": "2.3.1", "wandb": "0.31.0"}

# --- Lightning ----------------------------------------------------------------------------------------


def attached_trainer(module: Any) -> Any:
    """The ``Trainer`` a ``LightningModule`` is attached to, or ``None`` outside one.

    Reads ``LightningModule._trainer``: the public ``module.trainer`` raises ``RuntimeError`` when
    no Trainer is attached (a module called from tests or a notebook). Checked with pytorch-lightning 2.6.6.
    """
    return module._trainer


def batches_processed_this_epoch(trainer: Any) -> int:
    """How many training batches of the current epoch have been run (their step done).

    Reads ``trainer.fit_loop.epoch_loop.batch_progress.current.processed``: Lightning's loop progress
    tracking, which it does not document as public API. During ``on_train_batch_end`` of batch ``i``
    (when a step checkpoint is written) it is ``i + 1``; ``completed`` would still be ``i``.
    Checked with pytorch-lightning 2.6.6.
    """
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def wandb_init_kwargs(logger: Any) -> dict[str, Any]:
    """The (live, mutable) keyword arguments a ``WandbLogger`` will pass to ``wandb.init``.

    ``WandbLogger._wandb_init``: the only way to drop the ``anonymous=None`` Lightning always adds.
    Checked with pytorch-lightning 2.6.6 and wandb 0.31.0.
    """
    return logger._wandb_init


def logger_experiment_or_none(logger: Any) -> Any:
    """A Lightning logger's experiment (W&B run, CSV writer) if it was created, else ``None``.

    ``Logger._experiment`` (``WandbLogger``, ``CSVLogger``): the public ``logger.experiment``
    creates the experiment (starts a W&B run) when there is none. Checked with pytorch-lightning 2.6.6.
    """
    return logger._experiment


def set_logger_experiment(logger: Any, experiment: Any) -> None:
    """Give a Lightning logger its experiment object (``Logger._experiment``, see
    :func:`logger_experiment_or_none`). Checked with pytorch-lightning 2.6.6."""
    logger._experiment = experiment


@cache
def _build_continuing_experiment_writer() -> type:
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class ContinuingExperimentWriter(ExperimentWriter):
        """Lightning's CSV ``ExperimentWriter``, except that an existing ``metrics.csv`` is continued
        (its header becomes the known keys), not deleted.

        Overrides the private hook ``_check_log_dir_exists`` (which ``__init__`` calls and which deletes
        ``metrics.csv``) and reads the writer's private filesystem ``_fs``. Checked with
        pytorch-lightning 2.6.6 (the hook is lightning_fabric's ``_ExperimentWriter``'s).
        """

        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):
                import csv

                with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                    header = next(csv.reader(file), [])
                self.metrics_keys = sorted(header)

    return ContinuingExperimentWriter


@cache
def _build_script_launcher() -> type:
    import os
    import subprocess

    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    class ScriptLauncher(_SubprocessScriptLauncher):
        """Lightning's private ``_SubprocessScriptLauncher`` (DDP's ``popen`` launcher, which starts
        ranks 1..N-1 by re-running the command line) with one hook of ours: :meth:`command_for_rank`.

        Overrides its private ``_call_children_scripts`` (and calls ``_check_can_spawn_children``, fills
        ``procs``) with the same environment Lightning sets (``MASTER_ADDR``, ``MASTER_PORT``,
        ``NODE_RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``). Checked with pytorch-lightning 2.6.6.
        """

        def command_for_rank(self, local_rank: int) -> list[str] | None:
            """The command line that starts ``local_rank``; ``None``: Lightning's own re-launch."""
            return None

        def _call_children_scripts(self) -> None:
            commands = {rank: self.command_for_rank(rank) for rank in range(1, self.num_processes)}
            if any(command is None for command in commands.values()):
                return super()._call_children_scripts()
            self._check_can_spawn_children()
            self.procs = []
            env = self.cluster_environment
            os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                              NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                              WORLD_SIZE=str(self.num_processes * self.num_nodes))
            for local_rank, command in commands.items():
                child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
                self.procs.append(subprocess.Popen(command, env=child_env))
            return None

    return ScriptLauncher


@cache
def _build_ddp_strategy() -> type:
    from pytorch_lightning.strategies import DDPStrategy
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    class DDPStrategyWithScriptLauncher(DDPStrategy):
        """``DDPStrategy`` whose subprocess launcher is :attr:`script_launcher` (a :data:`ScriptLauncher`).

        Overrides the private ``_configure_launcher`` (called when the Trainer is built) and replaces
        the private ``_launcher`` when Lightning chose its ``_SubprocessScriptLauncher`` (start method
        ``popen``; not under SLURM or torchrun, where nothing is launched). Checked with pytorch-lightning 2.6.6.
        """

        script_launcher: type | None = None

        def _configure_launcher(self) -> None:
            super()._configure_launcher()
            if self.script_launcher is not None and isinstance(self._launcher, _SubprocessScriptLauncher):
                assert self.cluster_environment is not None
                self._launcher = self.script_launcher(self.cluster_environment, self.num_processes,
                                                      self.num_nodes)

    return DDPStrategyWithScriptLauncher


# --- torch, torchmetrics ------------------------------------------------------------------------------


@cache
def _build_batch_norm_base() -> type:
    """``BatchNormBase``: torch's private ``nn.modules.batchnorm._BatchNorm``, the base of BatchNorm1d/2d/3d,
    their lazy forms and SyncBatchNorm (not of InstanceNorm, LayerNorm, GroupNorm): "is this a batch norm
    layer". Checked with torch 2.14.1."""
    from torch import nn

    return nn.modules.batchnorm._BatchNorm


def metric_should_sync(metric: Any) -> bool:
    """Whether a torchmetrics ``Metric`` gathers its states across processes now, as its own
    ``compute`` does: pass it as ``metric.sync_context(should_sync=...)``.

    Reads ``Metric._to_sync``: ``sync_on_compute`` normally, ``dist_sync_on_step`` inside ``forward``.
    Checked with torchmetrics 1.9.0.
    """
    return bool(metric._to_sync)


# --- torchvision --------------------------------------------------------------------------------------

INTEGRITY_CHECK = "_check_integrity"


def integrity_check_override(cls: type, wrap: Callable[[Callable[[Any], bool]], Callable[[Any], bool]]
                             ) -> dict[str, Callable[[Any], bool]]:
    """Class attributes that replace a torchvision dataset's md5 check by ``wrap(its check)``: pass them
    to ``type(name, (cls,), attrs)``.

    torchvision's CIFAR10/CIFAR100/SVHN ``__init__`` (and ``download``) call the private
    ``self._check_integrity()`` and raise ``RuntimeError`` when it is false. Checked with torchvision 0.29.1.
    """
    return {INTEGRITY_CHECK: wrap(getattr(cls, INTEGRITY_CHECK))}


# --- OmegaConf ----------------------------------------------------------------------------------------


def unresolved_value(node: Any, key: Any) -> Any:
    """The value of ``node[key]`` as written, without resolving it (``"???"``, ``"${hydra:...}"``):
    for a value that cannot be resolved here.

    ``DictConfig._get_node(key)._value()``: OmegaConf has no public per-key read without resolution.
    Checked with omegaconf 2.3.1.
    """
    return node._get_node(key)._value()


_LAZY: dict[str, Callable[[], Any]] = {
    "ScriptLauncher": _build_script_launcher,
    "DDPStrategyWithScriptLauncher": _build_ddp_strategy,
    "ContinuingExperimentWriter": _build_continuing_experiment_writer,
    "BatchNormBase": _build_batch_norm_base,
}


def __getattr__(name: str) -> Any:
    """The Lightning/torch classes, built (and their libraries imported) on first access."""
    if name in _LAZY:
        value = _LAZY[name]()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
