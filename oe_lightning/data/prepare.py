"""Getting the paper's datasets into ``data_dir``: torchvision downloads what it can, the rest is
checked where the configs expect it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from oe_lightning.errors import OEUserError

# name -> (what it is, how to get it, check(data_dir) -> problem or "")
Check = Callable[[Path], str]


def _file(rel: str) -> Check:
    return lambda d: "" if (d / rel).is_file() else f"missing {d / rel}"


def _folder(rel: str) -> Check:
    def check(d: Path) -> str:
        root = d / rel
        if not root.is_dir():
            return f"missing {root}/<class>/<images>"
        return "" if any(p.is_file() for p in root.rglob("*")) else f"no images under {root}"
    return check


def _torchvision(name: str, download: bool) -> Check:
    from oe_lightning.data.vision import cifar, svhn

    def check(d: Path) -> str:
        before = _tree(d)
        try:
            if download:
                d.mkdir(parents=True, exist_ok=True)
            if name == "svhn":
                for split in ("train", "test", "extra"):
                    svhn(d, split, download=download)
            else:
                for split in ("train", "test"):
                    cifar(d, name, split, download=download)
        except OEUserError as err:
            _remove_new(d, before)
            cause = err.__cause__
            if isinstance(cause, OSError) or "URLError" in str(err) or "urlopen" in str(err):
                return f"could not download ({_reason(cause or err)})"
            return str(err)
        except OSError as err:  # no network: URLError, socket errors, timeouts
            _remove_new(d, before)
            return f"could not download ({_reason(err)})"
        return ""
    return check


def _urls(name: str) -> list[str]:
    from torchvision import datasets

    if name == "svhn":
        return [url for url, _, _ in datasets.SVHN.split_list.values()]
    return [(datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100).url]


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return " ".join(str(reason).split())[:160]


def _tree(root: Path) -> set[Path]:
    """Every path under ``root`` (and root itself) that exists now."""
    return {root, *root.rglob("*")} if root.exists() else set()


def _remove_new(root: Path, before: set[Path]) -> None:
    """Undo a failed download: delete the files and folders it created (empty or partial)."""
    for path in sorted(_tree(root) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        elif path.is_file():
            path.unlink()


MANUAL = {
    "tiny_images": ("80M Tiny Images binary + CIFAR-overlap index list",
                    "place tiny_images.bin and 80mn_cifar_idxs.txt in the data dir (no longer "
                    "distributed; use random_300k instead)",
                    lambda d: _file("tiny_images.bin")(d) or _file("80mn_cifar_idxs.txt")(d)),
    "random_300k": ("300K random images", "download 300K_random_images.npy as linked from "
                    "github.com/hendrycks/outlier-exposure", _file("300K_random_images.npy")),
    "tiny_imagenet": ("Tiny ImageNet", "unzip tiny-imagenet-200.zip (CS231n) into the data dir",
                      _file("tiny-imagenet-200/val/val_annotations.txt")),
    "textures": ("Describable Textures (DTD)", "unpack dtd-r1.0.1.tar.gz: dtd/images/<class>/",
                 _folder("dtd/images")),
    "places365": ("Places365 test subset", "images in places365/<class>/", _folder("places365")),
    "lsun": ("LSUN test set (the OE paper's LSUN)", "download the LSUN scene test set (`python download.py -c "
             "test` from github.com/fyu/lsun) and unzip it as lsun/test_lmdb; needs pip install lmdb",
             _file("lsun/test_lmdb/data.mdb")),
    "icons50": ("Icons-50 (SVHN's suite)", "unpack Icons-50 (github.com/hendrycks/robustness) as Icons-50/<class>/",
                _folder("Icons-50")),
    "street_letters": ("Street View Characters (SVHN's suite)", "Chars74K street-view characters as "
                       "StreetLetters/<class>/", _folder("StreetLetters")),
    "imagenet_heldout": ("ImageNet-1K classes not in Tiny ImageNet (its suite)", "64x64 images of the 800 other "
                         "classes (TinyImageNet/Tiny_ImageNet_dataset/make_tiny_imagenet.py in "
                         "hendrycks/outlier-exposure) as imagenet_heldout/<class>/", _folder("imagenet_heldout")),
    "lsun_crop": ("LSUN (crop), energy suite", "unpack LSUN.tar.gz (ODIN release) as LSUN_C/<class>/",
                  _folder("LSUN_C")),
    "lsun_resize": ("LSUN (resize)", "unpack LSUN_resize.tar.gz (ODIN release)", _folder("LSUN_resize")),
    "isun": ("iSUN", "unpack iSUN.tar.gz (ODIN release) as iSUN/<class>/", _folder("iSUN")),
    "imagenet22k": ("ImageNet-22K minus ImageNet-1K", "images in imagenet22k_minus_1k/<class>/",
                    _folder("imagenet22k_minus_1k")),
}
TORCHVISION = ("cifar10", "cifar100", "svhn")
ALL = (*TORCHVISION, *MANUAL)


def prepare(names: list[str], data_dir: Path, download: bool = True) -> list[tuple[str, str, str]]:
    """For each dataset: ``(name, "ok" | "missing", detail)``; torchvision sets are downloaded."""
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise OEUserError(f"Unknown dataset(s) {unknown}; known: {', '.join(ALL)}.")
    rows = []
    for name in names:
        if name in TORCHVISION:
            problem = _torchvision(name, download)(data_dir)
            how = "torchvision download" + ("" if download else " (run without --no-download)")
            if problem.startswith("could not download"):
                how = f"on a machine with network, fetch {' '.join(_urls(name))} into {data_dir}"
        else:
            _, how, check = MANUAL[name]
            problem = check(data_dir)
        rows.append((name, "missing" if problem else "ok", f"{problem} -> {how}" if problem else ""))
    return rows
