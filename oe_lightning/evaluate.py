"""``oe-eval ckpt_path=...``: score a trained checkpoint on an OOD suite and write results.json."""

from __future__ import annotations

import logging
import time
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from oe_lightning.checkpoints import read_checkpoint
from oe_lightning.cli import report_user_errors
from oe_lightning.config import config_dir
from oe_lightning.distributed import distributed_job, set_entry_module
from oe_lightning.errors import OEUserError
from oe_lightning.loggers import build_loggers, finished_on_exit
from oe_lightning.module import OutlierExposureModule
from oe_lightning.results import objective
from oe_lightning.train import build_datamodule, check_accelerator, test_and_write

log = logging.getLogger("oe_lightning")


def model_config_for(cfg: DictConfig, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The backbone config stored in an oe-train checkpoint, else ``cfg.model``."""
    stored = (checkpoint.get("oe_lightning") or {}).get("model_config")
    model_cfg = stored if stored else OmegaConf.to_container(cfg.model, resolve=True)
    trained_classes = model_cfg.get("num_classes")
    if trained_classes is not None and trained_classes != cfg.data.num_classes:
        raise OEUserError(
            f"Checkpoint {cfg.ckpt_path!r} was trained with {trained_classes} classes but "
            f"data={cfg.data.name} has {cfg.data.num_classes}. Evaluate it with the data it was "
            f"trained on (data=...), or pass a checkpoint trained on {cfg.data.name}."
        )
    return model_cfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on the ID test set and the OOD suite; returns the results dict."""
    set_entry_module("oe_lightning.evaluate")  # DDP ranks are started as `python -m oe_lightning.evaluate`
    started = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True)
    checkpoint = read_checkpoint(cfg.ckpt_path)
    backbone = instantiate(model_config_for(cfg, checkpoint))
    module = OutlierExposureModule(backbone, num_classes=cfg.data.num_classes,
                                   score=instantiate(cfg.score), pretrained=cfg.ckpt_path,
                                   recall=cfg.recall, fpr_rule=cfg.fpr_rule,
                                   protocol=cfg.protocol, num_to_avg=cfg.num_to_avg)
    datamodule = build_datamodule(cfg, with_oe=False)
    check_accelerator(cfg)
    loggers = build_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False)
    trained_with = (checkpoint.get("oe_lightning") or {}).get("run_config")
    with distributed_job(), finished_on_exit(loggers):
        return test_and_write(trainer, module, datamodule, cfg, started, str(cfg.ckpt_path),
                              trained_with)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``oe-eval``; returns ``cfg.optimized_metric`` (default the mean FPR95)."""
    return report_user_errors(lambda c: objective(evaluate(c), c.get("optimized_metric")), cfg)


if __name__ == "__main__":
    main()
