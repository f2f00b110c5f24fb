"""The DataModule that zips D_in with D_out^OE for training and lines up the OOD test suite.

It composes named helpers: the dataset wrappers (:mod:`oe_lightning.data.wrappers`), the validation
split and leak checks (:mod:`oe_lightning.data.splits`) and, for image data augmented per batch on the
training device, :class:`~oe_lightning.data.device_batches.DeviceBatches`; it builds the sets and loaders.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from oe_lightning.data import splits
from oe_lightning.data.batch_augment import BatchAugment
from oe_lightning.data.device_batches import DeviceBatches
from oe_lightning.data.image_family import ImageFamily
from oe_lightning.data.samplers import ExactShardSampler, KeyedSampler, OESampler, SeededSamples, world
from oe_lightning.data.splits import VAL_SPLITS
from oe_lightning.data.wrappers import (
    DatasetFactory,
    FixedDataset,
    ImagesOnly,
    Transformed,
    as_factory,
    base_dataset,
    class_count,
)
from oe_lightning.errors import OEUserError

__all__ = ["VAL_SPLITS", "DatasetFactory", "FixedDataset", "ImagesOnly", "OEDataModule", "Transformed",
           "as_factory", "class_count", "worker_context"]

def worker_context(num_workers: int) -> str | None:
    """The start method for DataLoader workers: the platform's own inside a joblib (loky) sweep
    worker, whose default "loky" method cannot start them; else None (torch's default)."""
    if num_workers > 0 and mp.get_start_method(allow_none=True) == "loky":
        return mp.get_all_start_methods()[0]
    return None


class OEDataModule(pl.LightningDataModule):
    """In-distribution data, the auxiliary outlier set D_out^OE and the OOD test sets.

    Each dataset argument is a dataset, or a factory called as ``factory(transform=...)`` (in
    configs, a ``_partial_: true`` node), so transforms are chosen here: ``train_transform`` for ID
    training, ``oe_transform`` for OE images (default: ``train_transform``), ``test_transform`` for
    validation, ID test and every OOD set. A
    dataset object is used as it is (with these transforms on top, if given). ID datasets yield
    ``(image, label)``; OE and OOD datasets may yield images, ``(image,)`` or ``(image, label)``.

    Training batches are ``{"in": (x, y), "oe": x_oe}``. An epoch is one pass over the ID
    loader; every step draws ``oe_batch_size`` OE images, afresh each epoch, by an
    :class:`~oe_lightning.data.samplers.OESampler`: ``oe_sampling="shuffle"`` cycles through a
    small OE set, ``"offset"`` reads on from a random start as the paper does for 80M Tiny
    Images, ``"sequential"`` reads the same images in the same order every epoch (the paper's
    Tiny ImageNet OE); by default the OE dataset's ``preferred_sampling``, else shuffle. With ``oe=None``
    (the λ = 0 baseline) no OE data is built and batches are ``{"in": (x, y)}``.
    Validation loaders are the held-out ID split and a validation OOD set, so λ can be tuned on
    ``val/fpr95`` without looking at the OOD test sets: ``val_ood`` if given (a set of its own,
    e.g. Tiny ImageNet for CIFAR, as OpenOOD), else, when OE is used, ``len(val split)`` OE images
    held out from training (at most a tenth of the OE set).
    The held-out ID split (``val_size`` images, else a ``val_fraction`` of the training set) is
    drawn at random with ``split_seed`` (``val_split="random"``), or is the training set's tail in
    order (``"tail"``, the paper's ``validation_split``, hendrycks/outlier-exposure
    utils/validation_dataset.py:20-34), or numpy's shuffle with seed ``split_seed`` (``"numpy_shuffle"``,
    its ``validation_split_folder``, :51-73, used for Tiny ImageNet).
    Test loaders (:attr:`test_names`) are the ID training images through the test transform
    (``"fit"``, with ``fit_loader=True``: feature detectors are fitted on them), the held-out ID
    split (``"val"``, if any: the softmax temperature for calibration is tuned on it) and the
    validation OOD set (``"val_ood"``, with it), the ID test set (``"in"``), then one loader per
    OOD set in ``ood`` order.

    Under DDP the DataModule shards every loader itself: the ID training set by a
    ``DistributedSampler``, OE by :class:`OESampler` (``oe_batch_size`` per rank and step, epoch
    length still set by the ID shard), validation and test sets by :class:`ExactShardSampler`
    (each sample scored exactly once across ranks; metrics gather the scores).
    """

    def __init__(self, train: Dataset | DatasetFactory, test: Dataset | DatasetFactory, num_classes: int,
                 ood: Mapping[str, Dataset | DatasetFactory] | None = None,
                 oe: Dataset | DatasetFactory | None = None,
                 train_transform: Callable | None = None, test_transform: Callable | None = None,
                 batch_size: int = 128, oe_batch_size: int | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False, drop_last: bool = False, oe_sampling: str | None = None,
                 val_ood: Dataset | DatasetFactory | None = None, oe_transform: Callable | None = None,
                 batch_augment: Mapping[str, BatchAugment | None] | None = None,
                 val_split: str = "random", val_size: int | None = None, fit_loader: bool = False,
                 val: Dataset | DatasetFactory | None = None, resident: bool = False,
                 resident_max_gb: float = 8.0, family: Any | None = None, **info: Any):
        super().__init__()
        self.info = info  # descriptive keys from the config (name, image_shape, ...)
        # what the data's kind decides (ImageFamily: device augmentation, image folders; TextFamily: vocabulary,
        # padding); the image one, from the data.* keys, unless the config names another
        self.family = family if family is not None else ImageFamily(
            batch_augment, resident, resident_max_gb, info.get("image_shape"), info.get("mean"), info.get("std"),
            bool(info.get("strict", False)))
        if batch_size < 1:
            raise OEUserError(f"data.batch_size must be a positive integer, got {batch_size}.")
        splits.check_split_settings(val_fraction, val_split)
        self.factories = {"train": as_factory(train, "train"), "test": as_factory(test, "test")}
        self.ood_factories = {name: self._ood_folder(name, d) if isinstance(d, str | os.PathLike)
                              else as_factory(d, f"ood[{name!r}]") for name, d in (ood or {}).items()}
        taken = sorted(set(self.ood_factories) & {"in", "fit", "val", "val_ood"})
        if taken:
            raise OEUserError(f"An OOD test set is named {taken[0]!r}, a name the evaluation reserves ('in': the ID "
                              f"test set, 'fit': ID training images, 'val': the held-out split); rename it.")
        self.oe_factory = as_factory(oe, "oe")
        self.val_ood_factory = as_factory(val_ood, "val_ood")
        self.val_factory = as_factory(val, "val")  # its own ID validation images (data.val_dir); None: held out
        self.num_classes = num_classes
        self.train_transform, self.test_transform = train_transform, test_transform
        self.oe_transform = oe_transform if oe_transform is not None else train_transform
        self.ood_transform: Callable | None = None  # OOD and validation OOD sets; None: test_transform
        self._family_set = False  # the family's transforms (if any) are in place
        # image data augmented per batch on the training device (and its resident images); None: none
        self.device_batches: DeviceBatches | None = getattr(self.family, "device_batches", None)
        self.batch_size = batch_size
        self.oe_batch_size = oe_batch_size or 2 * batch_size
        self.val_fraction, self.split_seed, self.val_split = val_fraction, split_seed, val_split
        self.val_size = val_size
        self.fit_loader = fit_loader  # test: also the training images through the test transform
        self.num_workers, self.pin_memory, self.drop_last = num_workers, pin_memory, drop_last
        self.oe_sampling = oe_sampling
        self.train_set = self.val_set = self.test_set = self.oe_set = self.val_ood_set = self.fit_set = None
        self.oe_sampler: OESampler | None = None  # the training OE loader's, once built (outlier mining narrows it)
        self.ood_sets: dict[str, Dataset] = {}
        self.train_samples_per_rank: dict[str, int] = {}  # what each process draws per epoch

    @property
    def batch_augment(self) -> dict[str, BatchAugment]:
        """The roles augmented per batch on the device and their :class:`BatchAugment` (``{}``: none)."""
        return self.device_batches.augment if self.device_batches is not None else {}

    @property
    def resident_sets(self) -> dict[str, Any]:
        """The roles whose training images are resident on the device (``{}``: none)."""
        return self.device_batches.resident_sets if self.device_batches is not None else {}

    def _augmented(self, role: str) -> bool:
        """Whether ``role``'s training images are augmented per batch (and so load through the test transform)."""
        return self.device_batches is not None and self.device_batches.augments(role)

    @property
    def ood_names(self) -> list[str]:
        """Names of the OOD test sets, in ``ood`` order."""
        return list(self.ood_factories)

    def _ood_folder(self, name: str, path: str | os.PathLike) -> DatasetFactory:
        """An OOD test set given as a path (``ood=folders +ood.people=~/photos``), read as the data family reads
        one: images (resized to the data's size), or lines of ``.txt`` files."""
        return self.family.folder(name, str(path))

    def prepare_data(self) -> None:
        """Download, once per node, every dataset configured with ``download=True``."""
        factories = [*self.factories.values(), *self.ood_factories.values(), self.oe_factory]
        for make in factories:
            if make is not None and getattr(make, "keywords", {}).get("download"):
                make(transform=None)

    def setup(self, stage: str | None = None) -> None:
        """Open the datasets ``stage`` needs, each once: for ``fit``/``validate`` the training and ID validation
        splits, OE and the validation OOD set; for ``test``/``predict`` the sets of :attr:`test_names`."""
        self._fit_family()
        if self.train_set is None and stage in (None, "fit", "validate"):
            in_transform = self.test_transform if self._augmented("in") else self.train_transform
            train_aug = self.factories["train"](transform=in_transform)
            keep, held = self._split(len(train_aug))
            self._check_num_classes(train_aug, "training", exact=True)
            self.train_set = Subset(train_aug, keep)
            if held or self.val_factory is not None:
                self._setup_val(held)
            n_val = len(self.val_set) if self.val_set is not None else 0
            held_out = n_val if self.val_ood_factory is None else 0
            if self.oe_factory is not None:
                self._setup_oe(held_out)
            if n_val and self.val_ood_factory is not None:
                splits.check_val_ood_not_a_test_set(self.val_ood_factory, self.ood_factories)
                self.val_ood_set = self.val_ood_factory(transform=self._outlier_transform)
            if self.device_batches is not None:
                self.device_batches.keep_resident({"in": (self.train_set, self.factories["train"]),
                                                   "oe": (self.oe_set, self.oe_factory)}, self.test_transform)
        if stage in (None, "test", "predict") and self.fit_loader and self.fit_set is None:
            train_plain = self.factories["train"](transform=self.test_transform)
            self.fit_set = Subset(train_plain, self._split(len(train_plain))[0])
        if self.test_set is None and stage in (None, "test", "predict"):
            if self.val_set is None and (self.val_factory is not None or self.val_fraction > 0 or self.val_size):
                if self.val_factory is not None:
                    self._setup_val([])
                else:
                    train_plain = self.factories["train"](transform=self.test_transform)
                    self._setup_val(self._split(len(train_plain))[1], train_plain)
                if self.val_ood_factory is not None:  # evaluation only: detectors' validation metrics
                    splits.check_val_ood_not_a_test_set(self.val_ood_factory, self.ood_factories)
                    self.val_ood_set = self.val_ood_factory(transform=self._outlier_transform)
                elif self.oe_factory is not None:  # the OE images training held out, as in training
                    self._setup_oe(len(self.val_set))
            self.test_set = self.factories["test"](transform=self.test_transform)
            self._check_num_classes(self.test_set, "ID test", exact=False)
            self.ood_sets = {name: make(transform=self._outlier_transform)
                             for name, make in self.ood_factories.items()}
            splits.check_oe_not_in_tests(self.ood_sets, self.oe_set, self.val_ood_set)

    def _fit_family(self) -> None:
        """A data family that learns from the ID training inputs (text: the vocabulary, from the training part
        without the held-out split) sets every transform before any set is opened."""
        if self._family_set:
            return
        if not self.family.fitted:  # else nothing to learn (images) or a checkpoint's vocabulary (oe-eval)
            raw = self.factories["train"](transform=None)
            self.family.fit(raw, self._split(len(raw))[0])
        encode_in = self.family.encoder("in")
        if encode_in is not None:  # None (images): the config's transforms
            self.train_transform = self.test_transform = encode_in
            self.oe_transform = self.ood_transform = self.family.encoder("outlier")
        self._family_set = True

    @property
    def _outlier_transform(self) -> Callable | None:
        """The transform of OOD sets, the validation OOD set and held-out OE samples."""
        return self.ood_transform if self.ood_transform is not None else self.test_transform

    def join_inputs(self, x_in: Any, x_oe: Any) -> Any:
        """A training step's ID and OE inputs as one batch (text: both padded to one length first)."""
        return self.family.join(x_in, x_oe)

    def _check_num_classes(self, dataset: Dataset, role: str, exact: bool) -> None:
        """``num_classes`` (the classifier's outputs) against the classes the data holds, as soon as the data
        is open: the training set must hold exactly that many, a test set no label beyond them."""
        found = class_count(dataset)
        if found is None or found[0] == self.num_classes or (not exact and found[0] < self.num_classes):
            return
        count, how = found
        raise OEUserError(f"data.num_classes={self.num_classes} but the {role} data has {count} classes ({how}); "
                          f"the classifier needs one output per class. Set data.num_classes={count}, or give data "
                          f"with {self.num_classes} classes.")

    def _split(self, n: int) -> tuple[list[int], list[int]]:
        """Indices of the training part and of the held-out ID validation part (none: the data has
        validation images of its own)."""
        if self.val_factory is not None:
            return list(range(n)), []
        return splits.holdout_indices(n, self.val_fraction, self.val_size, self.val_split, self.split_seed)

    def _setup_val(self, held: list[int], train_plain: Dataset | None = None) -> None:
        """The ID validation split, seen through the test transform: the data's own validation images
        (``val``), else the held-out training images ``held``."""
        if self.val_factory is not None:
            self.val_set = self.val_factory(transform=self.test_transform)
            return
        if train_plain is None:
            train_plain = self.factories["train"](transform=self.test_transform)
        self.val_set = Subset(train_plain, held)

    def _setup_oe(self, n_val: int) -> None:
        oe_transform = self.test_transform if self._augmented("oe") else self.oe_transform
        oe_aug = ImagesOnly(self.oe_factory(transform=oe_transform))
        if len(oe_aug) == 0:
            raise OEUserError("The OE dataset is empty; check the oe= config and its root.")
        n_val_oe = splits.oe_holdout_size(len(oe_aug), n_val)
        n_train_oe = len(oe_aug) - n_val_oe
        # the first n_train_oe images train (a range, never a list of 80M indices); the rest validate
        self.oe_set = Subset(oe_aug, range(n_train_oe)) if n_val_oe else oe_aug
        if n_val_oe:
            oe_plain = self.oe_factory(transform=self._outlier_transform)
            self.val_ood_set = Subset(oe_plain, range(n_train_oe, len(oe_plain)))

    def _loader(self, dataset: Dataset, role: str = "in", **kwargs: Any) -> DataLoader:
        """A loader of ``dataset``; ``role`` (``in``: ID samples, ``outlier``: OE and OOD samples) chooses a data
        family's collate function."""
        kwargs.setdefault("batch_size", self.batch_size)
        collate = self.family.collate(role)
        if collate is not None:
            kwargs["collate_fn"] = collate
        return DataLoader(dataset, num_workers=self.num_workers, pin_memory=self.pin_memory and self._on_cuda(),
                          persistent_workers=self.num_workers > 0,
                          multiprocessing_context=worker_context(self.num_workers), **kwargs)

    def _on_cuda(self) -> bool:
        """Whether batches go to a CUDA device: pinned host memory helps only there (on a CPU run torch
        warns that pin_memory is set without an accelerator)."""
        trainer = self.trainer
        if trainer is None:
            return torch.cuda.is_available()
        return trainer.strategy.root_device.type == "cuda"

    def _eval_loader(self, dataset: Dataset, role: str = "in") -> DataLoader:
        """In order; under DDP each rank gets its exact, unpadded shard."""
        replicas, _ = world()
        sampler = ExactShardSampler(len(dataset)) if replicas > 1 else None
        return self._loader(dataset, role, sampler=sampler)

    def train_dataloader(self) -> CombinedLoader:
        """ID and OE loaders whose order and augmentations are functions of (seed, epoch) only:
        a resumed run draws exactly what the uninterrupted one would (see :class:`SeededSamples`)."""
        replicas, rank = world()
        seed = torch.initial_seed()  # the seed_everything seed, the same on every rank
        sampler = DistributedSampler(self.train_set, num_replicas=replicas, rank=rank, shuffle=True, seed=seed,
                                     drop_last=self.drop_last)
        in_loader = self._loader(self._training_samples("in", self.train_set, seed), sampler=KeyedSampler(sampler),
                                 drop_last=self.drop_last)
        loaders = {"in": in_loader}
        if self.oe_set is not None:
            steps = len(in_loader)
            mode = self.oe_sampling or getattr(base_dataset(self.oe_set), "preferred_sampling", "shuffle")
            oe_sampler = self.oe_sampler = OESampler(len(self.oe_set), steps * self.oe_batch_size, mode, seed=seed)
            loaders["oe"] = self._loader(self._training_samples("oe", self.oe_set, seed + 1), "outlier",
                                         sampler=KeyedSampler(oe_sampler), batch_size=self.oe_batch_size)
        self._resume_loaders(loaders.values())
        self.train_samples_per_rank = {name: len(dl.sampler) for name, dl in loaders.items()}
        # min_size: the epoch ends with the ID loader (both have `steps` batches by construction)
        return CombinedLoader(loaders, mode="min_size")

    def _training_samples(self, role: str, dataset: Dataset, seed: int) -> Dataset:
        """A training loader's dataset: the items under :class:`SeededSamples`, as the device path
        wants them (with their seeds, or only ``(index, seed)`` for resident images)."""
        if self.device_batches is not None:
            return self.device_batches.training_samples(role, dataset, seed)
        return SeededSamples(dataset, seed, False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches on the device go through :attr:`device_batches` (resident images gathered
        by index, then random crop/flip per image, all at once)."""
        trainer = self.trainer
        if self.device_batches is None or trainer is None or not trainer.training:
            return batch
        return self.device_batches.on_device(batch)

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the epoch and how many of its batches were trained, so a run
        resumed from a mid-epoch checkpoint continues with the first untrained batch."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        from oe_lightning.compat import batches_processed_this_epoch

        done = batches_processed_this_epoch(trainer)
        return {"train_position": {"epoch": int(trainer.current_epoch), "batches_done": int(done),
                                   "epoch_batches": int(trainer.num_training_batches)}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remember the saved position (checked: plain non-negative ints) for :meth:`train_dataloader`;
        Lightning restores it before the training loaders are built."""
        position = state_dict.get("train_position") if isinstance(state_dict, Mapping) else None
        try:
            epoch, done, batches = (int(position[k]) for k in ("epoch", "batches_done", "epoch_batches"))
        except (TypeError, KeyError, ValueError):
            return  # a checkpoint from before positions were saved: Lightning resumes as before
        if min(epoch, done, batches) >= 0:
            self._resume_at = (epoch + 1, 0) if done >= batches else (epoch, done)

    def _resume_loaders(self, loaders: Any) -> None:
        """Start the training loaders at the restored position (once): the rest of that epoch."""
        position, self._resume_at = getattr(self, "_resume_at", None), None
        if position is not None:
            epoch, done = position
            for loader in loaders:
                loader.sampler.resume_at(epoch, done * loader.batch_size)

    def val_dataloader(self) -> list[DataLoader]:
        """``[ID validation split, held-out OE]``; empty without a validation split."""
        if self.val_set is None:
            return []
        ood = [self._eval_loader(self.val_ood_set, "outlier")] if self.val_ood_set is not None else []
        return [self._eval_loader(self.val_set), *ood]

    def _test_sets(self) -> dict[str, Dataset]:
        roles = {"fit": self.fit_set if self.fit_loader else None, "val": self.val_set,
                 "val_ood": self.val_ood_set if self.val_set is not None else None, "in": self.test_set}
        return {**{k: d for k, d in roles.items() if d is not None}, **self.ood_sets}

    @property
    def test_names(self) -> list[str]:
        """Names of :meth:`test_dataloader`'s loaders: ``"fit"`` (the training images through the test
        transform, with ``fit_loader``), ``"val"`` (if held out), ``"in"``, then the OOD sets."""
        return list(self._test_sets())

    def test_dataloader(self) -> list[DataLoader]:
        """One in-order loader per name of :attr:`test_names` (under DDP each rank gets its exact shard)."""
        return [self._eval_loader(d, "outlier" if name == "val_ood" or name in self.ood_sets else "in")
                for name, d in self._test_sets().items()]

    def test_set_sizes(self) -> dict[str, int]:
        """Number of samples of each test set, by its :attr:`test_names` name."""
        return {name: len(d) for name, d in self._test_sets().items()}

