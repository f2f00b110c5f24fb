"""Wide ResNets as the Outlier Exposure paper trains them (WRN-40-2 for CIFAR, WRN-16-4 for SVHN).

Parameter names follow the paper's released checkpoints (``conv1``, ``block{1,2,3}.layer.{i}``
with ``bn1/conv1/bn2/conv2`` and ``convShortcut`` where the width or stride changes, ``bn1``,
``fc``), so its plain state_dicts load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus the shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        # name kept from the paper's code so that its checkpoints load
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride, padding=0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The residual branch plus the shortcut (a 1×1 conv of the pre-activation where width or stride changes)."""
        pre = F.relu(self.bn1(x))
        # with a projection shortcut the pre-activation feeds both branches
        shortcut = x if self.equal_in_out else self.convShortcut(pre)
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class WideGroup(nn.Module):
    """``num_blocks`` blocks; the first one changes width and stride."""

    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int,
                 drop_rate: float):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes,
                           stride if i == 0 else 1, drop_rate)
            for i in range(num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        """The blocks in sequence."""
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis, 2016) with widths 16, 16k, 32k, 64k."""

    def __init__(self, depth: int = 40, widen_factor: int = 2, num_classes: int = 10,
                 drop_rate: float = 0.3, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 (16, 22, 28, 40, ...), got {depth}.")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, padding=1, bias=False)
        self.block1 = WideGroup(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = WideGroup(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = WideGroup(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1]
                                                                * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature maps, ``(B, 64·k, H/4, W/4)``, after the final BN-ReLU (timm's name)."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.relu(self.bn1(out))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, then (unless ``pre_logits``) the linear classifier."""
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        """The linear classifier ``fc``."""
        return self.fc

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


def wrn_40_2(num_classes: int = 10, drop_rate: float = 0.3, **kwargs) -> WideResNet:
    """The paper's CIFAR backbone."""
    return WideResNet(40, 2, num_classes, drop_rate, **kwargs)


def wrn_16_4(num_classes: int = 10, drop_rate: float = 0.4, **kwargs) -> WideResNet:
    """The paper's SVHN backbone."""
    return WideResNet(16, 4, num_classes, drop_rate, **kwargs)
