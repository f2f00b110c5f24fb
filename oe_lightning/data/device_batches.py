"""The image training batches' device path: per-batch augmentation and resident images.

:class:`DeviceBatches` holds the roles (``"in"``, ``"oe"``) whose training images are cropped and
flipped per batch on the training device (:class:`~oe_lightning.data.batch_augment.BatchAugment`)
and, with ``resident``, those roles' images kept as one tensor there
(:class:`~oe_lightning.data.resident.ResidentImages`). The DataModule asks it which transform a role
loads through, what its training loaders carry, and hands it each training batch once on the device
(``on_after_batch_transfer``). Image data only: a data family without it passes no ``batch_augment``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from oe_lightning.data.batch_augment import BatchAugment
from oe_lightning.data.samplers import SeededSamples
from oe_lightning.data.wrappers import DatasetFactory, ImagesOnly, base_dataset
from oe_lightning.errors import OEUserError

log = logging.getLogger(__name__)

ROLES = ("in", "oe")


class DeviceBatches:
    """Per-batch augmentation (``augment``: role -> :class:`BatchAugment`) and, with ``resident``,
    resident images (``resident_sets``: role -> :class:`ResidentImages`, filled by :meth:`keep_resident`)."""

    def __init__(self, batch_augment: Mapping[str, BatchAugment | None] | None = None, resident: bool = False,
                 resident_max_gb: float = 8.0):
        # random crop/flip per batch on the training device ("in", "oe"); that role's images then
        # load through the (deterministic) test transform
        self.augment = {k: v for k, v in (batch_augment or {}).items() if v is not None}
        unknown = set(self.augment) - set(ROLES)
        if unknown:
            raise OEUserError(f"data.batch_augment has keys {sorted(unknown)}; it takes 'in' and 'oe' "
                              f"(the ID and the OE training batches).")
        # the batch-augmented roles' images as one tensor on the training device (data/resident.py)
        if resident and "in" not in self.augment:
            raise OEUserError("data.resident=true (speed=resident or speed=gpu) gathers the training images on the "
                              "device and crops them there, so it needs data.batch_augment.in (and .oe for the OE "
                              "images); this data config has none (its data.device_augment is null when its "
                              "training transform has no per-batch version). Leave speed= off or set "
                              "data.resident=false, or add a device_augment block (see cifar10.yaml).")
        self.resident, self.resident_max_gb = bool(resident), float(resident_max_gb)
        self.resident_sets: dict[str, Any] = {}

    def augments(self, role: str) -> bool:
        """Whether ``role``'s training images are augmented per batch (so load through the test transform)."""
        return role in self.augment

    def keep_resident(self, sources: Mapping[str, tuple[Dataset | None, DatasetFactory | None]],
                      test_transform: Callable | None) -> None:
        """With ``resident``: read the training sets of ``sources`` (role -> (set, its factory)) into
        :attr:`resident_sets`, "in" always, "oe" where it is augmented per batch."""
        if not self.resident:
            return
        from oe_lightning.data.resident import ResidentImages

        roles = {role: source for role, source in sources.items()
                 if source[0] is not None and (role == "in" or role in self.augment)}
        self.resident_sets = {role: ResidentImages.from_dataset(data, role, self.resident_max_gb,
                                                                raw_view(role, data, factory), test_transform)
                              for role, (data, factory) in roles.items()}
        for role, images in self.resident_sets.items():
            log.info("resident %s images: %s %s, %.2f GiB", role, tuple(images.images.shape),
                     images.images.dtype, images.nbytes / 2**30)

    def training_samples(self, role: str, dataset: Dataset, seed: int) -> Dataset:
        """A training loader's dataset: the items, with their seeds where the role is augmented per
        batch; for a resident role only ``(index, seed)`` (the items of ``range``)."""
        items = range(len(dataset)) if role in self.resident_sets else dataset
        return SeededSamples(items, seed, role in self.augment)

    def on_device(self, batch: Any) -> Any:
        """A training batch on the device: resident images gathered by index, then random crop/flip
        per image, all at once."""
        if not self.augment or not isinstance(batch, dict):
            return batch
        batch = dict(batch)
        for role, augment in self.augment.items():
            if role not in batch:
                continue
            *parts, seeds = batch[role]  # "in": (x, y, seeds), "oe": (x, seeds); resident: (index, seeds)
            if role in self.resident_sets:
                x, y = self.resident_sets[role].gather(parts[0])
                parts = [x, y] if role == "in" else [x]
            x = augment(parts[0], seeds)
            batch[role] = (x, *parts[1:]) if role == "in" else x
        return batch


def raw_view(role: str, dataset: Dataset, factory: DatasetFactory) -> Dataset | None:
    """The training items of ``role`` (``dataset``, built by ``factory``) as they load, only made tensors
    (uint8 for 8-bit sources): what :class:`ResidentImages` keeps when the test transform can finish them
    per batch. None for images already in memory as floats (the embedded sets): nothing more compact to keep."""
    base = base_dataset(dataset)
    if torch.is_tensor(getattr(base, "images", None)) and base.images.is_floating_point():
        return None
    if role == "in":
        return Subset(factory(transform=v2.ToImage()), dataset.indices)
    raw = ImagesOnly(factory(transform=v2.ToImage()))
    return Subset(raw, dataset.indices) if isinstance(dataset, Subset) else raw
