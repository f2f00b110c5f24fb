"""``oe-train``: compose the config, train with Outlier Exposure, test, write results.json."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from oe_lightning.cli import report_user_errors
from oe_lightning.config import config_dir, flat_config
from oe_lightning.data import OEDataModule
from oe_lightning.errors import NonFiniteLossError, OEUserError
from oe_lightning.loggers import build_loggers, finished_on_exit, instantiate_group
from oe_lightning.module import OutlierExposureModule
from oe_lightning.report import print_results
from oe_lightning.results import build_results, key_config, write_results

log = logging.getLogger("oe_lightning")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint the run wrote (``last.ckpt``), if any."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") if callback else ""
    return path if path and Path(path).exists() else None


def build_datamodule(cfg: DictConfig, with_oe: bool) -> OEDataModule:
    """The DataModule of ``cfg.data`` with the OE set (only if used) and the OOD suite."""
    return instantiate(cfg.data, oe=cfg.oe if with_oe else None, ood=cfg.get("ood"),
                       _convert_="all")


def build_module(cfg: DictConfig) -> OutlierExposureModule:
    module = instantiate(cfg.module, backbone=cfg.model, oe_loss=cfg.loss.fn, score=cfg.score)
    module.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    module.run_config = key_config(cfg)
    return module


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and write ``results.json``; returns the results dict."""
    started = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise OEUserError(f"ckpt_path={cfg.ckpt_path!r} does not exist; to resume, pass a "
                          f"checkpoint written by oe-train (RUN_DIR/checkpoints/last.ckpt).")
    module = build_module(cfg)
    datamodule = build_datamodule(cfg, with_oe=module.lambda_oe > 0)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    for logger in loggers:
        logger.log_hyperparams(flat_config(cfg))
    with finished_on_exit(loggers):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        except NonFiniteLossError as err:
            last = last_checkpoint(trainer)
            kept = (f"The last good checkpoint is {last}." if last
                    else "No epoch finished, so no checkpoint was written.")
            raise NonFiniteLossError(f"{err} {kept}") from err
        return test_and_write(trainer, module, datamodule, cfg, started, last_checkpoint(trainer))


def test_and_write(trainer: pl.Trainer, module: OutlierExposureModule, datamodule: OEDataModule,
                   cfg: DictConfig, started: float, checkpoint: str | None,
                   trained_with: dict[str, Any] | None = None) -> dict[str, Any]:
    """Test, then write ``results.json`` into the run directory and print its table."""
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = build_results(module.test_results, cfg, trained_with,
                            test_set_sizes=datamodule.test_set_sizes(), overrides=overrides(),
                            checkpoint=checkpoint,
                            wall_time_s=round(time.perf_counter() - started, 2))
    path = write_results(results, run_dir())
    print_results(results)
    log.info("results: %s", path)
    return results


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``oe-train``; returns the mean FPR95 (the value a sweeper minimises)."""
    results = report_user_errors(train, cfg)
    return None if results is None else results["mean"].get("fpr95")


if __name__ == "__main__":
    main()
