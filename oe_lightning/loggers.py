"""Building Lightning loggers and callbacks from config; W&B that never needs an API key."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

from oe_lightning.compat import (
    ContinuingExperimentWriter,
    logger_experiment_or_none,
    set_logger_experiment,
    wandb_init_kwargs,
)
from oe_lightning.results import replacing

log = logging.getLogger("oe_lightning")


class OEWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` without the ``anonymous=None`` it always passes to ``wandb.init``
    (which makes W&B warn "The anonymous setting has no effect" on every run)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        init = wandb_init_kwargs(self)
        if init.get("anonymous") is None:
            init.pop("anonymous", None)


def wandb_has_credentials() -> bool:
    """Whether a W&B API key is set in ``WANDB_API_KEY`` or in the netrc file (``$NETRC``, else ``~/.netrc``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a ``{name: {_target_: ...}}`` config group (loggers, callbacks)."""
    return [instantiate(node) for node in (group or {}).values()
            if node is not None and "_target_" in node]


def build_loggers(group: DictConfig | None) -> list[Logger]:
    """Loggers of the ``logger`` group. W&B runs offline when no credentials are configured."""
    if any("WandbLogger" in str(node.get("_target_", "")) for node in (group or {}).values()) \
            and not os.environ.get("WANDB_MODE") and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no API key configured, logging offline (upload later with `wandb sync`).")
    return instantiate_group(group)


@contextmanager
def finished_on_exit(loggers: list[Logger]) -> Iterator[None]:
    """Finish the W&B runs when the block ends: exit code 0 if it succeeded, else 1."""
    try:
        yield
    except BaseException:
        finish_loggers(loggers, exit_code=1)
        raise
    finish_loggers(loggers, exit_code=0)


def finish_loggers(loggers: list[Logger], exit_code: int = 0) -> None:
    """Close W&B runs (marked failed when ``exit_code`` != 0) so the next sweep job starts its own."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger_experiment_or_none(logger) is not None:
            logger.experiment.finish(exit_code=exit_code)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resumed run.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when a run directory is reused, so
    a run resumed from its ``last.ckpt`` lost the rows of its earlier epochs. This one keeps the
    rows logged before the resumed step (:meth:`continue_from`) and drops the rest, which the
    resumed run logs again (the interrupted epoch, an earlier test).
    """

    @property
    def experiment(self) -> ExperimentWriter:
        """The CSV writer, created on first use as one that continues an existing ``metrics.csv``."""
        experiment = logger_experiment_or_none(self)
        if experiment is None:  # an existing metrics.csv is continued, not deleted
            experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
            set_logger_experiment(self, experiment)
        return experiment

    @rank_zero_only
    def continue_from(self, step: int) -> None:
        """Keep the rows of steps ``< step`` (0: start a fresh file)."""
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        if step <= 0:
            path.unlink()
            experiment = logger_experiment_or_none(self)
            if experiment is not None:
                experiment.metrics_keys = []
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") not in (None, "") and float(r["step"]) < step]
        with replacing(path, "w", newline="") as file:  # a temporary file created exclusively, then renamed
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        log.info("CSV log continued from step %d (%d earlier rows kept in %s)", step, len(rows), path)


def continue_logs(loggers: list[Logger], step: int) -> None:
    """Before fitting: CSV logs keep what was logged before ``step`` (the resumed checkpoint's)."""
    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.continue_from(step)
