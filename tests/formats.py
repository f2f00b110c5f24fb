"""Tiny datasets written in the exact on-disk formats of the real ones (for loader tests)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, str]:
    """``cifar-10-batches-py`` with 5 train batches, a test batch and meta; returns md5 sums."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        _pickle(folder / name, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                "labels": rng.integers(0, 10, n).tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return {name: md5(folder / name) for name in [*names, "batches.meta"]}


def write_cifar100(root: Path, n_train: int = 8, n_test: int = 5, seed: int = 1) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    for name, n in (("train", n_train), ("test", n_test)):
        _pickle(folder / name, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                "fine_labels": rng.integers(0, 100, n).tolist(),
                                "coarse_labels": rng.integers(0, 20, n).tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return {name: md5(folder / name) for name in ("train", "test", "meta")}


def write_svhn(root: Path, split: str = "train", n: int = 7, seed: int = 2) -> dict[str, str]:
    """``{split}_32x32.mat`` as SVHN ships it: X (32, 32, 3, N) uint8, y (N, 1) with 10 for 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0, 0] = 10
    path = root / f"{split}_32x32.mat"
    savemat(path, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})
    return {path.name: md5(path)}


def write_tiny_images(path: Path, images: np.ndarray) -> None:
    """Records of 3,072 bytes, each image (32, 32, 3) stored column-major as in the 80M file."""
    path.write_bytes(b"".join(img.flatten(order="F").tobytes() for img in images))


def write_lsun_test_lmdb(root: Path, n: int = 5, size: int = 40, seed: int = 0) -> Path:
    """``root/test_lmdb``: an LMDB of WebP-encoded images keyed by ids, as LSUN's test set."""
    import io

    import lmdb
    from PIL import Image

    rng = np.random.default_rng(seed)
    path = root / "test_lmdb"
    path.mkdir(parents=True)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(buf, "WEBP")
            txn.put(f"{i:040x}".encode(), buf.getvalue())
    env.close()
    return path


def write_openood(root: Path, benchmark: str = "cifar10", per_list: int = 6, seed: int = 0) -> dict[str, list[str]]:
    """OpenOOD v1.5's data root for a CIFAR benchmark: ``benchmark_imglist/<benchmark>/*.txt`` ("<path> <label>"
    lines, OOD labels -1, as its lists) over 32x32 PNGs under ``images_classic/``; returns list name -> paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    other = "cifar100" if benchmark == "cifar10" else "cifar10"
    lists = {f"train_{benchmark}": 4 * per_list, f"val_{benchmark}": per_list, f"test_{benchmark}": per_list,
             "val_tin": per_list, "train_tin597": 2 * per_list,
             **{f"test_{s}": per_list for s in (other, "tin", "mnist", "svhn", "texture", "places365")}}
    written: dict[str, list[str]] = {}
    for name, count in lists.items():
        is_id = name.endswith(benchmark)
        paths = []
        for i in range(count):
            label = int(rng.integers(0, 10)) if is_id else -1
            relative = f"{name.split('_', 1)[1]}/{name.split('_', 1)[0]}/{i:04d}.png"
            file = root / "images_classic" / relative
            file.parent.mkdir(parents=True, exist_ok=True)
            size = 28 if "mnist" in name else 32  # OpenOOD keeps MNIST at 28x28; the reader resizes
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(file)
            paths.append(f"{relative} {label}")
        folder = root / "benchmark_imglist" / benchmark
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.txt").write_text("\n".join(paths) + "\n")
        written[name] = paths
    return written
