"""Which images go where, and the checks that nothing leaks between the roles.

The held-out ID validation split (:func:`check_split_settings`, :func:`holdout_indices`), the OE
images held out for validation (:func:`oe_holdout_size`), and the checks that the validation OOD set
and the OE data are not OOD test sets (:func:`check_val_ood_not_a_test_set`,
:func:`check_oe_not_in_tests`). The DataModule calls these; they hold no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy
import torch
from torch.utils.data import Dataset

from oe_lightning.data.wrappers import DatasetFactory, FixedDataset, base_dataset
from oe_lightning.errors import OEUserError

VAL_SPLITS = ("random", "tail", "numpy_shuffle")


def check_split_settings(val_fraction: float, val_split: str) -> None:
    """``data.val_fraction`` in [0, 1) and ``data.val_split`` one of :data:`VAL_SPLITS`."""
    if not 0.0 <= val_fraction < 1.0:
        raise OEUserError(
            f"data.val_fraction must be in [0, 1), got {val_fraction}; use 0 for no validation."
        )
    if val_split not in VAL_SPLITS:
        raise OEUserError(f"data.val_split must be one of {VAL_SPLITS}, got {val_split!r}: 'random' holds "
                          f"out a seeded random val_fraction of the training set, 'tail' its last "
                          f"val_fraction (the paper's calibration runs).")


def holdout_indices(n: int, val_fraction: float, val_size: int | None, val_split: str,
                    split_seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training part and of the held-out ID validation part of ``n`` training images:
    ``val_size`` images, else a ``val_fraction`` of them, drawn at random with ``split_seed``
    (``"random"``, both parts sorted), the last ones in order (``"tail"``) or numpy's shuffle with
    seed ``split_seed`` (``"numpy_shuffle"``)."""
    if val_size is not None:
        if not 0 <= val_size < n:
            raise OEUserError(f"data.val_size={val_size} must be in [0, {n}): the training set "
                              f"has {n} images. Lower it, or use data.val_fraction.")
        n_val = val_size
    elif val_split == "random":
        n_val = int(round(n * val_fraction))
    else:  # the reference's count: n - int(n * (1 - share)) (utils/validation_dataset.py:29,63-64)
        n_val = n - int(n * (1 - val_fraction))
    if val_split == "tail":  # utils/validation_dataset.py:29-30: the last n_val, in order
        return list(range(n - n_val)), list(range(n - n_val, n))
    if val_split == "numpy_shuffle":  # utils/validation_dataset.py:66-71: np.random.seed(0)
        perm = numpy.arange(n)
        numpy.random.RandomState(split_seed).shuffle(perm)
        perm = perm.tolist()
        return perm[:n - n_val], perm[n - n_val:]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def oe_holdout_size(n_oe: int, n_val: int) -> int:
    """How many OE images are held out for validation: as many as ID validation images, at most a
    tenth of the OE set (the last ones; the first ``n_oe - oe_holdout_size`` train)."""
    return min(n_val, n_oe // 10)


def factory_identity(factory: Any) -> tuple[Any, str]:
    """What a dataset factory (a ``functools.partial``) loads, ignoring the seed, size and display
    name keywords."""
    if isinstance(factory, FixedDataset):
        return factory.dataset, ""
    keywords = {k: v for k, v in (getattr(factory, "keywords", None) or {}).items()
                if k not in ("seed", "num_samples", "name", "download")}
    return getattr(factory, "func", factory), repr((getattr(factory, "args", ()), sorted(keywords.items())))


def source_of(dataset: Dataset) -> str:
    """The source a dataset names (its ``source`` attribute), else ``""``."""
    return getattr(dataset, "source", "")


def check_val_ood_not_a_test_set(val_ood_factory: DatasetFactory,
                                 ood_factories: Mapping[str, DatasetFactory]) -> None:
    """Before training: the validation OOD set must not be configured like a test set (the
    same loader and arguments up to seed and size); :func:`check_oe_not_in_tests` checks the built sets."""
    mine = factory_identity(val_ood_factory)
    same = [name for name, f in ood_factories.items() if factory_identity(f) == mine]
    if same:
        raise OEUserError(
            f"val_ood is configured like the OOD test set {same[0]!r} (same source; only seed or "
            f"size differ): choosing λ on it would tune on the test distribution. Use another "
            f"validation OOD set, or drop {same[0]!r} from the test suite (~ood.{same[0]})."
        )


def check_oe_not_in_tests(ood_sets: Mapping[str, Dataset], oe_set: Dataset | None,
                          val_ood_set: Dataset | None) -> None:
    """Neither the OE training data nor the validation OOD set may be an OOD test set (the same
    ``source``): test OOD sets must be unseen in training and model selection."""
    ood_sources = {source_of(d): n for n, d in ood_sets.items() if source_of(d)}
    for role, dataset in (("OE training data", oe_set), ("validation OOD set", val_ood_set)):
        source = source_of(base_dataset(dataset)) if dataset is not None else ""
        if source in ood_sources:
            raise OEUserError(
                f"The {role} ({source}) is also the OOD test set {ood_sources[source]!r}: test OOD "
                f"sets must be unseen in training and model selection. Pick another oe= / val_ood= "
                f"or drop it from ood=."
            )
