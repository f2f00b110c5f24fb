"""``oe-demo OUT``: the embedded data as image folders in real formats, a stand-in for your own images.

    oe-demo OUT [--size 16]      (or python -m oe_lightning.data.demo_folders OUT)

Writes, from data every scikit-learn install ships (no download):

    OUT/digits/train/<0..9>/*.png   ID training images, one sub-folder per class (digits' train split)
    OUT/digits/test/<0..9>/*.png    ID test images (digits' test split)
    OUT/oe/*.jpg                    OE images: colour crops of the China photograph
    OUT/unknown/*.jpg               images of another source: crops of the flower photograph
    OUT/mixed/{in,unknown}_*.*      half ID test digits, half unknown crops: what oe-predict sorts

Digits are scaled from 0..16 to 0..255 and enlarged to ``--size`` pixels (nearest neighbour); the
photo crops are ``--size`` pixels, JPEG quality 90. Then, as the README's "Use it on your own classifier":

    oe-train data=image_folder data.train_dir=OUT/digits/train data.test_dir=OUT/digits/test \\
        data.image_size=16 oe=image_folder oe.root=OUT/oe
    oe-predict ckpt_path=RUN/checkpoints/last.ckpt input=OUT/mixed
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def _digit_image(pixels: np.ndarray, size: int) -> Image.Image:
    gray = np.clip(np.rint(pixels * 255.0 / 16.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.NEAREST)


def _photo_crops(name: str, count: int, size: int, seed: int) -> list[Image.Image]:
    """``count`` random square crops (sides 32..160 px) of a scikit-learn sample photograph."""
    from sklearn.datasets import load_sample_image

    photo = load_sample_image(name)
    rng = np.random.default_rng(seed)
    height, width = photo.shape[:2]
    crops = []
    for _ in range(count):
        side = int(rng.integers(32, 161))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        crops.append(crop.resize((size, size), Image.Resampling.BILINEAR))
    return crops


def write_demo_folders(out: str | Path, size: int = 16, oe_count: int = 2000, unknown_count: int = 200,
                       mixed_count: int = 100, split_seed: int = 0) -> dict[str, Path]:
    """Write the folders described above; returns their paths by role."""
    from sklearn.datasets import load_digits

    from oe_lightning.data.embedded import digits_split_indices

    out = Path(out)
    bunch = load_digits()
    train_idx, test_idx = digits_split_indices(len(bunch.images), 0.3, split_seed)
    paths = {name: out / sub for name, sub in (("train", "digits/train"), ("test", "digits/test"),
                                                ("oe", "oe"), ("unknown", "unknown"), ("mixed", "mixed"))}
    for role, indices in (("train", train_idx), ("test", test_idx)):
        for i in indices:
            folder = paths[role] / str(int(bunch.target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            _digit_image(bunch.images[i], size).save(folder / f"{int(i):04d}.png")
    for role, photo, count, seed in (("oe", "china.jpg", oe_count, 1), ("unknown", "flower.jpg", unknown_count, 2)):
        paths[role].mkdir(parents=True, exist_ok=True)
        for j, crop in enumerate(_photo_crops(photo, count, size, seed)):
            crop.save(paths[role] / f"{j:05d}.jpg", quality=90)
    paths["mixed"].mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(split_seed + 3)
    for i in rng.choice(test_idx, size=min(mixed_count, len(test_idx)), replace=False):
        _digit_image(bunch.images[i], size).save(paths["mixed"] / f"in_{int(i):04d}.png")
    for j, crop in enumerate(_photo_crops("flower.jpg", mixed_count, size, seed=4)):
        crop.save(paths["mixed"] / f"unknown_{j:04d}.jpg", quality=90)
    return paths


def main() -> None:
    """Entry point of ``oe-demo``."""
    parser = argparse.ArgumentParser(prog="oe-demo", description=__doc__.split("\n\n")[0].strip("`"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=16, help="image side in pixels (default 16)")
    args = parser.parse_args()
    for role, path in write_demo_folders(args.out, args.size).items():
        files = sum(1 for p in path.rglob("*") if p.is_file())
        print(f"{role:8s} {files:5d} images  {path}")


if __name__ == "__main__":
    main()
