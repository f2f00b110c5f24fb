"""Pretrained weights for torchvision and timm backbones, read from a local file or cache.

A missing file is an error naming where to put it (never a silent random start, never a hang);
files are read with ``weights_only=True``. After loading, the classifier head is replaced by one
with the data's number of classes (:func:`replace_head`).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch
from torch import nn

from oe_lightning.errors import OEUserError

log = logging.getLogger("oe_lightning")
DOWNLOAD_TIMEOUT_S = 30


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's classifier: its last ``nn.Linear`` (ResNet ``fc``, MobileNet ``classifier.3``,
    ViT ``heads.head``)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise OEUserError(f"{type(model).__name__} has no nn.Linear classifier whose output to replace.")
    return found[-1]


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the last linear layer for a freshly initialised one with ``num_classes`` outputs."""
    name, head = last_linear(model)
    if head.out_features == num_classes:
        return model
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(head.in_features, num_classes, bias=head.bias is not None))
    return model


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A weights file's state_dict (plain, wrapped, or an oe-train checkpoint's backbone), read as data only."""
    from oe_lightning.checkpoints import backbone_state_dict, read_checkpoint

    return backbone_state_dict(read_checkpoint(path))


def load_fitting(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, first resizing the head to the file's class count if it differs."""
    name, head = last_linear(model)
    stored = state.get(f"{name}.weight")
    if stored is not None and stored.shape[0] != head.out_features:
        replace_head(model, int(stored.shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise OEUserError(f"The weights in {source} do not fit {type(model).__name__}: {' '.join(lines[1:3])[:300]}. "
                          f"Use the weights file of this architecture.") from err


def torchvision_weights(name: str, weights: str, download: bool = True) -> dict[str, torch.Tensor]:
    """A torchvision weights enum member (``IMAGENET1K_V2``, ``DEFAULT``) as a state_dict, from torch's
    cache (``$TORCH_HOME/hub/checkpoints/<file>``), downloaded there first if ``download``."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except ValueError as err:
        raise OEUserError(f"model.name={name!r} has no torchvision weights; see "
                          f"torchvision.models.list_models().") from err
    try:
        member = enum[weights] if weights in enum.__members__ else enum.verify(weights)
    except (KeyError, ValueError) as err:
        raise OEUserError(f"model.weights={weights!r} is not one of {name}'s weights: "
                          f"{sorted(enum.__members__)}.") from err
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(member.url)
    if not cached.is_file():
        place = (f"Place the file {member.url} at {cached} (or set TORCH_HOME to a folder holding "
                 f"hub/checkpoints/{cached.name}), or pass model.weights_path=<a copy of it>.")
        if not download:
            raise OEUserError(f"The weights {name}.{member.name} are not in torch's cache and model.download=false. "
                              f"{place}")
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            log.info("downloading %s to %s", member.url, cached)
            torch.hub.load_state_dict_from_url(member.url, progress=True, check_hash=True, weights_only=True)
        except Exception as err:  # noqa: BLE001 - no network, a proxy, a bad hash: one message
            for partial in cached.parent.glob(f"{cached.name}*"):
                if partial != cached:
                    partial.unlink(missing_ok=True)
            raise OEUserError(f"Downloading the weights {name}.{member.name} failed ({type(err).__name__}: "
                              f"{str(err)[:160]}); this machine may be offline. {place}") from err
        finally:
            socket.setdefaulttimeout(previous)
    return read_weights(cached)


def timm_classifier(name: str = "resnet18", num_classes: int = 10, in_chans: int = 3,
                    pretrained: bool = False, weights_path: str | None = None, **kwargs) -> nn.Module:
    """A timm model with ``num_classes`` outputs: from scratch, with timm's pretrained weights
    (``pretrained``: the Hugging Face cache, downloaded if online) or a local state_dict (``weights_path``; timm's
    ``checkpoint_path`` is read the same way, weights only)."""
    import timm

    checkpoint_path = kwargs.pop("checkpoint_path", None)
    if checkpoint_path:  # timm's own loader unpickles (weights_only=False) in timm 1.0.9-1.0.25: read it ourselves
        if weights_path:
            raise OEUserError(f"model.checkpoint_path={checkpoint_path!r} and model.weights_path={weights_path!r} "
                              f"both name initial weights; keep one (weights_path).")
        weights_path = checkpoint_path
    try:
        if weights_path:
            model = timm.create_model(name, pretrained=False, in_chans=in_chans, **kwargs)
            load_fitting(model, read_weights(weights_path), str(weights_path))
            if model.num_classes != num_classes:
                model.reset_classifier(num_classes)
            return model
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                 **kwargs)
    except OEUserError:
        raise
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises many types offline
        if "Unknown model" in str(err):
            raise OEUserError(f"model.name={name!r} is not a timm model; see timm.list_models().") from err
        if not pretrained:
            raise
        cause = err
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    raise OEUserError(f"timm's pretrained weights for {name} could not be loaded ({type(cause).__name__}: "
                      f"{(str(cause).splitlines() or [''])[0][:160]}); this machine may be offline and they are "
                      f"not in the Hugging Face cache ({cache}). Download them once where there is network, or "
                      f"pass model.weights_path=<a state_dict file of {name}>.") from cause
