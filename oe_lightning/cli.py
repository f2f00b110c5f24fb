"""Running an entry point so that bad input ends in one readable paragraph, not a traceback."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from oe_lightning.config import in_multirun
from oe_lightning.errors import OEUserError, Preempted

log = logging.getLogger("oe_lightning")
EXIT_USER_ERROR = 2


def user_error(err: BaseException) -> OEUserError | None:
    """The user error behind ``err``: our own, else a Hydra/OmegaConf config error."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        if isinstance(e, OEUserError):
            return e
    for e in chain:
        if isinstance(e, InstantiationException | OmegaConfBaseException):
            message = str(e).strip().replace(
                "\nare you sure that module ", " (are you sure that module ")
            if "Error locating target" in message:
                message += (" A target of your own must be importable: run from the folder that holds "
                            "its package with PYTHONPATH=. (e.g. PYTHONPATH=. oe-train model=custom "
                            "model._target_=my_pkg.MyNet), or pip install it.")
            return OEUserError(message)
    return None


def print_user_error(err: BaseException) -> str:
    """Print ``err`` as one wrapped ``Error:`` paragraph on stderr; returns the paragraph."""
    message = textwrap.fill(" ".join(str(err).split()), width=100, break_on_hyphens=False,
                            break_long_words=False)
    print(f"\nError: {message}\n", file=sys.stderr)
    return message


class RefuseBadConfig(Callback):
    """Hydra callback: an output folder that cannot be written, or that holds another command's results or
    another run's checkpoints, is refused before Hydra creates or writes into it;
    a ``-m`` sweep checks its composed config before the sweeper is built (an
    Optuna sampler reads ``seed``) or any job starts; bad fixed values end the command with exit 2.
    Swept values are checked by each job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse ``hydra.run.dir`` if it cannot be written or (rank 0 only) holds another command's results or
        another run's checkpoints: print the error and exit 2."""
        from oe_lightning.run_folder import check_run_folder
        from oe_lightning.run_lock import launched_as_rank_zero
        from oe_lightning.validate import check_output_folder

        try:
            check_output_folder(config, "hydra.run.dir")
            if launched_as_rank_zero():  # before Hydra writes .hydra/ into another run's folder
                check_run_folder(config, str(config.get("task_name")), Path(config.hydra.run.dir))
        except OEUserError as err:
            print_user_error(err)
            sys.exit(EXIT_USER_ERROR)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check ``hydra.sweep.dir`` and the composed config, all but the swept keys (each job checks its own value);
        print the error and exit 2."""
        from oe_lightning.validate import check_config, check_output_folder

        swept = frozenset(o.split("=", 1)[0].lstrip("+~") for o in config.hydra.overrides.task
                          if "," in o.split("=", 1)[-1] or "(" in o)  # each job checks its own value
        try:
            check_output_folder(config, "hydra.sweep.dir")
            check_config(config, str(config.get("task_name") or "train"), swept)
        except OEUserError as err:
            print_user_error(err)
            sys.exit(EXIT_USER_ERROR)


def report_user_errors(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)``; a user error prints as one paragraph and exits with code 2.

    In a multirun sweep the failing job writes ``error.txt`` into its directory and the sweep
    goes on with the next job; a job that crashes (not on bad input) does the same, with the
    traceback in its log, so the sweep summary still lists every job.
    """
    job_dir = Path(HydraConfig.get().runtime.output_dir) if in_multirun() else None
    try:
        value = task(cfg)
        if job_dir is not None:  # an error from an earlier attempt of this job is stale now
            (job_dir / "error.txt").unlink(missing_ok=True)
        return value
    except Preempted as err:  # not a failure of this job: the whole command stops, to be resumed
        log.warning("%s", err)
        print(f"\n{err}\n", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:
        found = user_error(err)
        if found is None:
            if job_dir is None:
                raise
            # a crash (not bad input) of one sweep job: record it and let the sweep go on, so the
            # other jobs run and the summary lists this one as failed (the traceback is in its log)
            log.exception("job %s crashed", job_dir.name)
            found = OEUserError(f"crashed: {type(err).__name__}: {err} (the traceback is in this job's .log file)")
        message = print_user_error(found)
        if job_dir is not None:
            (job_dir / "error.txt").write_text(message + "\n")
            log.error("job %s failed: %s", job_dir.name, message)
            return None
        sys.exit(EXIT_USER_ERROR)


def exit_when_done(main: Callable[[], Any]) -> None:
    """Run an entry point's ``main`` and end the process at once when it returns: files, loggers
    and streams are flushed, and the ~2 s the interpreter would spend tearing down torch, Lightning
    and their imports module by module are skipped. Errors and ``sys.exit`` pass as usual."""
    import multiprocessing
    import os

    main()
    for child in multiprocessing.active_children():  # what the interpreter's exit would do: end
        if child.daemon:                              # daemonic helpers (DataLoader workers)
            child.terminate()
    for child in multiprocessing.active_children():
        child.join(timeout=5)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def run_task(cfg: DictConfig, task: str, entry_module: str) -> float | None:
    """What an entry point runs once Hydra has composed ``cfg``: print the config tree, then
    import :mod:`oe_lightning.runner` (torch, Lightning: the heavy part) and run ``runner.<task>``;
    returns ``cfg.optimized_metric`` of its results (what a sweeper minimises). DDP ranks are
    started as ``python -m <entry_module>``. Every config problem is reported first, at once, then
    every checkpoint the command reads is checked (:func:`~oe_lightning.checkpoint_checks.check_checkpoints`)."""
    from oe_lightning.validate import check_config

    check_config(cfg, task)
    from oe_lightning.checkpoint_checks import check_checkpoints

    check_checkpoints(cfg, task)  # readable, and its stored values valid: before the config tree
    if cfg.get("print_config"):
        from oe_lightning.config import print_config_tree

        print_config_tree(cfg, save_to=Path(HydraConfig.get().runtime.output_dir) / "config_tree.log")
    from oe_lightning import runner
    from oe_lightning.distributed import set_entry_module
    from oe_lightning.results import objective

    set_entry_module(entry_module)
    return objective(getattr(runner, task)(cfg), cfg.get("optimized_metric"))
