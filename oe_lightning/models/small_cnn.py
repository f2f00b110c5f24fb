"""A small CNN for small images (the embedded 8×8 digits benchmark, or 32×32 smoke tests)."""

from __future__ import annotations

from torch import Tensor, nn


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Two conv stages (width, 2·width channels) with one 2× pooling, global average pool, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32,
                 dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width), _conv_bn_relu(width, width), nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width), _conv_bn_relu(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature maps, ``(B, 2·width, H/2, W/2)`` (timm's name)."""
        return self.features[:-2](x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, then (unless ``pre_logits``) dropout and the linear classifier."""
        x = self.features[-2:](x)
        return x if pre_logits else self.fc(self.dropout(x))

    def get_classifier(self) -> nn.Module:
        """The linear classifier ``fc``."""
        return self.fc

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))
