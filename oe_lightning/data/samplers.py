"""Drawing a fixed number of OE samples per epoch from an OE set of any size."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

FULL_PERMUTATION_MAX = 1 << 24  # above this a per-epoch permutation would cost > 128 MB


class OESampler(Sampler[int]):
    """``num_samples`` indices into a dataset of ``size``, drawn afresh every epoch.

    ``mode="shuffle"``: random permutations, concatenated when the set is smaller than an epoch
    needs (so every image is used before any repeats). Above 2^24 images indices are drawn
    uniformly with replacement instead of from a permutation of the whole set.
    ``mode="offset"``: a random start, then consecutive indices (modulo ``size``), as the paper's
    80M Tiny Images loader does.
    Randomness comes from torch's global generator, so ``seed_everything`` fixes it.
    """

    def __init__(self, size: int, num_samples: int, mode: str = "shuffle"):
        if mode not in ("shuffle", "offset"):
            raise ValueError(f"OE sampling mode must be 'shuffle' or 'offset', got {mode!r}.")
        self.size, self.num_samples, self.mode = size, num_samples, mode

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        if self.mode == "offset":
            start = int(torch.randint(self.size, ()))
            indices = (torch.arange(self.num_samples) + start) % self.size
        elif self.size > FULL_PERMUTATION_MAX:
            indices = torch.randint(self.size, (self.num_samples,))
        else:
            rounds = -(-self.num_samples // self.size)
            indices = torch.cat([torch.randperm(self.size) for _ in range(rounds)])[: self.num_samples]
        return iter(indices.tolist())
