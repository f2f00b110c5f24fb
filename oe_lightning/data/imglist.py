"""Image lists in OpenOOD's format: one ``<path> <label>`` line per image, the path relative to a data
folder (OpenOOD v1.5: ``benchmark_imglist/<benchmark>/<split>.txt`` over ``images_classic/`` or
``images_largescale/``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from torch.utils.data import Dataset

from oe_lightning.data.missing import missing_dataset
from oe_lightning.data.vision import _resized, _unreadable, load_rgb
from oe_lightning.errors import OEUserError

log = logging.getLogger(__name__)


def read_image_list(list_file: str | Path, data_dir: str | Path) -> list[tuple[str, int]]:
    """``(file path, label)`` per line of ``list_file``, as OpenOOD's ``ImglistDataset`` splits it (at the
    first space: the path, then an integer label); blank lines are skipped. A path that is absolute or leaves
    ``data_dir`` (``..``), a label that is not an integer and a file that is not there are errors naming the
    line."""
    list_file, data_dir = Path(list_file).expanduser(), Path(data_dir).expanduser()
    if not list_file.is_file():
        raise missing_dataset(list_file.stem, list_file, str(list_file),
                              "download OpenOOD v1.5's benchmark_imglist folder (its scripts/download/download.py) "
                              "and point paths.data_dir at the folder that holds it", "no such file")
    samples, missing = [], []
    with open(list_file, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.strip("\r\n")
            if not line.strip():
                continue
            path, _, rest = line.partition(" ")
            where = f"{list_file}, line {number} ({line[:80]!r})"
            relative = PurePosixPath(path)
            if relative.is_absolute() or ".." in relative.parts or not path:
                raise OEUserError(f"{where}: the image path must be relative to {data_dir} and stay inside it; "
                                  f"fix the line, or give the list its own data_dir.")
            try:
                label = int(rest.split()[0]) if rest.strip() else -1
            except ValueError:
                raise OEUserError(f"{where}: the label {rest.split()[0]!r} is not an integer; OpenOOD's lists "
                                  f"hold '<path> <label>' per line.") from None
            file = data_dir / relative
            if not file.is_file():
                missing.append(str(file))
            samples.append((str(file), label))
    if missing:
        raise OEUserError(f"{len(missing)} of {len(samples)} images that {list_file} lists are not under {data_dir}: "
                          f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}. Download OpenOOD v1.5's "
                          f"images (images_classic/ for CIFAR benchmarks) beside benchmark_imglist/, or point "
                          f"data_dir at them.")
    if not samples:
        raise OEUserError(f"{list_file} lists no images; it should hold one '<path> <label>' line per image.")
    return samples


class ImageList(Dataset):
    """The images an image list names, as RGB PIL images through ``transform``, with their labels."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable | None = None, source: str = ""):
        self.samples, self.transform, self.source = samples, transform, source
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        image = load_rgb(path)
        return (self.transform(image) if self.transform is not None else image), label


def image_list(list_file: str | Path, data_dir: str | Path, transform: Callable | None = None, name: str = "",
               resize: int | None = None, resize_mode: str = "crop", strict: bool = False) -> ImageList:
    """The images of an OpenOOD image list (``list_file``) under ``data_dir``; ``resize`` (shorter side, then the
    centre, or ``resize_mode="stretch"``) before ``transform``. Files that are not readable images are left out
    with a warning (``strict=True``: an error listing them)."""
    samples = read_image_list(list_file, data_dir)
    bad = _unreadable([p for p, _ in samples], Path(data_dir), name or Path(list_file).stem, len(samples), strict)
    kept = [s for s in samples if s[0] not in bad]
    if not kept:
        raise OEUserError(f"None of the images that {list_file} lists can be read.")
    return ImageList(kept, _resized(transform, resize, resize_mode), source=f"imglist:{Path(list_file).resolve()}")
