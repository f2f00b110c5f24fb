"""The embedded offline benchmark: data that ships with scikit-learn.

D_in is scikit-learn's 8×8 handwritten digits; D_out^OE and one OOD test set are random crops of
scikit-learn's two sample photographs (``china.jpg`` and ``flower.jpg``), turned grayscale and
resized to 8×8. All images are float tensors of shape (1, 8, 8) with values in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

SAMPLE_IMAGES = ("china.jpg", "flower.jpg")
DIGITS_SHAPE = (1, 8, 8)


class TensorImages(Dataset):
    """Images held in one tensor, with labels (``-1`` for unlabelled outliers) and a transform."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable | None = None,
                 source: str = ""):
        self.images, self.labels, self.transform, self.source = images, labels, transform, source

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        """A DataLoader's whole batch in one gather; a per-pixel transform (``Normalize``) runs once
        on the batch, any other transform image by image."""
        index = torch.as_tensor(indices, dtype=torch.long)
        images, labels = self.images[index], self.labels[index].tolist()
        if self.transform is None or batchable(self.transform):
            images = self.transform(images) if self.transform is not None else images
            return list(zip(images.unbind(0), labels, strict=True))
        return [(self.transform(x), y) for x, y in zip(images.unbind(0), labels, strict=True)]


def batchable(transform: Callable) -> bool:
    """Whether ``transform`` treats a batch (B, C, H, W) as B images: per-pixel, per-channel steps
    (``Normalize``, ``ToDtype``) alone, possibly in a ``Compose``."""
    from torchvision.transforms import v2

    if isinstance(transform, v2.Compose):
        return all(batchable(t) for t in transform.transforms)
    return isinstance(transform, v2.Normalize | v2.ToDtype | v2.Identity)


def digits_split_indices(n: int, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed train/test split of ``n`` samples: the same for every run with the same seed."""
    perm = np.random.default_rng(split_seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def digits(split: str = "train", transform: Callable | None = None, test_fraction: float = 0.3,
           split_seed: int = 0) -> TensorImages:
    """scikit-learn's digits (1,797 images of 10 classes), scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}.")
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = digits_split_indices(len(images), test_fraction, split_seed)
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    return TensorImages(images[idx], labels[idx], transform, source="sklearn:digits")


NEAR_KINDS = ("rotated", "overlaid")


def altered_digits(kind: str = "rotated", transform: Callable | None = None, test_fraction: float = 0.3,
                   split_seed: int = 0, seed: int = 0) -> TensorImages:
    """Near-OOD images made from the digits' *test* split (never a training image), handwriting that is no digit:
    ``rotated``, each digit turned 90°; ``overlaid``, two test digits of different classes, pixel-wise maximum
    (pairs drawn with ``seed``). Labels are -1."""
    if kind not in NEAR_KINDS:
        raise ValueError(f"altered digits are one of {NEAR_KINDS}, not {kind!r}.")
    test = digits("test", test_fraction=test_fraction, split_seed=split_seed)
    images, labels = test.images, test.labels
    if kind == "rotated":
        altered = torch.rot90(images, 1, dims=(2, 3))
    else:
        partner = torch.from_numpy(np.random.default_rng(seed).permutation(len(images)))
        keep = labels != labels[partner]  # a digit over one of the same class would still be that digit
        altered = torch.maximum(images[keep], images[partner][keep])
    return TensorImages(altered.contiguous(), torch.full((len(altered),), -1, dtype=torch.long), transform,
                        source=f"sklearn:digits:{kind}")


def _grayscale(image: np.ndarray) -> Tensor:
    rgb = torch.tensor(image, dtype=torch.float32) / 255.0
    return (rgb @ torch.tensor([0.299, 0.587, 0.114])).unsqueeze(0)  # ITU-R 601 luma, (1, H, W)


def sample_image_crops(image: str = "china.jpg", num_samples: int = 5000, size: int = 8,
                       min_crop: int = 16, max_crop: int = 128, stretch: bool = False,
                       seed: int = 0, transform: Callable | None = None, channels: int = 1) -> TensorImages:
    """Random square crops of a scikit-learn sample photograph, resized to size×size: grayscale
    (``channels=1``, for the digits) or colour (``channels=3``, for RGB data of your own).

    Crop sides are drawn uniformly from [min_crop, max_crop] pixels and positions uniformly over
    the 427×640 photograph; resizing is antialiased (area averaging). ``stretch`` rescales each
    crop's intensities to span [0, 1] (the contrast of the digits). Crops are fixed by ``seed``.
    """
    crops = _crops(image, num_samples, size, min_crop, max_crop, stretch, seed, channels)
    labels = torch.full((num_samples,), -1, dtype=torch.long)
    return TensorImages(crops, labels, transform, source=f"sklearn:{image}")


@functools.lru_cache(maxsize=4)
def _crops(image: str, num_samples: int, size: int, min_crop: int, max_crop: int, stretch: bool, seed: int,
           channels: int) -> Tensor:
    """The crops of :func:`sample_image_crops`, made once per process for each setting (a run asks
    for its OE set more than once: training, held-out validation); never modified in place."""
    from sklearn.datasets import load_sample_image

    if image not in SAMPLE_IMAGES:
        raise ValueError(
            f"sample image {image!r} is not one of scikit-learn's sample images {SAMPLE_IMAGES}."
        )
    if channels not in (1, 3):
        raise ValueError(f"sample image crops have 1 (grey) or 3 (RGB) channels, not {channels}.")
    photo = load_sample_image(image)
    gray = _grayscale(photo) if channels == 1 else torch.as_tensor(np.array(photo)).permute(2, 0, 1).float() / 255.0
    height, width = gray.shape[1:]
    if not 1 <= min_crop <= max_crop <= min(height, width):
        raise ValueError(
            f"crop sides must satisfy 1 <= min_crop <= max_crop <= {min(height, width)}; "
            f"got min_crop={min_crop}, max_crop={max_crop}."
        )
    rng = np.random.default_rng(seed)
    sides = rng.integers(min_crop, max_crop + 1, num_samples)
    crops = torch.empty(num_samples, channels, size, size)
    for i, side in enumerate(sides):
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        patch = gray[:, top: top + side, left: left + side].unsqueeze(0)
        crops[i] = F.interpolate(patch, size=(size, size), mode="area")[0]
    if stretch:
        lo = crops.amin(dim=(1, 2, 3), keepdim=True)
        hi = crops.amax(dim=(1, 2, 3), keepdim=True)
        crops = (crops - lo) / (hi - lo).clamp_min(1e-6)
    return crops.clamp_(0, 1)
