"""OpenOOD v1.5's ResNet-18 for 32×32 images (openood/networks/resnet18_32x32.py), and its released
checkpoints' state_dict format."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from oe_lightning.models.torchvision_models import torchvision_classifier


def openood_state_dict(state: dict) -> dict:
    """An OpenOOD ResNet-18 state_dict under torchvision's names: its projection shortcut
    (``layerN.0.shortcut.{0,1}``, resnet18_32x32.py:25-32) is torchvision's ``downsample``; every other key
    (``conv1``, ``bn1``, ``layerN.M.{conv,bn}{1,2}``, ``fc``) is the same."""
    return {key.replace(".shortcut.", ".downsample."): value for key, value in state.items()}


def resnet18_32x32(num_classes: int = 10, in_channels: int = 3, weights_path: str | Path | None = None) -> nn.Module:
    """OpenOOD's ResNet-18 for 32×32 inputs: torchvision's ResNet-18 with a 3×3 stride-1 stem and no max-pool
    (resnet18_32x32.py:87-100: the same layers, 11,173,962 parameters for 10 classes). ``weights_path``: an
    OpenOOD checkpoint (``results/<run>/s0/best.ckpt``, a plain ``state_dict`` saved by its recorder,
    base_recorder.py:27-30), loaded strictly; a head of another class count is replaced."""
    model = torchvision_classifier("resnet18", num_classes=num_classes, in_channels=in_channels, small_input=True)
    if weights_path:
        from oe_lightning.models.pretrained import load_fitting, read_weights, replace_head

        load_fitting(model, openood_state_dict(read_weights(weights_path)), str(weights_path))
        if model.fc.out_features != num_classes:
            replace_head(model, num_classes)
    return model
