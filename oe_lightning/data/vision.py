"""CIFAR-10/100 and SVHN through torchvision, image folders, with clear missing-data errors.

``checksums`` replaces torchvision's expected md5 of named files: the integrity check still runs
on every file, against the sums given (tests use it for the tiny files they write; real data is
checked against torchvision's published sums).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.transforms import v2

from oe_lightning.compat import integrity_check_override
from oe_lightning.config import class_folders, class_links_skipped
from oe_lightning.data.files import LOOP, NOT_REGULAR, Listing, list_files, warn_skipped
from oe_lightning.data.missing import missing_dataset
from oe_lightning.errors import OEUserError

CIFAR_MEAN = [x / 255 for x in (125.3, 123.0, 113.9)]  # the paper's, for CIFAR-10 and CIFAR-100
CIFAR_STD = [x / 255 for x in (63.0, 62.1, 66.7)]
log = logging.getLogger("oe_lightning")
# image types PIL reads that torchvision's folders do not (an animated GIF among them): named when skipped
OTHER_IMAGE_SUFFIXES = (".gif", ".jfif", ".avif", ".heic", ".heif", ".jp2", ".apng")
PREPARE = "python scripts/prepare_data.py {name} --data-dir DATA_DIR (or data.download=true)"


def _checked_class(cls: type, checksums: Mapping[str, str] | None) -> type:
    """``cls`` with the md5 sums in ``checksums`` (file name -> md5) instead of torchvision's, and
    its integrity check remembered per unchanged file."""
    attrs: dict[str, Any] = {}
    checksums = checksums or {}
    for attr in ("train_list", "test_list"):
        if hasattr(cls, attr):
            attrs[attr] = [[f, checksums.get(f, md5)] for f, md5 in getattr(cls, attr)]
    if hasattr(cls, "meta"):
        attrs["meta"] = {**cls.meta, "md5": checksums.get(cls.meta["filename"], cls.meta["md5"])}
    if hasattr(cls, "split_list"):
        attrs["split_list"] = {k: [url, f, checksums.get(f, md5)]
                               for k, (url, f, md5) in cls.split_list.items()}
    attrs.update(integrity_check_override(cls, _remembered_integrity))
    return type(cls.__name__, (cls,), attrs)


_VERIFIED: set[tuple[str, int, int, str]] = set()  # (file, size, mtime_ns, expected md5) hashed already


def _integrity_files(dataset: Any) -> list[tuple[Path, str]]:
    """The files (and expected md5) a torchvision CIFAR / SVHN dataset checks."""
    if hasattr(dataset, "train_list"):
        base = Path(dataset.root) / dataset.base_folder
        return [(base / f, md5) for f, md5 in (*dataset.train_list, *dataset.test_list)]
    return [(Path(dataset.root) / dataset.filename, dataset.file_md5)]


def _remembered_integrity(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """torchvision's md5 check, once per process for each unchanged file (same size and mtime): the
    train, held-out, fit and test views of one dataset no longer hash the same files four times."""
    def check_once(self: Any) -> bool:
        try:
            stamps = {(str(p), p.stat().st_size, p.stat().st_mtime_ns, md5) for p, md5 in _integrity_files(self)}
        except (OSError, AttributeError):
            return check(self)
        if stamps <= _VERIFIED:
            return True
        ok = check(self)
        if ok:
            _VERIFIED.update(stamps)
        return ok
    return check_once


def cifar(root: str | Path, name: str = "cifar10", split: str = "train",
          transform: Callable | None = None, download: bool = False,
          checksums: Mapping[str, str] | None = None) -> Dataset:
    """CIFAR-10 or CIFAR-100 (python pickles under ``root``), ``split`` train or test."""
    classes = {"cifar10": (datasets.CIFAR10, "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"),
               "cifar100": (datasets.CIFAR100, "cifar-100-python/{train,test,meta}")}
    if name not in classes:
        raise ValueError(f"cifar name must be one of {sorted(classes)}, got {name!r}.")
    cls, layout = classes[name]
    try:
        dataset = _checked_class(cls, checksums)(root=str(root), train=split == "train",
                                                 transform=transform, download=download)
    except RuntimeError as err:
        raise missing_dataset(name, root, f"{root}/{layout}", PREPARE.format(name=name),
                              str(err)) from err
    dataset.source = f"{name}:{split}"
    return dataset


def svhn(root: str | Path, split: str = "train", transform: Callable | None = None,
         download: bool = False, checksums: Mapping[str, str] | None = None, resize: int | None = None) -> Dataset:
    """SVHN cropped digits (``{split}_32x32.mat``); ``split`` train, test, extra or train+extra.
    ``resize`` resizes the 32×32 digits first (Tiny ImageNet's suite: 64, TinyImageNet/test.py:234-235)."""
    parts = split.split("+")
    if resize:
        transform = v2.Compose([v2.Resize(resize)] + ([transform] if transform else []))
    try:
        cls = _checked_class(datasets.SVHN, checksums)
        sets = [cls(root=str(root), split=p, transform=transform, download=download) for p in parts]
    except (RuntimeError, ValueError) as err:
        raise missing_dataset("svhn", root, f"{root}/{{train,test,extra}}_32x32.mat",
                              PREPARE.format(name="svhn"), str(err)) from err
    dataset = sets[0] if len(sets) == 1 else ConcatDataset(sets)
    dataset.source = f"svhn:{split}"
    return dataset


def _resized(transform: Callable | None, resize: int | None, resize_mode: str) -> Callable | None:
    """``resize`` first, then ``transform``: ``crop`` resizes the shorter side and centre-crops
    (the paper's Textures, Places365, LSUN), ``stretch`` resizes to resize×resize (its Icons-50)."""
    if not resize:
        return transform
    if resize_mode not in ("crop", "stretch"):
        raise ValueError(f"resize_mode must be 'crop' or 'stretch', got {resize_mode!r}.")
    steps = [v2.Resize(resize), v2.CenterCrop(resize)] if resize_mode == "crop" else [v2.Resize((resize, resize))]
    return v2.Compose(steps + ([transform] if transform else []))


def load_rgb(path: str | Path) -> Image.Image:
    """An image file as 8-bit RGB; 16-bit and float images are scaled to 0-255 first (PIL's own
    ``convert("RGB")`` clips them, so a 16-bit PNG would come out almost white)."""
    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            import numpy

            values = numpy.asarray(image, dtype=numpy.float64)
            top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
            image = Image.fromarray(numpy.clip(values / top * 255.0, 0, 255).astype(numpy.uint8))
        return image.convert("RGB")


def unreadable_images(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """``(path, reason)`` for every file PIL cannot open as an image (its header is read, not the
    pixels). Each verdict is remembered per (file, size, mtime): a folder that several datasets of
    one run read (train, validation, test split) is opened once."""
    return [(str(path), verdict) for path, (verdict, _) in zip(paths, _header_verdicts(paths), strict=True)
            if verdict]


def animated_images(paths: Sequence[str | Path]) -> list[str]:
    """The files among ``paths`` that hold several frames (an animated GIF, APNG or WebP, a multi-page
    TIFF), of which only the first is read; a camera's MPO JPEG (a photo and its preview) is a photo."""
    return [str(path) for path, (verdict, animated) in zip(paths, _header_verdicts(paths), strict=True)
            if animated and not verdict]


def _header_verdicts(paths: Sequence[str | Path]) -> list[tuple[str | None, bool]]:
    """``(error name or None, animated)`` per path, from its header only, remembered per (file, size, mtime);
    a file that is not a regular file (a FIFO would block the reader) is never opened."""
    verdicts = []
    for path in paths:
        try:
            info = os.stat(path)
            key = (str(path), info.st_size, info.st_mtime_ns)
        except OSError as err:
            verdicts.append((type(err).__name__, False))
            continue
        if not stat.S_ISREG(info.st_mode):
            verdicts.append(("not a regular file", False))
            continue
        if key not in _HEADER_VERDICTS:
            try:
                with Image.open(path) as image:
                    image.size  # noqa: B018 - reading the header is the check
                    animated = image.format != "MPO" and bool(getattr(image, "is_animated", False))
                _HEADER_VERDICTS[key] = (None, animated)
            except Exception as err:  # noqa: BLE001 - any failure makes the file unusable
                _HEADER_VERDICTS[key] = (type(err).__name__, False)
        verdicts.append(_HEADER_VERDICTS[key])
    return verdicts


_HEADER_VERDICTS: dict[tuple[str, int, int], tuple[str | None, bool]] = {}


class ReadableImageFolder(datasets.ImageFolder):
    """An ImageFolder that serves the next readable image in place of one that fails to decode
    (e.g. a truncated JPEG), naming the file in a warning once; ``strict`` raises instead."""

    strict = False

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Sorted sub-folders, hidden ones left out: the classes ``data=image_folder`` counts."""
        classes = class_folders(directory)
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(self, directory: str | Path, class_to_idx: dict[str, int],
                     extensions: tuple[str, ...] | None = None, is_valid_file: Callable[[str], bool] | None = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """torchvision's samples (same order), listed by :func:`~oe_lightning.data.files.list_files`:
        each class folder is a tree of its own, read for regular files only, links never followed in a
        loop, out of the class folder or a second time (torchvision follows every link, so a link to
        ``..`` multiplied the images under wrong labels); what is skipped is in ``self.listings``."""
        self.other_images: list[str] = []

        def keep(path: str) -> bool:
            if is_valid_file(path) if is_valid_file else has_file_allowed_extension(path, extensions or ()):
                return True
            if path.lower().endswith(OTHER_IMAGE_SUFFIXES):
                self.other_images.append(path)
            return False

        self.listings = {name: list_files(Path(directory, name), keep) for name in sorted(class_to_idx)}
        samples = [(str(path), class_to_idx[name]) for name, listing in self.listings.items()
                   for path in listing.files]
        empty = [name for name, listing in self.listings.items() if not listing.files]
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. Supported "
                                    f"extensions are: {', '.join(extensions or ())}")
        return samples

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            try:
                return super().__getitem__(i)
            except (OSError, ValueError, SyntaxError) as err:
                path = self.samples[i][0]
                if self.strict:
                    raise OEUserError(f"Image {path!r} cannot be decoded ({type(err).__name__}: {err}); remove "
                                      f"or replace it, or set data.strict=false to skip such files.") from err
                if path not in _WARNED:
                    _WARNED.add(path)
                    log.warning("skipped unreadable image %s (%s); serving the next one", path, err)
        raise OEUserError(f"No image under {self.root!r} can be decoded.")


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process meets it (a folder is read by several
    datasets of one run: train, validation and test split)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def image_folder(root: str | Path, transform: Callable | None = None, name: str = "",
                 resize: int | None = None, resize_mode: str = "crop",
                 exclude_classes: Sequence[str] = (), strict: bool = False) -> Dataset:
    """Images in class sub-folders (``root/<class>/*.jpg``), e.g. Textures, Places, Icons-50.

    ``resize`` (see ``resize_mode``) applies before ``transform``; ``exclude_classes`` drops whole
    sub-folders (the paper's Icons-50 leaves out ``numbers``: SVHN/test.py:219-226). Files that are
    not images are left out with one warning that counts and names them (``strict=True``: an error
    listing them all, before any training); 16-bit images are scaled, not clipped.
    """
    root = Path(root).expanduser()
    flat = root.is_dir() and not class_folders(root)
    dataset = _open_folder(root, flat, _resized(transform, resize, resize_mode), name)
    what = name or root.name
    dropped = {dataset.class_to_idx[c] for c in exclude_classes if c in dataset.class_to_idx}
    _report_listing(dataset, root, flat, what, exclude_classes, strict)
    kept = [p for p, t in dataset.samples if t not in dropped]
    bad = _unreadable(kept, root, what, len(dataset.samples), strict)
    _report_animated([p for p in kept if p not in bad], root, what, strict)
    if dropped or bad:
        dataset.samples = [s for s in dataset.samples if s[1] not in dropped and s[0] not in bad]
        dataset.imgs, dataset.targets = dataset.samples, [t for _, t in dataset.samples]
    if not dataset.samples:
        raise OEUserError(f"No readable image under {str(root)!r}; put images in class sub-folders there.")
    dataset.strict = strict
    dataset.source = f"folder:{root.resolve()}"
    return dataset


def _open_folder(root: Path, flat: bool, transform: Callable | None, name: str) -> ReadableImageFolder:
    """The folder's images: one class per sub-folder, or (``flat``: images directly in ``root``) one class
    named after the folder; a missing folder is an error saying where the set must be."""
    try:
        if flat:
            class FlatFolder(ReadableImageFolder):
                def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
                    return [root.name], {root.name: 0}

            return FlatFolder(str(root.parent), transform=transform, loader=load_rgb)
        return ReadableImageFolder(str(root), transform=transform, loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as err:
        raise missing_dataset(name or root.name, root, f"{root}/<class>/<image>.jpg|png",
                              "download the set from its authors' page and unpack it there",
                              str(err).splitlines()[0]) from err


def _report_listing(dataset: ReadableImageFolder, root: Path, flat: bool, what: str,
                    exclude_classes: Sequence[str], strict: bool) -> None:
    """Name what the folder listing skipped (links out of the tree, files of other types); files named like
    images that are not regular files are an error with ``strict``."""
    listings = [listing for c, listing in dataset.listings.items() if c not in exclude_classes]
    links = Listing(root, skipped={LOOP: [f"{root / c} -> {t}" for c, t in class_links_skipped(root).items()]}
                    if not flat else {})
    special = [p for listing in listings for p in listing.skipped.get(NOT_REGULAR, [])]
    if special and strict:
        raise OEUserError(f"{len(special)} file(s) under {str(root)!r} are named like images but are not regular "
                          f"files (a FIFO, socket or device, which would block a reader): {', '.join(special)}. "
                          f"Remove them, or set data.strict=false to skip them with a warning.")
    warn_skipped([links, *listings], f"{what} ({root})")
    others = [p for p in dataset.other_images if Path(p).parent.name not in exclude_classes]
    if others:
        _warn_once(f"{what}: {len(others)} file(s) not read, their type is not one training reads "
                   f"({', '.join(IMG_EXTENSIONS)}): " + ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
                   + "; convert them (e.g. to PNG) to use them")


def _unreadable(kept: list[str], root: Path, what: str, total: int, strict: bool) -> dict[str, str]:
    """The files among ``kept`` that are not readable images (path -> why), warned about, or an error with
    ``strict``."""
    bad = dict(unreadable_images(kept))
    if bad and strict:
        raise OEUserError(f"{len(bad)} files under {str(root)!r} are not readable images: "
                          f"{'; '.join(f'{p} ({why})' for p, why in bad.items())}. Remove them, or set "
                          f"data.strict=false to skip them with a warning.")
    if bad:
        log.warning("%s: skipped %d unreadable file(s) of %d: %s", what, len(bad),
                    total, ", ".join(list(bad)[:5]) + (" ..." if len(bad) > 5 else ""))
    return bad


def _report_animated(paths: list[str], root: Path, what: str, strict: bool) -> None:
    """Animated images are read as their first frame, with a warning (``strict``: an error)."""
    animated = animated_images(paths)
    if animated and strict:
        raise OEUserError(f"{len(animated)} images under {str(root)!r} are animated (several frames), of which "
                          f"only the first would be read: {', '.join(animated)}. Save the frame you mean as a still "
                          f"image, or set data.strict=false to read their first frame with a warning.")
    if animated:
        _warn_once(f"{what}: {len(animated)} animated image(s) (several frames) read as their first frame only: "
                   + ", ".join(animated[:5]) + (" ..." if len(animated) > 5 else ""))


class LSUNTest(Dataset):
    """The LSUN scene-understanding *test* set, read from its LMDB (``root/test_lmdb``), as the paper's
    ``lsun_loader.LSUN(..., classes='test')`` (CIFAR/test.py:259-261): 10,000 encoded images.

    Keys are listed from the database itself (torchvision's reader would unpickle a key cache from
    the working directory; nothing here is unpickled). Needs the ``lmdb`` package
    (``pip install oe-lightning[paper]``).
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, resize: int | None = 32):
        self.path = Path(root) / "test_lmdb"
        how = ("download the LSUN test set (test_lmdb.zip, `python download.py -c test` in "
               "github.com/fyu/lsun) and unzip it there")
        if not (self.path / "data.mdb").is_file():
            raise missing_dataset("lsun", self.path, f"{self.path}/data.mdb (an LMDB)", how)
        if importlib.util.find_spec("lmdb") is None:
            raise OEUserError(
                "The LSUN test set is an LMDB database and needs the lmdb package: pip install lmdb "
                "(or pip install 'oe-lightning[paper]')."
            )
        with _lmdb_env(self.path).begin(write=False) as txn:
            self.keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        if not self.keys:
            raise missing_dataset("lsun", self.path, f"{self.path}/data.mdb (an LMDB)", how, "the database is empty")
        self.transform = _resized(transform, resize, "crop")
        self.source = f"lsun_test:{self.path.resolve()}"

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple:
        with _lmdb_env(self.path).begin(write=False) as txn:
            image = Image.open(io.BytesIO(txn.get(self.keys[i]))).convert("RGB")
        return (self.transform(image) if self.transform else image), -1


_LMDB_ENVS: dict[tuple[str, int], Any] = {}


def _lmdb_env(path: Path) -> Any:
    """One read-only LMDB environment per database and process (lmdb refuses a second one in a
    process; DataLoader workers open their own)."""
    import lmdb

    key = (str(path.resolve()), os.getpid())
    if key not in _LMDB_ENVS:
        _LMDB_ENVS[key] = lmdb.open(key[0], readonly=True, lock=False, readahead=False, meminit=False,
                                    max_readers=64)
    return _LMDB_ENVS[key]


class TinyImageNet(Dataset):
    """Tiny ImageNet (``tiny-imagenet-200``): 200 classes of 64×64 images.

    Train images are ``train/<wnid>/images/*.JPEG``; validation images (the usual test set) are
    ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``. Class indices follow the sorted
    WordNet ids of ``wnids.txt``.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None):
        base = Path(root) / "tiny-imagenet-200"
        layout = (f"{base}/wnids.txt, {base}/train/<wnid>/images/*.JPEG, {base}/val/images/*.JPEG "
                  f"and {base}/val/val_annotations.txt")
        how = "download tiny-imagenet-200.zip from the CS231n page and unzip it into paths.data_dir"
        if split not in ("train", "val"):
            raise ValueError(f"TinyImageNet split must be 'train' or 'val', got {split!r}.")
        if not (base / "wnids.txt").is_file():
            raise missing_dataset("tiny_imagenet", base, layout, how)
        self.classes = sorted((base / "wnids.txt").read_text().split())
        index = {wnid: i for i, wnid in enumerate(self.classes)}
        if split == "train":
            self.samples = [(p, index[p.parent.parent.name])
                            for p in sorted((base / "train").glob("*/images/*.JPEG"))]
        else:
            annotations = base / "val" / "val_annotations.txt"
            if not annotations.is_file():
                raise missing_dataset("tiny_imagenet", base, layout, how, "no val_annotations.txt")
            rows = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
            self.samples = [(base / "val" / "images" / r[0], index[r[1]]) for r in rows]
        if not self.samples:
            raise missing_dataset("tiny_imagenet", base, layout, how, f"no {split} images")
        self.transform = transform
        self.source = f"tiny_imagenet:{split}"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple:
        path, label = self.samples[i]
        image = Image.open(path).convert("RGB")
        return (self.transform(image) if self.transform else image), label


def folder_split(root: str | Path, split: str = "train", test_fraction: float = 0.2, split_seed: int = 0,
                 test_root: str | Path | None = None, transform: Callable | None = None,
                 resize: int | None = None, resize_mode: str = "crop", strict: bool = False,
                 val_root: str | Path | None = None) -> Dataset:
    """D_in from image folders: ``root`` for training and ``test_root`` for testing, or, without a
    ``test_root``, one folder split once by a seeded permutation (``test_fraction`` tests);
    ``split="val"`` reads ``val_root``. Class indices are the sorted sub-folder names of ``root``; a
    test or validation folder must have the same classes."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}.")
    other = {"test": (test_root, "test_dir"), "val": (val_root, "val_dir")}.get(split)
    if other and other[0]:
        data = image_folder(other[0], transform, other[1], resize, resize_mode, strict=strict)
        if data.classes != class_folders(root):
            raise OEUserError(f"data.{other[1]}={str(other[0])!r} has the classes {data.classes}, data.train_dir "
                              f"has {class_folders(root)}: give both the same class sub-folders.")
        return data
    if split == "val":
        raise ValueError("folder_split(split='val') needs val_root.")
    data = image_folder(root, transform, "train_dir", resize, resize_mode, strict=strict)
    if test_root:
        return data
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(split_seed)).tolist()
    n_test = int(round(len(data) * test_fraction))
    keep = sorted(perm[n_test:]) if split == "train" else sorted(perm[:n_test])
    return Subset(data, keep)
