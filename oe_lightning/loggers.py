"""Building Lightning loggers and callbacks from config; W&B that never needs an API key."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, WandbLogger

log = logging.getLogger("oe_lightning")


def wandb_has_credentials() -> bool:
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
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=exit_code)
