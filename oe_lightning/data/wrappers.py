"""Dataset wrappers the DataModule builds its sets from: a dataset given where a factory is expected
(:class:`FixedDataset`, :func:`as_factory`), a transform on top (:class:`Transformed`), OE items
reduced to their images (:class:`ImagesOnly`), and what lies under these wrappers
(:func:`base_dataset`, :func:`class_count`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from oe_lightning.data.samplers import get_many
from oe_lightning.errors import OEUserError

DatasetFactory = Callable[..., Dataset]


class ImagesOnly(Dataset):
    """OE batches are images alone: ``(image, label)`` and ``(image,)`` items (``TensorDataset``)
    become the image; items that are already images pass through."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        item = self.dataset[i]
        return item[0] if isinstance(item, tuple | list) else item

    def __getitems__(self, indices: list[int]) -> list[Any]:
        items = get_many(self.dataset, indices)
        return [item[0] if isinstance(item, tuple | list) else item for item in items]


class Transformed(Dataset):
    """A dataset with ``transform`` applied to the image of each item (the first element of a tuple)."""

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        item = self.dataset[i]
        if isinstance(item, tuple | list):
            return (self.transform(item[0]), *item[1:])
        return self.transform(item)


class FixedDataset:
    """A dataset given directly where a factory is expected: ``factory(transform=t)`` returns it
    as it is, or with ``t`` applied on top when the DataModule was given transforms."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __call__(self, transform: Callable | None = None) -> Dataset:
        return self.dataset if transform is None else Transformed(self.dataset, transform)


def as_factory(source: Dataset | DatasetFactory | None, role: str) -> DatasetFactory | None:
    """A dataset factory from a factory (config ``_partial_``) or from a dataset object."""
    if source is None or (callable(source) and not isinstance(source, Dataset)):
        return source
    if isinstance(source, Dataset) or hasattr(source, "__getitem__"):
        return FixedDataset(source)
    raise OEUserError(
        f"OEDataModule's {role} must be a dataset or a callable returning one "
        f"(factory(transform=...)), got {type(source).__name__}."
    )


def base_dataset(dataset: Dataset) -> Dataset:
    """The dataset under ImagesOnly/Subset/Transformed wrappers."""
    while isinstance(dataset, ImagesOnly | Subset | Transformed):
        dataset = dataset.dataset
    return dataset


def class_count(dataset: Dataset) -> tuple[int, str] | None:
    """The classes a labelled dataset holds, and how that was read: its ``classes`` list (image
    folders, torchvision sets), else its largest integer label + 1; None when it says neither."""
    base = base_dataset(dataset)
    classes = getattr(base, "classes", None)
    if isinstance(classes, list | tuple) and classes:
        return len(classes), "class folders" if hasattr(base, "class_to_idx") else "classes"
    for attr in ("labels", "targets"):
        labels = getattr(base, attr, None)
        if labels is None:
            continue
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError):
            continue
        if labels.numel() and not labels.is_floating_point() and not labels.is_complex():
            return int(labels.max()) + 1, f"labels 0..{int(labels.max())}"
    return None
