"""Transform pieces that configs cannot spell directly."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def to_float_image() -> v2.Compose:
    """PIL image / uint8 array -> float32 tensor in [0, 1] (what ``ToTensor`` did)."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
