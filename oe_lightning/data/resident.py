"""Training images kept as one tensor on the training device, gathered by index each step.

For datasets that fit in (GPU) memory (the embedded digits and crops, CIFAR, SVHN, the 300K OE
array), with ``data.resident=true`` the training loaders carry only ``(index, seed)`` pairs
(:class:`~oe_lightning.data.samplers.SeededSamples` over ``range(N)``); the DataModule gathers the
images (and labels) on the device and crops/flips them there per batch
(:class:`~oe_lightning.data.batch_augment.BatchAugment`). The tensor is what the loader would have
served, item for item, so a resident run trains on the same batches as a loaded one, bit for bit.

Images that load as 8-bit (CIFAR, SVHN, the 300K array, image files) are kept as uint8, a quarter
of float32's memory (the 300K array: 0.92 GiB, SVHN train+extra: 1.86 GiB), and the test transform
(to float, normalise) is applied to each gathered batch on the device; this is used only where that
batched transform gives the loader's items exactly (checked on the first images), else the
transformed float images are kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from oe_lightning.errors import OEUserError


class ResidentImages:
    """A dataset's items stacked once: images ``(N, C, H, W)`` and, for labelled data, labels ``(N,)``;
    moved to a device on first use there. ``finish`` (e.g. the test transform on uint8 images) is
    applied to each gathered batch."""

    def __init__(self, images: Tensor, labels: Tensor | None = None, finish: Callable | None = None):
        self.images, self.labels, self.finish = images, labels, finish
        self._on: dict[torch.device, tuple[Tensor, Tensor | None, Callable | None]] = {}

    @classmethod
    def from_dataset(cls, dataset: Dataset, role: str, max_gb: float, raw: Dataset | None = None,
                     transform: Callable | None = None, num_workers: int = 0) -> ResidentImages:
        """Read every item of ``dataset`` (the images through the test transform) once, in batches;
        or, where ``raw`` (the same items as 8-bit tensors) through ``transform`` per batch gives
        ``dataset``'s items exactly, keep ``raw``'s uint8 images. Refused, before reading, if the
        images would take more than ``max_gb`` GiB."""
        image = _image(dataset[0])
        if not torch.is_tensor(image):
            raise OEUserError(f"data.resident=true needs the {role} images as tensors (a test transform ending in "
                              f"a tensor), got {type(image).__name__}.")
        compact = raw is not None and transform is not None and _batched_equals(dataset, raw, transform)
        source, stored = (raw, _image(raw[0])) if compact else (dataset, image)
        need = len(dataset) * stored.numel() * stored.element_size() / 2**30
        if need > max_gb:
            raise OEUserError(f"data.resident=true would hold the {len(dataset):,} {role} training images "
                              f"({tuple(stored.shape)}, {stored.dtype}) in {need:.2f} GiB, over "
                              f"data.resident_max_gb={max_gb}. Raise that limit if the device has the memory, "
                              f"or set data.resident=false to load batches from the dataset.")
        images, labels = [], []
        for batch in DataLoader(source, batch_size=1024, num_workers=num_workers, shuffle=False):
            if isinstance(batch, tuple | list):
                images.append(_plain(batch[0]))
                if len(batch) > 1:
                    labels.append(batch[1])
            else:
                images.append(_plain(batch))
        return cls(torch.cat(images), torch.cat(labels).long() if labels else None, transform if compact else None)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        """Bytes held per device (images and labels)."""
        labels = 0 if self.labels is None else self.labels.numel() * self.labels.element_size()
        return self.images.numel() * self.images.element_size() + labels

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """The images (and labels) at ``index``, on ``index``'s device, through ``finish``."""
        device = index.device
        if device not in self._on:
            self._on[device] = (self.images.to(device), None if self.labels is None else self.labels.to(device),
                                None if self.finish is None else _constants_on(self.finish, device))
        images, labels, finish = self._on[device]
        batch = images[index]
        if finish is not None:
            batch = _plain(finish(batch))
        return batch, None if labels is None else labels[index]


def _constants_on(transform: Callable, device: torch.device) -> Callable:
    """A copy of ``transform`` whose ``Normalize`` steps hold mean and std as float32 tensors on
    ``device``: given lists, torchvision copies them from the host on every call, and such a copy
    waits for the device. The same values, so the same results bit for bit."""
    transform = copy.deepcopy(transform)
    steps = [transform]
    while steps:
        step = steps.pop()
        if isinstance(step, v2.Compose):
            steps.extend(step.transforms)
        elif isinstance(step, v2.Normalize):
            step.mean = torch.tensor(step.mean, dtype=torch.float32, device=device)
            step.std = torch.tensor(step.std, dtype=torch.float32, device=device)
    return transform


def _image(item: Any) -> Any:
    return item[0] if isinstance(item, tuple | list) else item


def _plain(images: Tensor) -> Tensor:
    """A plain tensor (torchvision's ``Image`` subclass unwrapped)."""
    return images.as_subclass(Tensor) if type(images) is not Tensor else images


def _batched_equals(dataset: Dataset, raw: Dataset, transform: Callable, check: int = 2) -> bool:
    """Whether ``raw``'s first images are uint8 of one shape and ``transform`` on them as a batch
    gives ``dataset``'s first images bit for bit."""
    n = min(check, len(dataset))
    raws = [_plain(_image(raw[i])) for i in range(n)]
    if not all(torch.is_tensor(r) and r.dtype == torch.uint8 and r.shape == raws[0].shape for r in raws):
        return False
    try:
        batch = _plain(transform(torch.stack(raws)))
    except (TypeError, ValueError, RuntimeError):  # a transform of single images only
        return False
    expected = torch.stack([_plain(_image(dataset[i])) for i in range(n)])
    return batch.shape == expected.shape and batch.dtype == expected.dtype and torch.equal(batch, expected)
