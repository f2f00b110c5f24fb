"""Build a run's pieces from a composed config: the DataModule, the LightningModule (with what its
checkpoints store), the evaluation and its settings; refuse, before any work, what this machine or
run cannot do."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from oe_lightning import detector_registry as registry
from oe_lightning.baseline import is_baseline
from oe_lightning.checkpoint_info import CheckpointInfo
from oe_lightning.checkpoints import BACKGROUND_FACTORY, checked_model_config
from oe_lightning.data import OEDataModule
from oe_lightning.deployment import Preprocessing
from oe_lightning.errors import OEUserError
from oe_lightning.evaluation import OODEvaluation
from oe_lightning.evaluation_settings import EvaluationSettings
from oe_lightning.module import OutlierExposureModule
from oe_lightning.ood_groups import split_groups
from oe_lightning.results import (
    key_config,
    run_identity,
)


def build_datamodule(cfg: DictConfig, with_oe: bool) -> OEDataModule:
    """The DataModule of ``cfg.data`` with the OE set (only if used) and the OOD suite."""
    return instantiate(cfg.data, oe=cfg.oe if with_oe else None, ood=split_groups(cfg.get("ood"))[0],
                       val_ood=cfg.get("val_ood"), _convert_="all")


def evaluation_settings(cfg: DictConfig) -> EvaluationSettings:
    """The ``evaluation`` group as one checked settings object (conf/evaluation/)."""
    return EvaluationSettings.of(OmegaConf.to_container(cfg.evaluation, resolve=True) if cfg.get("evaluation")
                                 else None)


def checkpoint_info(cfg: DictConfig) -> CheckpointInfo:
    """What the run's checkpoints store beside the weights (plain values): the backbone config, the run's
    identity, class names, and what oe-predict and oe-export rebuild the deployed classifier from."""
    names = OmegaConf.select(cfg, "data.class_names", default=None)
    primary = registry.primary_config(cfg)
    return CheckpointInfo(
        model_config=model_config(cfg), run_config=key_config(cfg),
        identity=run_identity(cfg), class_names=[str(n) for n in names] if names else None,
        # a data config of your own without image_shape: not deployable
        preprocessing=Preprocessing.from_data_config(cfg.data).to_dict() if "image_shape" in cfg.data else None,
        score=OmegaConf.to_container(primary, resolve=True) if registry.is_deployable(primary) else None,
        primary_detector=registry.primary_name(cfg))


def model_config(cfg: DictConfig) -> dict[str, Any]:
    """The backbone's resolved config: ``cfg.model``, or (``loss.background_class``) that network with one
    output more, read as a K-class classifier (:func:`~oe_lightning.models.background.background_classifier`)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if not OmegaConf.select(cfg, "loss.background_class", default=False):
        return model
    if "num_classes" not in model:
        raise OEUserError(f"loss.background_class needs a model with a num_classes setting to give it one output "
                          f"more; model._target_={model.get('_target_')!r} has none.")
    return {"_target_": BACKGROUND_FACTORY, "backbone": model.pop("_target_"), **model}


def build_module(cfg: DictConfig) -> OutlierExposureModule:
    """The LightningModule of ``cfg.module`` around ``cfg.model``, validated with the primary detector."""
    score = registry.logit_score(instantiate(registry.primary_config(cfg)))
    make = instantiate(cfg.module, backbone=model_config(cfg), oe_loss=cfg.loss.fn, _partial_=True)
    # built objects given as they are (through instantiate, a dataclass would become a config and the
    # stored model config, with its _target_, a model)
    return make(score=score, validate_ood=score is not None, evaluation=evaluation_settings(cfg),
                info=checkpoint_info(cfg))


def build_evaluation(cfg: DictConfig, backbone: Any) -> OODEvaluation:
    """The evaluation of ``backbone``: the primary detector (``score=<name>``), then every
    ``detector=[...]`` entry (:func:`~oe_lightning.detector_registry.detector_configs`); metric settings
    from the ``evaluation`` group, shared by oe-train and oe-eval."""
    detectors = {name: instantiate(node) for name, node in registry.detector_configs(cfg).items()}
    return OODEvaluation(backbone, detectors, primary=registry.primary_name(cfg), settings=evaluation_settings(cfg),
                         seed=cfg.get("seed", 0), groups=split_groups(cfg.get("ood"))[1])


def method_callbacks(cfg: DictConfig) -> list[Any]:
    """Callbacks an OE method trains with: ``loss.mining`` (outlier mining, :mod:`oe_lightning.methods.mining`)."""
    mining = OmegaConf.select(cfg, "loss.mining", default=None)
    return [instantiate(mining)] if mining is not None else []


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without CUDA: say which trainer to use instead."""
    import torch

    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise OEUserError(
            f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu/ddp/slurm) needs a CUDA GPU, and "
            f"this machine has none. Use trainer=cpu, or trainer=ddp_sim for DDP on 2 CPU processes."
        )


def check_objective(metric: str | None, datamodule: OEDataModule, module: OutlierExposureModule) -> None:
    """Refuse, before training, a ``val.*`` objective that this run cannot produce."""
    if not metric or not metric.startswith("val."):
        return
    if datamodule.val_fraction <= 0:
        raise OEUserError(
            f"optimized_metric={metric} needs a validation split, but data.val_fraction=0. Set "
            f"data.val_fraction=0.1 (hparams_search=optuna_lambda does), or optimize mean.fpr95."
        )
    if metric in ("val.fpr95", "val.auroc") and module.score is None:
        name = module.info.primary_detector
        raise OEUserError(
            f"optimized_metric={metric} is the training's validation OOD metric, computed from logits with the "
            f"primary detector, and score={name} needs more than logits. Optimize detectors.{name}.val.fpr95 "
            f"(the evaluation's, on the same validation data), or use a logit score (score=msp, energy, ...)."
        )
    if metric in ("val.fpr95", "val.auroc") and is_baseline(module.lambda_oe) and datamodule.val_ood_factory is None:
        raise OEUserError(
            f"optimized_metric={metric} compares the ID validation split with held-out OE images, "
            f"and loss.lambda_oe=0 loads no OE data. Search λ over values > 0 (e.g. interval(0.01, 2)), "
            f"or give the validation an OOD set of its own (val_ood=...)."
        )


def model_config_for(cfg: DictConfig, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The backbone config stored in an oe-train checkpoint (checked to be plain data naming an
    allowed factory), else ``cfg.model``."""
    stored = (checkpoint.get("oe_lightning") or {}).get("model_config")
    also_allowed = [OmegaConf.select(cfg, "model._target_", default=""), *(cfg.get("model_allowlist") or [])]
    model_cfg = checked_model_config(stored, also_allowed, str(cfg.ckpt_path)) if stored else \
        OmegaConf.to_container(cfg.model, resolve=True)
    trained_classes = model_cfg.get("num_classes")
    if trained_classes is not None and trained_classes != cfg.data.num_classes:
        raise OEUserError(
            f"Checkpoint {cfg.ckpt_path!r} was trained with {trained_classes} classes but "
            f"data={cfg.data.name} has {cfg.data.num_classes}. Evaluate it with the data it was "
            f"trained on (data=...), or pass a checkpoint trained on {cfg.data.name}."
        )
    return model_cfg
