"""torchvision classifiers by name, adapted to the image size and channels of the data."""

from __future__ import annotations

import torchvision
from torch import nn

RESNET_FAMILY = ("resnet", "wide_resnet", "resnext")


def torchvision_classifier(name: str = "resnet18", num_classes: int = 10, in_channels: int = 3,
                           small_input: bool = False, weights: str | None = None, weights_path: str | None = None,
                           download: bool = True, **kwargs) -> nn.Module:
    """Any torchvision classification model (``torchvision.models.list_models``), from scratch or
    pretrained: ``weights`` names a weights enum member (``IMAGENET1K_V2``, ``DEFAULT``) read from
    torch's cache (downloaded there if ``download`` and online), or ``weights_path`` is a state_dict
    file; the head is then replaced for ``num_classes`` (:mod:`oe_lightning.models.pretrained`).

    ``small_input=True`` (ResNet family only) swaps the 7×7 stride-2 stem and the max-pool for one
    3×3 stride-1 convolution, the usual CIFAR (32×32) adaptation; ``in_channels`` other than 3
    swaps a ResNet's first convolution. Feature detectors read the input of the model's last
    linear layer (:class:`~oe_lightning.models.contract.TorchvisionFeatures`).
    """
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(f"model.name={name!r} is not a torchvision classification model; "
                         f"choose one of torchvision.models.list_models(), e.g. resnet18, "
                         f"mobilenet_v3_small, efficientnet_b0, convnext_tiny, vit_b_16.")
    resnet = name.startswith(RESNET_FAMILY)
    if (small_input or in_channels != 3) and not resnet:
        raise ValueError(f"model.small_input / model.in_channels={in_channels} adapt ResNet-family stems "
                         f"only; {name} takes 3-channel images at its own resolution (resize the data, "
                         f"model.small_input=false).")
    if weights or weights_path:
        from oe_lightning.models.pretrained import load_fitting, read_weights, replace_head, torchvision_weights

        model = torchvision.models.get_model(name, weights=None, **kwargs)
        state = read_weights(weights_path) if weights_path else torchvision_weights(name, str(weights), download)
        load_fitting(model, state, str(weights_path or f"{name}.{weights}"))
        replace_head(model, num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if resnet and (small_input or in_channels != 3):
        stride, kernel = (1, 3) if small_input else (2, 7)
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel, stride,
                                padding=kernel // 2, bias=False)
    if resnet and small_input:
        model.maxpool = nn.Identity()
    return model
