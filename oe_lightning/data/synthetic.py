"""Synthetic OOD test sets as the Outlier Exposure paper generates them.

The paper defines them on [-1, 1]: Gaussian ``clip(N(0, 0.5), -1, 1)``, Rademacher
``2·Bernoulli(0.5) - 1``, Blobs (a Bernoulli(0.7) image, Gaussian blur σ = 1.5 over channels and
pixels alike, values below 0.75 set to 0, mapped to [-1, 1]) and uniform ``U(-1, 1)``. With
``value_range=(0, 1)`` the same images are mapped affinely onto [0, 1], the range of
un-normalised image tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from oe_lightning.data.embedded import TensorImages

KINDS = ("gaussian", "rademacher", "blobs", "uniform")


def noise_images(kind: str, num_samples: int, shape: Sequence[int], seed: int = 0) -> Tensor:
    """``num_samples`` images of ``shape`` (C, H, W) on [-1, 1], fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    size = (num_samples, *shape)
    if kind == "gaussian":
        return (0.5 * torch.randn(size, generator=g)).clamp_(-1, 1)
    if kind == "rademacher":
        return 2 * torch.bernoulli(torch.full(size, 0.5), generator=g) - 1
    if kind == "uniform":
        return 2 * torch.rand(size, generator=g) - 1
    if kind == "blobs":
        from scipy.ndimage import gaussian_filter

        # as skimage's gaussian(img, sigma=1.5, multichannel=False) in the paper's code: one
        # isotropic blur over each image's channel and spatial axes, 'nearest' edges
        bits = torch.bernoulli(torch.full(size, 0.7), generator=g).numpy()
        blobs = torch.from_numpy(gaussian_filter(bits, sigma=1.5, mode="nearest", truncate=4.0,
                                                 axes=tuple(range(1, bits.ndim))))
        blobs[blobs < 0.75] = 0.0
        return 2 * blobs - 1
    raise ValueError(f"noise kind must be one of {KINDS}, got {kind!r}.")


def noise(kind: str, num_samples: int = 500, shape: Sequence[int] = (3, 32, 32), seed: int = 0,
          value_range: Sequence[float] = (-1.0, 1.0), input_space: bool = False,
          transform: Callable | None = None) -> TensorImages:
    """A synthetic OOD dataset (labels -1) of the given kind, shape and value range.

    ``input_space=True`` feeds the images to the model as they are, ignoring the test transform
    (the paper's CIFAR and SVHN code does this: its noise never passes through Normalize).
    """
    lo, hi = value_range
    images = (noise_images(kind, num_samples, shape, seed) + 1) / 2 * (hi - lo) + lo
    labels = torch.full((num_samples,), -1, dtype=torch.long)
    return TensorImages(images, labels, None if input_space else transform,
                        source=f"synthetic:{kind}")
