"""The DataModule that zips D_in with D_out^OE for training and lines up the OOD test suite."""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.transforms import v2

from oe_lightning.data.batch_augment import BatchAugment
from oe_lightning.data.samplers import (
    ExactShardSampler,
    KeyedSampler,
    OESampler,
    SeededSamples,
    get_many,
    world,
)
from oe_lightning.errors import OEUserError

log = logging.getLogger(__name__)

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


def worker_context(num_workers: int) -> str | None:
    """The start method for DataLoader workers: the platform's own inside a joblib (loky) sweep
    worker, whose default "loky" method cannot start them; else None (torch's default)."""
    if num_workers > 0 and mp.get_start_method(allow_none=True) == "loky":
        return mp.get_all_start_methods()[0]
    return None


def _base(dataset: Dataset) -> Dataset:
    """The dataset under ImagesOnly/Subset/Transformed wrappers."""
    while isinstance(dataset, ImagesOnly | Subset | Transformed):
        dataset = dataset.dataset
    return dataset


def _factory_identity(factory: Any) -> tuple[Any, str]:
    """What a dataset factory (a ``functools.partial``) loads, ignoring the seed, size and display
    name keywords."""
    if isinstance(factory, FixedDataset):
        return factory.dataset, ""
    keywords = {k: v for k, v in (getattr(factory, "keywords", None) or {}).items()
                if k not in ("seed", "num_samples", "name", "download")}
    return getattr(factory, "func", factory), repr((getattr(factory, "args", ()), sorted(keywords.items())))


def class_count(dataset: Dataset) -> tuple[int, str] | None:
    """The classes a labelled dataset holds, and how that was read: its ``classes`` list (image
    folders, torchvision sets), else its largest integer label + 1; None when it says neither."""
    base = _base(dataset)
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


def _source(dataset: Dataset) -> str:
    return getattr(dataset, "source", "")


