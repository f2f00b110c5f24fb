"""Random crop and flip for a whole batch at once, on whatever device the batch is on.

Each image carries its own int64 seed (:class:`~oe_lightning.data.samplers.SeededSamples` with
``with_seed``); its crop offsets and flip are a hash of that seed alone, so a batch is augmented
identically on CPU and GPU, in any order, and on resume. The draws have torchvision's
``RandomCrop(size, padding)`` + ``RandomHorizontalFlip`` distribution: offsets uniform in
``[0, 2 * padding]`` (plus any size difference), a flip with probability 1/2
(``tests/test_batch_augment.py`` checks both, and the pixels against torchvision's functions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _signed(constant: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 bits; torch's ``>>`` is arithmetic."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function (Steele, Lea, Flood 2014) on int64 tensors, wrapping as uint64."""
    z = x.to(torch.int64) + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def uniform_from_seeds(seeds: torch.Tensor, stream: int) -> torch.Tensor:
    """One float64 in [0, 1) per seed for draw number ``stream``: the top 53 bits of a double hash."""
    bits = splitmix64(splitmix64(seeds) + int(stream))
    return _shift_right(bits, 11).to(torch.float64) * (2.0 ** -53)


class BatchAugment:
    """Pad by ``padding`` and crop ``size`` at a per-image random offset, then (``flip``) mirror half of
    the images: ``RandomCrop(size, padding)`` and ``RandomHorizontalFlip`` for normalised batches.

    The padding is the normalised value of a black pixel (``-mean / std``), as padding before
    ``Normalize`` would give; ``size=None`` keeps the images' own size.
    """

    def __init__(self, size: int | None = None, padding: int = 0, flip: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        if padding < 0 or (size is not None and size < 1):
            raise ValueError(f"BatchAugment needs size >= 1 and padding >= 0, got size={size}, padding={padding}.")
        self.size, self.padding, self.flip = size, int(padding), bool(flip)
        self.fill = None if mean is None else [-m / s for m, s in zip(mean, std or [1.0] * len(mean), strict=True)]
        self._fill_on: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}  # made once per device

    def params(self, seeds: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: the crop's top and left in the padded image, and whether it is flipped."""
        size_h = size_w = self.size
        if self.size is None:
            size_h, size_w = height, width
        spare_h = height + 2 * self.padding - size_h
        spare_w = width + 2 * self.padding - size_w
        if spare_h < 0 or spare_w < 0:
            raise ValueError(f"BatchAugment: a {size_h}x{size_w} crop does not fit a {height}x{width} image "
                             f"padded by {self.padding}.")
        top = (uniform_from_seeds(seeds, 0) * (spare_h + 1)).floor().to(torch.int64)
        left = (uniform_from_seeds(seeds, 1) * (spare_w + 1)).floor().to(torch.int64)
        flipped = uniform_from_seeds(seeds, 2) < 0.5 if self.flip else torch.zeros_like(seeds, dtype=torch.bool)
        return top, left, flipped

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = images.shape
        seeds = seeds.to(images.device)
        top, left, flipped = self.params(seeds, height, width)
        if self.flip:
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        p = self.padding
        if p:
            if self.fill is None:
                images = F.pad(images, (p, p, p, p))
            else:
                key = (images.device, images.dtype)
                if key not in self._fill_on:
                    self._fill_on[key] = torch.tensor(self.fill, dtype=images.dtype, device=images.device)
                fill = self._fill_on[key]
                padded = fill[None, :, None, None].expand(n, channels, height + 2 * p, width + 2 * p).clone()
                padded[:, :, p:p + height, p:p + width] = images
                images = padded
        size_h, size_w = (height, width) if self.size is None else (self.size, self.size)
        rows = top[:, None] + torch.arange(size_h, device=images.device)  # (n, size_h)
        cols = left[:, None] + torch.arange(size_w, device=images.device)  # (n, size_w)
        batch = torch.arange(n, device=images.device)[:, None, None]
        # (n, size_h, size_w, channels) -> (n, channels, size_h, size_w)
        return images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return f"BatchAugment(size={self.size}, padding={self.padding}, flip={self.flip})"
