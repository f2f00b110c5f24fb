"""Training images kept as one tensor on the training device, gathered by index each step.

For datasets that fit in (GPU) memory (the embedded digits and crops, CIFAR, SVHN, the 300K OE
array), with ``data.resident=true`` the training loaders carry only ``(index, seed)`` pairs
(:class:`~oe_lightning.data.samplers.SeededSamples` over ``range(N)``); the DataModule gathers the
images (and labels) on the device and crops/flips them there per batch
(:class:`~oe_lightning.data.batch_augment.BatchAugment`). The tensor is what the loader would have
served, item for item (the role's images through the test transform), so a resident run trains on
the same batches as a loaded one, bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from oe_lightning.errors import OEUserError


class ResidentImages:
    """A dataset's items stacked once: images ``(N, C, H, W)`` and, for labelled data, labels ``(N,)``;
    moved to a device on first use there."""

    def __init__(self, images: Tensor, labels: Tensor | None = None):
        self.images, self.labels = images, labels
        self._on: dict[torch.device, tuple[Tensor, Tensor | None]] = {}

    @classmethod
    def from_dataset(cls, dataset: Dataset, role: str, max_gb: float, num_workers: int = 0) -> ResidentImages:
        """Read every item of ``dataset`` once (in batches); refused, before reading, if the images
        would take more than ``max_gb`` GiB."""
        first = dataset[0]
        image = first[0] if isinstance(first, tuple | list) else first
        if not torch.is_tensor(image):
            raise OEUserError(f"data.resident=true needs the {role} images as tensors (a test transform ending in "
                              f"a tensor), got {type(image).__name__}.")
        need = len(dataset) * image.numel() * image.element_size() / 2**30
        if need > max_gb:
            raise OEUserError(f"data.resident=true would hold the {len(dataset):,} {role} training images "
                              f"({tuple(image.shape)}, {image.dtype}) in {need:.2f} GiB, over "
                              f"data.resident_max_gb={max_gb}. Raise that limit if the device has the memory, "
                              f"or set data.resident=false to load batches from the dataset.")
        images, labels = [], []
        for batch in DataLoader(dataset, batch_size=1024, num_workers=num_workers, shuffle=False):
            if isinstance(batch, tuple | list):
                images.append(batch[0])
                if len(batch) > 1:
                    labels.append(batch[1])
            else:
                images.append(batch)
        return cls(torch.cat(images), torch.cat(labels).long() if labels else None)

    def __len__(self) -> int:
        return len(self.images)

    def gather(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """The images (and labels) at ``index``, on ``index``'s device."""
        device = index.device
        if device not in self._on:
            self._on[device] = (self.images.to(device), None if self.labels is None else self.labels.to(device))
        images, labels = self._on[device]
        return images[index], None if labels is None else labels[index]
