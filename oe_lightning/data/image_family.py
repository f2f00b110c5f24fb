"""The image data family: what the DataModule and the run outputs ask of image data, beside the transforms the
config gives. Images need no fitting and stack with the default collate; training batches may be augmented (and
kept resident) on the device (:class:`~oe_lightning.data.device_batches.DeviceBatches`); an OOD folder is an
image folder at the data's size; a gallery is a picture of an OOD set's extremes.

A data family answers: ``name``, ``fitted``/``fit``, ``encoder(role)`` (None: the config's transforms),
``collate(role)`` (None: the default), ``join(x_in, x_oe)``, ``folder(name, path)``, ``gallery(...)``,
``to_dict()`` and ``check_fits(model)``. What text lacks (ODIN's input gradients, MixOE's pixels,
``channels_last``) is refused from the config before any work (:func:`oe_lightning.validate.text_problems`).
:class:`~oe_lightning.data.text.family.TextFamily` is the other one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from oe_lightning.data.batch_augment import BatchAugment
from oe_lightning.data.device_batches import DeviceBatches


class ImageFamily:
    """Image data: per-batch device augmentation and resident images (optional), image folders, image galleries.

    Args:
        batch_augment, resident, resident_max_gb: the DataModule's ``data.*`` keys of the device path.
        image_shape: ``[channels, height, width]`` (an OOD folder is resized to its side).
        mean, std: the normalisation (a gallery shows the images as they were).
        strict: an unreadable file of an OOD folder is an error (else skipped).
    """

    name = "image"
    fitted = True

    def __init__(self, batch_augment: Mapping[str, BatchAugment | None] | None = None, resident: bool = False,
                 resident_max_gb: float = 8.0, image_shape: Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, strict: bool = False):
        self.device_batches: DeviceBatches | None = None
        if resident or any(v is not None for v in (batch_augment or {}).values()):
            self.device_batches = DeviceBatches(batch_augment, resident, resident_max_gb)
        self.image_shape, self.mean, self.std, self.strict = image_shape, mean, std, bool(strict)

    def fit(self, dataset: Any, indices: Sequence[int] | None = None) -> None:
        """Nothing to learn from the training images."""

    def check_fits(self, model: Any) -> None:
        """Nothing an image model could lack."""

    def encoder(self, role: str) -> None:
        """None: the config's transforms read the images."""

    def collate(self, role: str) -> None:
        """None: images stack with the default collate."""

    @staticmethod
    def join(x_in: Tensor, x_oe: Tensor) -> Tensor:
        return torch.cat([x_in, x_oe])

    def folder(self, name: str, path: str) -> Any:
        """An OOD set given as a folder: its images (class sub-folders or none), resized and centre-cropped to the
        data's image size."""
        from oe_lightning.data.vision import image_folder

        size = (self.image_shape or [None])[-1]
        return functools.partial(image_folder, root=str(path), name=name, resize=int(size) if size else None,
                                 strict=self.strict)

    def gallery(self, name: str, dataset: Any, scores: Tensor, threshold: float | None, folder: Path) -> Path:
        """``gallery_<name>.png``: the set's most and least OOD-looking images with their scores."""
        from oe_lightning import plots

        top, bottom = plots.extremes(scores)
        items = [dataset[i] for i in top + bottom]
        images = torch.stack([item[0] if isinstance(item, tuple | list) else item for item in items]).float()
        channels = images.shape[1]
        images = plots.unnormalize(images, self.mean or [0.0] * channels, self.std or [1.0] * channels)
        return plots.gallery_figure(name, images, [float(scores[i]) for i in top + bottom], threshold,
                                    folder / f"gallery_{plots.safe_name(name)}.png")

    def to_dict(self) -> None:
        """None: image checkpoints store their preprocessing from the data config (building)."""
