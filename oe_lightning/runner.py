"""oe-train and oe-eval, start to end: compose -> build -> fit -> test -> the run folder.

Imported by the entry points only after Hydra has composed (and validated) the config, so a typo
in an override is reported before torch, Lightning and the loggers are imported. The pieces live in
rooms of their own: :mod:`~oe_lightning.building`, :mod:`~oe_lightning.resuming`,
:mod:`~oe_lightning.run_outputs` and (oe-predict, oe-export) :mod:`~oe_lightning.deploy_tasks`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from oe_lightning.baseline import is_baseline
from oe_lightning.building import (
    build_datamodule,
    build_evaluation,
    build_module,
    check_accelerator,
    check_objective,
    method_callbacks,
    model_config_for,
)
from oe_lightning.checkpoint_writing import add_to_checkpoint, with_atomic_checkpoints
from oe_lightning.checkpoints import load_backbone_weights, read_checkpoint
from oe_lightning.config import flat_config, run_dir
from oe_lightning.deploy_tasks import export, predict  # noqa: F401 (runner.<task> for every entry point)
from oe_lightning.distributed import distributed_job
from oe_lightning.errors import NonFiniteLossError
from oe_lightning.loggers import build_loggers, continue_logs, finished_on_exit, instantiate_group
from oe_lightning.quiet import quiet_third_party
from oe_lightning.report import print_results
from oe_lightning.resuming import completed_results, last_checkpoint, resume_checkpoint
from oe_lightning.run_folder import (
    refuse_foreign_results,
)
from oe_lightning.run_lock import run_dir_lock
from oe_lightning.run_outputs import deployed_values, run_info, test_and_write, validation_metrics

log = logging.getLogger("oe_lightning")
quiet_third_party()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and write ``results.json``; returns the results dict. The run directory is locked
    first: a second oe-train writing it at the same time is refused before any work."""
    with run_dir_lock(run_dir()):
        return _train(cfg)


def read_with_stored_vocabulary(datamodule: Any, checkpoint: Any, backbone: Any) -> None:
    """Text data read with the vocabulary a checkpoint's weights were trained on (oe-eval, fine-tuning, resuming),
    not one rebuilt from today's files; refused if the data tokenises otherwise or the model cannot embed it."""
    info = checkpoint.get("oe_lightning") if isinstance(checkpoint, dict) else None
    stored = info.get("preprocessing") if isinstance(info, dict) else None
    family = datamodule.family
    if isinstance(stored, dict) and stored.get("family") == family.name:
        family.use_stored(stored)
        family.check_fits(backbone)


def _train(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    refuse_foreign_results("train", run_dir())
    done = completed_results(cfg)
    if done is not None:
        log.info("skipping %s: its results.json is complete (skip_complete=true)", run_dir())
        print_results(done)
        return done
    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path, resumed_step = resume_checkpoint(cfg)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg, with_oe=not is_baseline(module.lambda_oe))
    source = ckpt_path or OmegaConf.select(cfg, "module.pretrained", default=None)
    if source and not datamodule.family.fitted:  # fine-tuning or resuming: the weights' own vocabulary
        read_with_stored_vocabulary(datamodule, read_checkpoint(source), module.backbone)
    check_objective(cfg.get("optimized_metric"), datamodule, module)
    check_accelerator(cfg)
    loggers = build_loggers(cfg.get("logger"))
    continue_logs(loggers, resumed_step)
    callbacks = instantiate_group(cfg.get("callbacks")) + method_callbacks(cfg)
    if not loggers:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    plugins = with_atomic_checkpoints(list(instantiate(cfg.trainer.get("plugins") or [])))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=plugins)
    for logger in loggers:
        logger.log_hyperparams(flat_config(cfg))
    with distributed_job(), finished_on_exit(loggers):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except NonFiniteLossError as err:
            last = last_checkpoint(trainer)
            kept = (f"The last good checkpoint is {last}." if last
                    else "No epoch finished, so no checkpoint was written.")
            raise NonFiniteLossError(f"{err} {kept}") from err
        extra = {"val": validation_metrics(trainer, module), "run": run_info(trainer, datamodule)}
        evaluation = build_evaluation(cfg, module.backbone)
        checkpoint = last_checkpoint(trainer)

        def complete_checkpoint(results: dict[str, Any]) -> None:
            if checkpoint:  # what oe-predict and oe-export apply; a failed write (a full disk) leaves no results.json
                add_to_checkpoint(checkpoint, deployed_values(results))

        return test_and_write(trainer, evaluation, datamodule, cfg, started, checkpoint,
                              before_results=complete_checkpoint, **extra)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on the ID test set and the OOD suite; returns the results dict."""
    started = time.perf_counter()
    refuse_foreign_results("eval", run_dir())
    pl.seed_everything(cfg.seed, workers=True)
    checkpoint = read_checkpoint(cfg.ckpt_path)
    backbone = instantiate(model_config_for(cfg, checkpoint))
    load_backbone_weights(backbone, cfg.ckpt_path, cfg.data.num_classes, checkpoint)
    evaluation = build_evaluation(cfg, backbone)
    datamodule = build_datamodule(cfg, with_oe=cfg.get("oe") is not None)  # oe=: held-out OE validates
    read_with_stored_vocabulary(datamodule, checkpoint, backbone)
    check_accelerator(cfg)
    loggers = build_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False)
    info = checkpoint.get("oe_lightning") or {}
    with distributed_job(), finished_on_exit(loggers):
        return test_and_write(trainer, evaluation, datamodule, cfg, started, str(cfg.ckpt_path),
                              info.get("run_config"), info.get("identity"))
