"""DDP that keeps Hydra's one-directory-per-job, in single runs and in multirun sweeps.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by re-running the command line. Under Hydra it
re-runs ``sys.argv`` with ``hydra.run.dir`` set to the *run* directory; in a multirun sweep that
command is the whole sweep (``-m`` and every swept value), so each child would start the sweep
again, in the wrong directory. :class:`HydraDDPStrategy` starts every child as a single run of the
*current job*: the entry point, the config source flags (``-cp``/``-cn``/``-cd``), the job's own
overrides, and ``hydra.run.dir`` = the job's output directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def config_source_args(argv: Sequence[str]) -> list[str]:
    """The config source flags of a command line (``-cp X``, ``--config-name=Y``), nothing else."""
    kept: list[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            kept += [arg, args[i + 1]]
        elif arg.split("=", 1)[0] in CONFIG_FLAGS and "=" in arg:
            kept.append(arg)
    return kept


def entry_command() -> list[str]:
    """How this process was started: ``python -m package.module`` or ``python /path/script``."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name]
    return [sys.executable, os.path.abspath(sys.argv[0])]


def child_command(local_rank: int) -> list[str]:
    """The command line that starts ``local_rank`` of the current Hydra job (run or multirun)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    return [*entry_command(), *config_source_args(sys.argv[1:]), *hydra_cfg.overrides.task,
            f'hydra.run.dir="{output_dir}"', "hydra.output_subdir=null",
            f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}"]


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher, with children started by :func:`child_command`."""

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # not under Hydra: Lightning's own re-launch is right
            return super()._call_children_scripts()
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            self.procs.append(subprocess.Popen(child_command(local_rank), env=child_env))
        return None


class HydraDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose re-launched ranks run the current Hydra job, each in its directory.

    Use it as ``trainer.strategy`` (``trainer=ddp`` / ``trainer=ddp_sim`` do). Under SLURM or
    torchrun the processes already exist and nothing is launched.
    """

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            assert self.cluster_environment is not None
            self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes,
                                              self.num_nodes)


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
