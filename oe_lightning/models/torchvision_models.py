"""torchvision classifiers adapted to the image size and channels of the data."""

from __future__ import annotations

import torchvision
from torch import nn


def torchvision_classifier(name: str = "resnet18", num_classes: int = 10, in_channels: int = 3,
                           small_input: bool = True, **kwargs) -> nn.Module:
    """A torchvision ResNet built from scratch, with its stem fitted to small images.

    ``small_input=True`` swaps the 7×7 stride-2 stem and the max-pool for one 3×3 stride-1
    convolution, the usual CIFAR (32×32) adaptation; ``in_channels`` other than 3 swaps the
    first convolution. Any model is usable without this helper: ``_target_`` it directly.
    """
    builder = getattr(torchvision.models, name, None)
    if builder is None or not name.startswith(("resnet", "wide_resnet", "resnext")):
        raise ValueError(
            f"model.name={name!r} is not a torchvision ResNet family model; "
            f"for other architectures set model._target_ to the model's class or builder."
        )
    model = builder(num_classes=num_classes, **kwargs)
    if small_input or in_channels != 3:
        stride, kernel = (1, 3) if small_input else (2, 7)
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel, stride,
                                padding=kernel // 2, bias=False)
    if small_input:
        model.maxpool = nn.Identity()
    return model
