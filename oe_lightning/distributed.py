"""DDP that keeps Hydra's one-directory-per-job, in single runs and in multirun sweeps.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by re-running the command line. Under Hydra it
re-runs ``sys.argv`` with ``hydra.run.dir`` set to the *run* directory; in a multirun sweep that
command is the whole sweep (``-m`` and every swept value), so each child would start the sweep
again, in the wrong directory. :class:`HydraDDPStrategy` starts every child as a single run of the
*current job*: the entry module, the job's config sources, its own overrides, and
``hydra.run.dir`` = the job's output directory. This works under any Hydra launcher.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist

from oe_lightning.compat import DDPStrategyWithScriptLauncher, ScriptLauncher

LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_ENTRY_MODULE: str | None = None


def set_entry_module(name: str) -> None:
    """Record the module whose ``main`` runs this Hydra app (``oe_lightning.train``/``.evaluate``).

    Children are started as ``python -m <name>``: under a joblib or submitit launcher ``__main__``
    and ``sys.argv`` belong to the worker, not to the app.
    """
    global _ENTRY_MODULE
    _ENTRY_MODULE = name


def entry_command() -> list[str]:
    """``python -m <entry module>``, else how this process was started."""
    if _ENTRY_MODULE:
        return [sys.executable, "-m", _ENTRY_MODULE]
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name]
    return [sys.executable, os.path.abspath(sys.argv[0])]


def config_source_args(hydra_cfg: Any) -> list[str]:
    """``--config-path``/``--config-dir``/``--config-name`` recreating the job's config sources."""
    args = []
    for source in hydra_cfg.runtime.config_sources:
        if source.schema != "file":
            continue
        if source.provider == "main":
            args.append(f"--config-path={source.path}")
        elif source.provider == "command-line":
            args.append(f"--config-dir={source.path}")
    return [*args, f"--config-name={hydra_cfg.job.config_name}"]


def child_command(local_rank: int) -> list[str]:
    """The command line that starts ``local_rank`` of the current Hydra job (run or multirun)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    return [*entry_command(), *config_source_args(hydra_cfg), *hydra_cfg.overrides.task,
            f'hydra.run.dir="{output_dir}"', "hydra.output_subdir=null", "hydra.mode=RUN",
            f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}"]


class HydraJobLauncher(ScriptLauncher):
    """Lightning's subprocess launcher, with children started by :func:`child_command`."""

    def command_for_rank(self, local_rank: int) -> list[str] | None:
        """The command line of ``local_rank`` (:func:`child_command`); None outside Hydra, for Lightning's own."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # not under Hydra: Lightning's own re-launch is right
            return None
        return child_command(local_rank)


class HydraDDPStrategy(DDPStrategyWithScriptLauncher):
    """``DDPStrategy`` whose re-launched ranks run the current Hydra job, each in its directory.

    Use it as ``trainer.strategy`` (``trainer=ddp`` / ``trainer=ddp_sim`` do). Under SLURM or
    torchrun the processes already exist and nothing is launched.
    """

    script_launcher = HydraJobLauncher


@contextmanager
def distributed_job() -> Iterator[None]:
    """One sweep job's DDP lifetime: afterwards the process group is destroyed and the launch
    variables restored, so the next job of a multirun starts its own group on a fresh port."""
    saved = {key: os.environ.get(key) for key in LAUNCH_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