VAL_SPLITS = ("random", "tail", "numpy_shuffle")


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
                 resident_max_gb: float = 8.0, **info: Any):
        super().__init__()
        self.info = info  # descriptive keys from the config (name, image_shape, ...)
        if batch_size < 1:
            raise OEUserError(f"data.batch_size must be a positive integer, got {batch_size}.")
        if not 0.0 <= val_fraction < 1.0:
            raise OEUserError(
                f"data.val_fraction must be in [0, 1), got {val_fraction}; use 0 for no validation."
            )
        if val_split not in VAL_SPLITS:
            raise OEUserError(f"data.val_split must be one of {VAL_SPLITS}, got {val_split!r}: 'random' holds "
                              f"out a seeded random val_fraction of the training set, 'tail' its last "
                              f"val_fraction (the paper's calibration runs).")
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
        # random crop/flip per batch on the training device ("in", "oe"); that role's images then
        # load through the (deterministic) test transform
        self.batch_augment = {k: v for k, v in (batch_augment or {}).items() if v is not None}
        unknown = set(self.batch_augment) - {"in", "oe"}
        if unknown:
            raise OEUserError(f"data.batch_augment has keys {sorted(unknown)}; it takes 'in' and 'oe' "
                              f"(the ID and the OE training batches).")
        # the batch-augmented roles' images as one tensor on the training device (data/resident.py)
        if resident and "in" not in self.batch_augment:
            raise OEUserError("data.resident=true (speed=resident or speed=gpu) gathers the training images on the "
                              "device and crops them there, so it needs data.batch_augment.in (and .oe for the OE "
                              "images); this data config has none (its data.device_augment is null when its "
                              "training transform has no per-batch version). Leave speed= off or set "
                              "data.resident=false, or add a device_augment block (see cifar10.yaml).")
        self.resident, self.resident_max_gb = bool(resident), float(resident_max_gb)
        self.resident_sets: dict[str, Any] = {}
        self.batch_size = batch_size
        self.oe_batch_size = oe_batch_size or 2 * batch_size
        self.val_fraction, self.split_seed, self.val_split = val_fraction, split_seed, val_split
        self.val_size = val_size
        self.fit_loader = fit_loader  # test: also the training images through the test transform
        self.num_workers, self.pin_memory, self.drop_last = num_workers, pin_memory, drop_last
        self.oe_sampling = oe_sampling
        self.train_set = self.val_set = self.test_set = self.oe_set = self.val_ood_set = self.fit_set = None
        self.ood_sets: dict[str, Dataset] = {}
        self.train_samples_per_rank: dict[str, int] = {}  # what each process draws per epoch

    @property
    def ood_names(self) -> list[str]:
        return list(self.ood_factories)

    def _ood_folder(self, name: str, path: str | os.PathLike) -> DatasetFactory:
        """An OOD test set given as a folder path (``ood=folders +ood.people=~/photos``): its images
        (class sub-folders or none), resized and centre-cropped to this data's image size."""
        from oe_lightning.data.vision import image_folder

        size = (self.info.get("image_shape") or [None])[-1]
        return functools.partial(image_folder, root=str(path), name=name, resize=int(size) if size else None,
                                 strict=bool(self.info.get("strict", False)))

    def prepare_data(self) -> None:
        """Download, once per node, every dataset configured with ``download=True``."""
        factories = [*self.factories.values(), *self.ood_factories.values(), self.oe_factory]
        for make in factories:
            if make is not None and getattr(make, "keywords", {}).get("download"):
                make(transform=None)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit", "validate"):
            in_transform = self.test_transform if "in" in self.batch_augment else self.train_transform
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
                self._check_val_ood_not_a_test_set()
                self.val_ood_set = self.val_ood_factory(transform=self.test_transform)
            if self.resident:
                from oe_lightning.data.resident import ResidentImages

                roles = {"in": self.train_set, "oe": self.oe_set if "oe" in self.batch_augment else None}
                self.resident_sets = {role: ResidentImages.from_dataset(data, role, self.resident_max_gb,
                                                                        self._raw_view(role), self.test_transform)
                                      for role, data in roles.items() if data is not None}
                for role, images in self.resident_sets.items():
                    log.info("resident %s images: %s %s, %.2f GiB", role, tuple(images.images.shape),
                             images.images.dtype, images.nbytes / 2**30)
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
                    self._check_val_ood_not_a_test_set()
                    self.val_ood_set = self.val_ood_factory(transform=self.test_transform)
                elif self.oe_factory is not None:  # the OE images training held out, as in training
                    self._setup_oe(len(self.val_set))
            self.test_set = self.factories["test"](transform=self.test_transform)
            self._check_num_classes(self.test_set, "ID test", exact=False)
            self.ood_sets = {name: make(transform=self.test_transform)
                             for name, make in self.ood_factories.items()}
            self._check_oe_not_in_tests()

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

    def _raw_view(self, role: str) -> Dataset | None:
        """The training items of ``role`` as they load, only made tensors (uint8 for 8-bit sources):
        what :class:`ResidentImages` keeps when the test transform can finish them per batch. None
        for images already in memory as floats (the embedded sets): nothing more compact to keep."""
        base = _base(self.train_set if role == "in" else self.oe_set)
        if torch.is_tensor(getattr(base, "images", None)) and base.images.is_floating_point():
            return None
        if role == "in":
            return Subset(self.factories["train"](transform=v2.ToImage()), self.train_set.indices)
        raw = ImagesOnly(self.oe_factory(transform=v2.ToImage()))
        return Subset(raw, self.oe_set.indices) if isinstance(self.oe_set, Subset) else raw

    def _split(self, n: int) -> tuple[list[int], list[int]]:
        """Indices of the training part and of the held-out ID validation part (none: the data has
        validation images of its own)."""
        if self.val_factory is not None:
            return list(range(n)), []
        if self.val_size is not None:
            if not 0 <= self.val_size < n:
                raise OEUserError(f"data.val_size={self.val_size} must be in [0, {n}): the training set "
                                  f"has {n} images. Lower it, or use data.val_fraction.")
            n_val = self.val_size
        elif self.val_split == "random":
            n_val = int(round(n * self.val_fraction))
        else:  # the reference's count: n - int(n * (1 - share)) (utils/validation_dataset.py:29,63-64)
            n_val = n - int(n * (1 - self.val_fraction))
        if self.val_split == "tail":  # utils/validation_dataset.py:29-30: the last n_val, in order
            return list(range(n - n_val)), list(range(n - n_val, n))
        if self.val_split == "numpy_shuffle":  # utils/validation_dataset.py:66-71: np.random.seed(0)
            perm = numpy.arange(n)
            numpy.random.RandomState(self.split_seed).shuffle(perm)
            perm = perm.tolist()
            return perm[:n - n_val], perm[n - n_val:]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        return sorted(perm[n_val:]), sorted(perm[:n_val])

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
        oe_transform = self.test_transform if "oe" in self.batch_augment else self.oe_transform
        oe_aug = ImagesOnly(self.oe_factory(transform=oe_transform))
        if len(oe_aug) == 0:
            raise OEUserError("The OE dataset is empty; check the oe= config and its root.")
        n_val_oe = min(n_val, len(oe_aug) // 10)
        n_train_oe = len(oe_aug) - n_val_oe
        # the first n_train_oe images train (a range, never a list of 80M indices); the rest validate
        self.oe_set = Subset(oe_aug, range(n_train_oe)) if n_val_oe else oe_aug
        if n_val_oe:
            oe_plain = self.oe_factory(transform=self.test_transform)
            self.val_ood_set = Subset(oe_plain, range(n_train_oe, len(oe_plain)))

    def _check_val_ood_not_a_test_set(self) -> None:
        """Before training: the validation OOD set must not be configured like a test set (the
        same loader and arguments up to seed and size); ``setup("test")`` checks the built sets."""
        mine = _factory_identity(self.val_ood_factory)
        same = [name for name, f in self.ood_factories.items() if _factory_identity(f) == mine]
        if same:
            raise OEUserError(
                f"val_ood is configured like the OOD test set {same[0]!r} (same source; only seed or "
                f"size differ): choosing λ on it would tune on the test distribution. Use another "
                f"validation OOD set, or drop {same[0]!r} from the test suite (~ood.{same[0]})."
            )

    def _check_oe_not_in_tests(self) -> None:
        ood_sources = {_source(d): n for n, d in self.ood_sets.items() if _source(d)}
        for role, dataset in (("OE training data", self.oe_set), ("validation OOD set", self.val_ood_set)):
            source = _source(_base(dataset)) if dataset is not None else ""
            if source in ood_sources:
                raise OEUserError(
                    f"The {role} ({source}) is also the OOD test set {ood_sources[source]!r}: test OOD "
                    f"sets must be unseen in training and model selection. Pick another oe= / val_ood= "
                    f"or drop it from ood=."
                )

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        kwargs.setdefault("batch_size", self.batch_size)
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

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        """In order; under DDP each rank gets its exact, unpadded shard."""
        replicas, _ = world()
        sampler = ExactShardSampler(len(dataset)) if replicas > 1 else None
        return self._loader(dataset, sampler=sampler)

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
            mode = self.oe_sampling or getattr(_base(self.oe_set), "preferred_sampling", "shuffle")
            oe_sampler = OESampler(len(self.oe_set), steps * self.oe_batch_size, mode, seed=seed)
            loaders["oe"] = self._loader(self._training_samples("oe", self.oe_set, seed + 1),
                                         sampler=KeyedSampler(oe_sampler), batch_size=self.oe_batch_size)
        self._resume_loaders(loaders.values())
        self.train_samples_per_rank = {name: len(dl.sampler) for name, dl in loaders.items()}
        # min_size: the epoch ends with the ID loader (both have `steps` batches by construction)
        return CombinedLoader(loaders, mode="min_size")

    def _training_samples(self, role: str, dataset: Dataset, seed: int) -> Dataset:
        """A training loader's dataset: the items, with their seeds where the role is augmented per
        batch; for a resident role only ``(index, seed)`` (the items of ``range``)."""
        items = range(len(dataset)) if role in self.resident_sets else dataset
        return SeededSamples(items, seed, role in self.batch_augment)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches on the device: resident images gathered by index, then random crop/flip
        per image, all at once (:attr:`batch_augment`)."""
        trainer = self.trainer
        if not self.batch_augment or trainer is None or not trainer.training or not isinstance(batch, dict):
            return batch
        batch = dict(batch)
        for role, augment in self.batch_augment.items():
            if role not in batch:
                continue
            *parts, seeds = batch[role]  # "in": (x, y, seeds), "oe": (x, seeds); resident: (index, seeds)
            if role in self.resident_sets:
                x, y = self.resident_sets[role].gather(parts[0])
                parts = [x, y] if role == "in" else [x]
            x = augment(parts[0], seeds)
            batch[role] = (x, *parts[1:]) if role == "in" else x
        return batch

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
        sets = [s for s in (self.val_set, self.val_ood_set) if s is not None]
        return [self._eval_loader(s) for s in sets] if self.val_set is not None else []

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
        return [self._eval_loader(d) for d in self._test_sets().values()]

    def test_set_sizes(self) -> dict[str, int]:
        return {name: len(d) for name, d in self._test_sets().items()}

