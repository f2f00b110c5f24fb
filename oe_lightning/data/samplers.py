"""Samplers: a fixed number of OE samples per epoch, and exact (unpadded) sharding across ranks.

Both are :class:`~torch.utils.data.DistributedSampler` subclasses that shard by themselves, so
Lightning's ``use_distributed_sampler`` leaves them as they are (it only replaces samplers that are
not distributed samplers; wrapping :class:`OESampler` would re-shuffle its stream and lose the
per-epoch draw shared by all ranks).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

FULL_PERMUTATION_MAX = 1 << 24  # above this a per-epoch permutation would cost > 128 MB


def world() -> tuple[int, int]:
    """``(num_replicas, rank)`` of the default process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _SelfShardingSampler(DistributedSampler):
    """Holds the attributes of a DistributedSampler without its (padding) index logic."""

    def __init__(self, num_replicas: int | None, rank: int | None, seed: int | None):
        default_replicas, default_rank = world()
        self.num_replicas = default_replicas if num_replicas is None else num_replicas
        self.rank = default_rank if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas}).")
        self.seed = int(torch.initial_seed() if seed is None else seed) % (1 << 63)
        self.epoch = 0
        self.shuffle = False
        self.drop_last = False


OE_SAMPLING = ("shuffle", "offset", "sequential")


class OESampler(_SelfShardingSampler):
    """``num_samples`` indices per rank into a dataset of ``size``, drawn afresh every epoch.

    ``mode="shuffle"``: random permutations, concatenated when the set is smaller than an epoch
    needs (so every image is used before any repeats). Above 2^24 images indices are drawn
    uniformly with replacement instead of from a permutation of the whole set.
    ``mode="offset"``: a random start, then consecutive indices (modulo ``size``), as the paper's
    80M Tiny Images loader does. ``mode="sequential"``: the same indices 0, 1, 2, ... every epoch,
    as the paper's Tiny ImageNet OE loader (``shuffle=False``; its offset has no effect on an
    ImageFolder: TinyImageNet/oe_tune.py:95-98, 159).

    Every rank draws the same epoch stream of ``num_samples * num_replicas`` indices from
    ``(seed, epoch)`` and keeps every ``num_replicas``-th, so ranks see disjoint samples. Lightning
    calls :meth:`set_epoch` before each epoch; ``seed`` defaults to ``torch.initial_seed()``
    (the ``seed_everything`` seed, the same on every rank).
    """

    def __init__(self, size: int, num_samples: int, mode: str = "shuffle", seed: int | None = None,
                 num_replicas: int | None = None, rank: int | None = None):
        if mode not in OE_SAMPLING:
            raise ValueError(f"OE sampling mode must be one of {OE_SAMPLING}, got {mode!r}.")
        super().__init__(num_replicas, rank, seed)
        self.size, self.num_samples, self.mode = size, num_samples, mode
        # outlier mining (methods.mining): this epoch draws from these dataset indices only; None: all
        self.subset: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        size = self.size if self.subset is None else len(self.subset)
        if self.mode in ("offset", "sequential"):
            start = int(torch.randint(size, (), generator=g)) if self.mode == "offset" else 0
            indices = (torch.arange(total) + start) % size
        elif size > FULL_PERMUTATION_MAX:
            indices = torch.randint(size, (total,), generator=g)
        else:
            rounds = -(-total // size)
            indices = torch.cat([torch.randperm(size, generator=g) for _ in range(rounds)])[:total]
        if self.subset is not None:
            indices = self.subset[indices]
        return iter(indices[self.rank::self.num_replicas].tolist())


class ExactShardSampler(_SelfShardingSampler):
    """Every index of a dataset exactly once across ranks, in order: rank r gets r, r + R, ...

    Unlike ``DistributedSampler`` it never pads a shard with repeated samples (which would count
    some test images twice and bias AUROC/FPR); shards differ in length by at most one.
    """

    def __init__(self, size: int, num_replicas: int | None = None, rank: int | None = None):
        super().__init__(num_replicas, rank, seed=0)
        self.size = size

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.num_replicas))


def sample_seed(base: int, epoch: int, index: int) -> int:
    """The seed of one training sample's augmentation: a function of the run's seed, the epoch
    and the dataset index only, so it does not depend on workers, ranks or where a run resumed."""
    return (base * 0x9E3779B1 + epoch * 0x85EBCA77 + index * 0xC2B2AE3D) % (1 << 63)


def get_many(dataset: Dataset, indices: list[int]) -> list[Any]:
    """``[dataset[i] for i in indices]``, in one call where the dataset can (``__getitems__``)."""
    many = getattr(dataset, "__getitems__", None)
    return many(indices) if many is not None else [dataset[i] for i in indices]


class KeyedSampler(_SelfShardingSampler):
    """Wraps a sampler (already sharded) to yield ``(epoch, index)`` keys for :class:`SeededSamples`;
    :meth:`set_epoch` reaches the wrapped sampler. A DistributedSampler subclass, so Lightning
    leaves it in place under DDP."""

    def __init__(self, sampler: Sampler):
        super().__init__(None, None, getattr(sampler, "seed", 0))
        self.sampler = sampler
        self.skip = 0  # keys to leave out at the start of the next pass (a mid-epoch resume)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the keys, and of the wrapped sampler if it has ``set_epoch``."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        """Make the next pass the rest of ``epoch`` after its first ``skip`` keys (drawn, not loaded)."""
        self.set_epoch(epoch)
        self.skip = skip

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip, self.skip = self.epoch, self.skip, 0
        return ((epoch, int(i)) for i in itertools.islice(self.sampler, skip, None))


class SeededSamples(Dataset):
    """``dataset[i]`` drawn under torch's CPU RNG seeded from ``(seed, epoch, i)`` (:func:`sample_seed`),
    or, ``with_seed``, returned with that seed appended (for
    :class:`~oe_lightning.data.batch_augment.BatchAugment`), the caller's RNG state restored afterwards
    (about 6 µs a sample): random augmentations repeat exactly for the same epoch and index, in any
    worker, on any rank, before or after a resume. Keys come from :class:`KeyedSampler`;
    a plain index is served unseeded."""

    def __init__(self, dataset: Dataset, seed: int, with_seed: bool = False):
        self.dataset, self.seed, self.with_seed = dataset, int(seed), with_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        epoch, index = key
        if self.with_seed:  # the item as it is, with its seed appended (randomness is applied per batch)
            return self.__getitems__([key])[0]
        return self._seeded(epoch, index)

    def __getitems__(self, keys: list) -> list[Any]:
        """A batch: with ``with_seed``, fetched in one call where the dataset can (no per-image randomness)."""
        if not (self.with_seed and keys and isinstance(keys[0], tuple)):
            return [self[key] for key in keys]
        items = get_many(self.dataset, [index for _, index in keys])
        seeds = [sample_seed(self.seed, epoch, index) for epoch, index in keys]
        return [(*item, seed) if isinstance(item, tuple | list) else (item, seed)
                for item, seed in zip(items, seeds, strict=True)]

    def _seeded(self, epoch: int, index: int) -> Any:
        generator = torch.default_generator  # CPU transforms draw from it; seeding it alone is cheap
        state = generator.get_state()
        try:
            generator.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]
        finally:
            generator.set_state(state)
