"""Synthetic OOD test sets as the Outlier Exposure paper's test scripts generate them.

Every parameter is explicit, so each suite can set the reference's values (hendrycks/outlier-exposure):

- ``gaussian``: ``clip(N(loc, scale²), *clip)``. CIFAR/test.py:189-190 and TinyImageNet/test.py:185-186:
  loc 0, scale 0.5, clip [-1, 1]; SVHN/test.py:181-183: loc 0.5, scale 0.5, clip [0, 1].
- ``rademacher``: each value ``hi`` with probability ``p`` (0.5), else ``lo``, for ``value_range = (lo, hi)``
  (CIFAR/test.py:201-202: {-1, 1}; SVHN/test.py:193-194 "Bernoulli": {0, 1}).
- ``blobs``: Bernoulli(``p`` = 0.7) bits, one isotropic Gaussian blur of width ``blur_sigma`` over the
  channel and pixel axes together (skimage ``gaussian(img, sigma, multichannel=False)``: 'nearest'
  edges, truncate 4), values below ``threshold`` (0.75) set to 0, then mapped from [0, 1] onto
  ``value_range`` (CIFAR/test.py:211-217: σ 1.5, ``* 2 - 1``; SVHN/test.py:203-209: σ 1.5, [0, 1];
  TinyImageNet/test.py:207-213: σ 2).
- ``uniform``: U(``value_range``) (the reference's validation-only noise).

Images are generated one at a time from ``(seed, index)``, so a suite can hold the reference's pool
of ``len(ID test) // 5 × num_to_avg`` images (20,000; 52,060 for SVHN) without keeping them in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

KINDS = ("gaussian", "rademacher", "blobs", "uniform")


def _one(kind: str, rng: np.random.Generator, shape: Sequence[int], value_range: Sequence[float],
         loc: float | None, scale: float | None, clip: Sequence[float] | None, p: float | None,
         blur_sigma: float, threshold: float) -> np.ndarray:
    lo, hi = value_range
    if kind == "gaussian":
        loc = (lo + hi) / 2 if loc is None else loc
        scale = (hi - lo) / 4 if scale is None else scale
        c_lo, c_hi = value_range if clip is None else clip
        return np.clip(rng.normal(loc, scale, size=shape), c_lo, c_hi)
    if kind == "rademacher":
        return np.where(rng.random(size=shape) < (0.5 if p is None else p), hi, lo)
    if kind == "uniform":
        return rng.uniform(lo, hi, size=shape)
    if kind == "blobs":
        from scipy.ndimage import gaussian_filter

        bits = (rng.random(size=shape) < (0.7 if p is None else p)).astype(np.float64)
        blobs = gaussian_filter(bits, sigma=blur_sigma, mode="nearest", truncate=4.0)
        blobs[blobs < threshold] = 0.0
        return blobs * (hi - lo) + lo
    raise ValueError(f"noise kind must be one of {KINDS}, got {kind!r}.")


class SyntheticNoise(Dataset):
    """``num_samples`` noise images of ``shape`` (C, H, W), image i drawn from the seed sequence
    ``(seed, i)``; labels -1. See the module docstring for the parameters of each kind."""

    def __init__(self, kind: str, num_samples: int, shape: Sequence[int], seed: int = 0,
                 value_range: Sequence[float] = (-1.0, 1.0), loc: float | None = None,
                 scale: float | None = None, clip: Sequence[float] | None = None, p: float | None = None,
                 blur_sigma: float = 1.5, threshold: float = 0.75, transform: Callable | None = None):
        if kind not in KINDS:
            raise ValueError(f"noise kind must be one of {KINDS}, got {kind!r}.")
        if num_samples < 1:
            raise ValueError(f"noise num_samples must be >= 1, got {num_samples}.")
        self.kind, self.num_samples, self.shape, self.seed = kind, int(num_samples), tuple(shape), int(seed)
        self.params = {"value_range": tuple(value_range), "loc": loc, "scale": scale,
                       "clip": None if clip is None else tuple(clip), "p": p, "blur_sigma": float(blur_sigma),
                       "threshold": float(threshold)}
        self.transform = transform
        self.source = f"synthetic:{kind}"

    def __len__(self) -> int:
        return self.num_samples

    def image(self, index: int) -> Tensor:
        """Noise image ``index`` as a float32 ``(C, H, W)`` tensor, without the transform; always the same for
        the same ``(seed, index)``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} noise images")
        rng = np.random.default_rng([self.seed, index])
        return torch.from_numpy(_one(self.kind, rng, self.shape, **self.params).astype(np.float32))

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self.image(index)
        return (self.transform(x) if self.transform is not None else x), -1

    def images(self, count: int | None = None) -> Tensor:
        """The first ``count`` images (all by default) as one tensor."""
        return torch.stack([self.image(i) for i in range(count or self.num_samples)])


def noise(kind: str, num_samples: int = 500, shape: Sequence[int] = (3, 32, 32), seed: int = 0,
          value_range: Sequence[float] = (-1.0, 1.0), input_space: bool = False,
          transform: Callable | None = None, loc: float | None = None, scale: float | None = None,
          clip: Sequence[float] | None = None, p: float | None = None, blur_sigma: float = 1.5,
          threshold: float = 0.75) -> SyntheticNoise:
    """A synthetic OOD dataset. ``input_space=True`` feeds the images to the model as they are,
    ignoring the test transform (the paper's noise never passes through Normalize)."""
    return SyntheticNoise(kind, num_samples, shape, seed, value_range, loc, scale, clip, p, blur_sigma,
                          threshold, transform=None if input_space else transform)
