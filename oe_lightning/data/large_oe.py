"""The paper's large outlier sets, read lazily: 80M Tiny Images (``tiny_images.bin``) and the
300K random images (``300K_random_images.npy``). Neither is ever loaded whole into memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from oe_lightning.data.missing import missing_dataset
from oe_lightning.errors import OEUserError

RECORD_BYTES = 32 * 32 * 3


class TinyImages(Dataset):
    """80 Million Tiny Images: 3,072-byte records (32×32×3 uint8, column-major), read by seek.

    ``exclude_file`` lists record indices to skip (e.g. the images overlapping CIFAR); a
    skipped index is replaced by a random other record, as the paper's loader does. The file is
    opened once per process, so DataLoader workers each have their own handle.
    """

    preferred_sampling = "offset"  # the paper reads consecutive records from a random offset

    def __init__(self, path: str | Path, transform: Callable | None = None,
                 exclude_file: str | Path | None = None, seed: int = 0):
        self.path = Path(path)
        if not self.path.is_file():
            raise missing_dataset("tiny_images", self.path, "one file of 79,302,017 records of 3,072 bytes",
                                  "the 80M Tiny Images binary is no longer distributed by its authors; "
                                  "use oe=random_300k (300K_random_images.npy) if you lack it")
        size = self.path.stat().st_size
        if size == 0 or size % RECORD_BYTES:
            raise OEUserError(f"{str(self.path)!r} has {size:,} bytes, not a whole number of {RECORD_BYTES:,}-byte "
                              f"32x32x3 records: it is truncated or not the 80M Tiny Images binary. Download "
                              f"tiny_images.bin again (79,302,017 records, 243.6 GB).")
        self.num_records = size // RECORD_BYTES
        self.transform = transform
        # the list counts records from 1: hendrycks/outlier-exposure utils/tinyimages_80mn_loader.py:25-28
        # ("indices in file take the 80mn database to start at 1, hence - 1")
        self.excluded = (np.unique(np.loadtxt(exclude_file, dtype=np.int64).reshape(-1)) - 1
                         if exclude_file else np.empty(0, dtype=np.int64))
        if len(self.excluded) and self.excluded[0] < 0:
            raise OEUserError(
                f"oe.exclude_file={str(exclude_file)!r} lists record 0, but its indices count from 1 (as the "
                f"paper's 80mn_cifar_idxs.txt). Use the file from hendrycks/outlier-exposure/utils."
            )
        self._rng = np.random.default_rng(seed)
        self._file, self._pid = None, None
        self.source = "tiny_images"

    def __len__(self) -> int:
        return self.num_records

    def is_excluded(self, index: int) -> bool:
        """Whether record ``index`` (counted from 0) is listed in ``exclude_file``."""
        i = np.searchsorted(self.excluded, index)
        return bool(i < len(self.excluded) and self.excluded[i] == index)

    def read(self, index: int) -> np.ndarray:
        """Record ``index`` as a (32, 32, 3) uint8 array, read by seek through this process's own handle."""
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open(self.path, "rb"), os.getpid()  # noqa: SIM115
        self._file.seek(index * RECORD_BYTES)
        raw = np.frombuffer(self._file.read(RECORD_BYTES), dtype=np.uint8)
        return raw.reshape(32, 32, 3, order="F")

    def __getitem__(self, index: int) -> tuple:
        index %= self.num_records
        while self.is_excluded(index):
            index = int(self._rng.integers(self.num_records))
        image = Image.fromarray(np.ascontiguousarray(self.read(index)))
        return (self.transform(image) if self.transform else image), -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}


class NpyImages(Dataset):
    """Images in one ``.npy`` array (N, H, W, C) of uint8, memory-mapped: one image is read per item.

    The map is opened lazily in each process, so forked or spawned DataLoader workers share the
    page cache and never copy the array (nor convert it to float as a whole).
    """

    def __init__(self, path: str | Path, transform: Callable | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise missing_dataset(self.path.name, self.path, "a (N, 32, 32, 3) uint8 .npy array",
                                  "download 300K_random_images.npy as linked from the Outlier "
                                  "Exposure repository (hendrycks/outlier-exposure)")
        try:
            header = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise OEUserError(f"{str(self.path)!r} is not a readable .npy array ({err}); expected (N, H, W, 3) "
                              f"uint8 images, as 300K_random_images.npy.") from err
        if header.dtype != np.uint8 or header.ndim != 4 or header.shape[-1] != 3:
            hint = (" It looks channel-first (N, 3, H, W): transpose it to (N, H, W, 3)."
                    if header.ndim == 4 and header.shape[1] == 3 else "")
            raise OEUserError(f"{str(self.path)!r} holds a {header.dtype} array of shape {tuple(header.shape)}; OE "
                              f"arrays must be (N, H, W, 3) uint8 RGB images, as 300K_random_images.npy.{hint} "
                              f"Convert it (e.g. numpy.repeat for grey images) and save it again.")
        self.shape = header.shape
        self.transform = transform
        self._data, self._pid = None, None
        self.source = f"npy:{self.path.name}"

    @property
    def data(self) -> np.ndarray:
        """The memory-mapped array, opened once per process."""
        if self._data is None or self._pid != os.getpid():
            self._data, self._pid = np.load(self.path, mmap_mode="r"), os.getpid()
        return self._data

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> tuple:
        image = Image.fromarray(np.array(self.data[index]))  # copies one image only
        return (self.transform(image) if self.transform else image), -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None, "_pid": None}
