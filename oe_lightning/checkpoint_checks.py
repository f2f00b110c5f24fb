"""A checkpoint checked like a config, before the config tree is printed or anything is built.

The commands that read a checkpoint ask this module once their config is valid: the file must be one
``torch.load(weights_only=True)`` can read, and the values rebuilt from it must be valid for the task
(oe-predict and oe-export: :func:`~oe_lightning.deployment.deployable`; oe-eval: the model config and
that it fits the data). Above :mod:`oe_lightning.checkpoints` (reading) and
:mod:`oe_lightning.deployment` (what a deployed model needs), so neither imports the other's checks.
"""

from __future__ import annotations

from typing import Any

from oe_lightning.checkpoints import checked_model_config, read_checkpoint
from oe_lightning.deployment import deployable
from oe_lightning.errors import OEUserError


def check_checkpoints(cfg: Any, task: str) -> None:
    """Before the config tree is printed or anything built: every checkpoint the command reads is a
    file ``torch.load(weights_only=True)`` can read (tensors mapped, not loaded), and the values that
    oe-eval, oe-predict and oe-export rebuild from are checked (:func:`checked_model_config`;
    :func:`~oe_lightning.deployment.deployable`); each refusal names the file."""
    from omegaconf import OmegaConf

    keys = ("ckpt_path", "module.pretrained") if task == "train" else ("ckpt_path",)
    for key in keys:
        path = OmegaConf.select(cfg, key, default=None)
        if not path:
            continue
        checkpoint = read_checkpoint(str(path), mmap=True)
        info = checkpoint.get("oe_lightning")
        allowed = [OmegaConf.select(cfg, "model._target_", default=""), *(cfg.get("model_allowlist") or [])]
        if task in ("predict", "export"):
            deployable(checkpoint, str(path), cfg.get("threshold"), allowed)
        elif task == "evaluate" and isinstance(info, dict) and info.get("model_config"):
            check_fits_data(info, checked_model_config(info["model_config"], allowed, str(path)), str(path), cfg)


def check_fits_data(info: dict[str, Any], model_config: dict[str, Any], path: str, cfg: Any) -> None:
    """oe-eval: the checkpoint's classes and image channels are those of ``cfg.data``."""
    from omegaconf import OmegaConf

    shape = OmegaConf.select(cfg, "data.image_shape", default=None)
    channels = int(shape[0]) if shape is not None else None
    stored = model_config.get("in_channels", model_config.get("in_chans"))
    preprocessing = info.get("preprocessing")
    if stored is None and isinstance(preprocessing, dict):
        stored = preprocessing.get("channels")
    bad = []
    if channels is not None and isinstance(stored, int) and stored != channels:
        bad.append(f"it takes {stored}-channel images and data={cfg.data.get('name')} has {channels}-channel "
                   f"ones (data.image_shape={list(shape)})")
    classes, wanted = model_config.get("num_classes"), OmegaConf.select(cfg, "data.num_classes", default=None)
    if isinstance(classes, int) and isinstance(wanted, int) and classes != wanted:
        bad.append(f"it was trained with {classes} classes and data={cfg.data.get('name')} has {wanted} "
                   f"(data.num_classes={wanted})")
    if bad:
        raise OEUserError(f"Checkpoint {path!r} does not fit the data: {'; '.join(bad)}. Evaluate it with the data it "
                          f"was trained on (data=...), or pass a checkpoint trained on this data.")
