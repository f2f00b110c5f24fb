"""Batch augmentation draws what torchvision's per-image RandomCrop / RandomHorizontalFlip draw."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from oe_lightning.data.batch_augment import BatchAugment, splitmix64, uniform_from_seeds

MASK = (1 << 64) - 1


def _splitmix64_reference(x: int) -> int:
    """SplitMix64's output function on Python ints (Steele et al. 2014), the oracle."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_the_int64_hash_is_splitmix64_on_any_seed():
    rng = random.Random(0)
    seeds = [0, 1, 2**62, 2**63 - 1, *(rng.randrange(2**63) for _ in range(200))]
    got = splitmix64(torch.tensor(seeds, dtype=torch.int64)).tolist()
    assert [g & MASK for g in got] == [_splitmix64_reference(s) for s in seeds]
    u = uniform_from_seeds(torch.tensor(seeds), 0)
    assert bool(((u >= 0) & (u < 1)).all())


def test_each_image_is_torchvisions_pad_crop_and_flip_at_its_own_parameters():
    """Pixel for pixel: pad with a zero pixel as Normalize maps it, crop at (top, left), flip."""
    mean, std = [0.5, 0.2, 0.1], [0.25, 0.5, 2.0]
    augment = BatchAugment(size=8, padding=2, flip=True, mean=mean, std=std)
    raw = torch.rand(16, 3, 8, 8)
    images = TF.normalize(raw, mean, std)
    seeds = torch.arange(16) * 7919
    out = augment(images, seeds)
    top, left, flipped = augment.params(seeds, 8, 8)
    for i in range(16):
        x = TF.hflip(raw[i]) if flipped[i] else raw[i]
        expected = TF.normalize(TF.crop(TF.pad(x, [2]), int(top[i]), int(left[i]), 8, 8), mean, std)
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-6)
    assert torch.equal(augment(images, seeds), out)  # a function of the seeds alone


def _offsets_of(crops: torch.Tensor, size: int) -> list[tuple[int, int]]:
    """Each crop's shift from the centre, read from its middle pixel in a position-coded image
    (value = 1 + row * 100 + column): ``(top - padding, left - padding)``."""
    out = []
    for c in crops:
        row, col = divmod(int(c[0, size // 2, size // 2].item()) - 1, 100)
        out.append((row - size // 2, col - size // 2))
    return out


@pytest.mark.parametrize("size,padding", [(8, 1), (32, 4)])
def test_offsets_and_flips_follow_torchvisions_distribution(size, padding):
    """4,000 draws each: every crop offset in [0, 2p]^2 appears, with frequencies within 5 sigma of
    uniform for both, and flips half the time, as RandomCrop(size, padding) + RandomHorizontalFlip."""
    n = 4000
    image = (torch.arange(size)[:, None] * 100 + torch.arange(size)[None, :] + 1.0)[None]
    torch.manual_seed(0)
    crop = v2.RandomCrop(size, padding=padding)
    theirs = _offsets_of(torch.stack([crop(image) for _ in range(n)]), size)
    ours_aug = BatchAugment(size=size, padding=padding)
    ours = _offsets_of(ours_aug(image.expand(n, 1, size, size).clone(), torch.arange(n) * 104729 + 3), size)
    cells = (2 * padding + 1) ** 2
    expected = n / cells
    sigma = (n * (1 / cells) * (1 - 1 / cells)) ** 0.5
    for draws in (theirs, ours):
        counts = {}
        for top_left in draws:
            counts[top_left] = counts.get(top_left, 0) + 1
        assert set(counts) == {(r - padding, c - padding) for r in range(2 * padding + 1)
                               for c in range(2 * padding + 1)}
        assert all(abs(c - expected) < 5 * sigma for c in counts.values()), counts
    flips = BatchAugment(flip=True).params(torch.arange(n) * 15485863, size, size)[2].float().mean()
    assert abs(float(flips) - 0.5) < 5 * (0.25 / n) ** 0.5


def test_training_batches_of_the_default_data_are_augmented_per_batch(tmp_path):
    """The default digits run loads its training images plainly (test transform) with their seeds,
    and crops them on the device, in the DataModule's on_after_batch_transfer."""
    from oe_lightning.building import build_datamodule
    from tests.conftest import hydra_job

    with hydra_job("train", ["data.num_workers=0", "data.resident=false"], tmp_path) as cfg:
        dm = build_datamodule(cfg, with_oe=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))[0]
    x, y, seeds = batch["in"]
    x_oe, seeds_oe = batch["oe"]
    assert x.shape[1:] == (1, 8, 8) and seeds.dtype == torch.int64 and len(seeds_oe) == len(x_oe)

    class Training:
        training = True

    dm.trainer = Training()
    out = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(out["in"][1], y) and out["in"][0].shape == x.shape and out["oe"].shape == x_oe.shape
    assert not torch.equal(out["in"][0], x)  # cropped: most images moved by a pixel
    assert torch.equal(out["in"][0], dm.batch_augment["in"](x, seeds))
    # the OE images too (the paper augments both: CIFAR/oe_tune.py:84-86), each by its own seed
    assert not torch.equal(out["oe"], x_oe)
    assert torch.equal(out["oe"], dm.batch_augment["oe"](x_oe, seeds_oe))


def test_a_batch_is_fetched_in_one_call_and_equals_the_images_one_by_one():
    """TensorImages gathers a batch at once (Normalize applied to the batch); through Subset,
    ImagesOnly and SeededSamples the items equal those fetched image by image, bit for bit."""
    from torch.utils.data import Subset
    from torchvision.transforms import v2

    from oe_lightning.data.datamodule import ImagesOnly
    from oe_lightning.data.embedded import digits
    from oe_lightning.data.samplers import SeededSamples

    normalize = v2.Normalize([0.305], [0.376])
    for wrap in (lambda d: d, ImagesOnly):
        data = SeededSamples(Subset(wrap(digits("train", transform=normalize)), list(range(5, 300))), 7,
                             with_seed=True)
        keys = [(3, i) for i in (0, 17, 4, 250, 17)]
        batched, single = data.__getitems__(keys), [data[k] for k in keys]
        assert len(batched) == len(single)
        for a, b in zip(batched, single, strict=True):
            assert len(a) == len(b) and torch.equal(a[0], b[0]) and a[1:] == b[1:]


def _first_training_batch(tmp_path, *overrides):
    from oe_lightning.building import build_datamodule
    from tests.conftest import hydra_job

    with hydra_job("train", ["data.num_workers=0", *overrides], tmp_path) as cfg:
        dm = build_datamodule(cfg, with_oe=True)
    dm.setup("fit")

    class Training:
        training = True

    dm.trainer = Training()
    raw = next(iter(dm.train_dataloader()))[0]
    return dm, raw, dm.on_after_batch_transfer(raw, 0)


def test_resident_images_give_the_loaded_batches_bit_for_bit(tmp_path):
    """data.resident=true: the loaders carry (index, seed) pairs; gathered and cropped on the device,
    the batch is the one the loader path builds from the same seeds."""
    dm, raw, resident = _first_training_batch(tmp_path / "a", "data.resident=true")
    _, _, loaded = _first_training_batch(tmp_path / "b", "data.resident=false")
    index, seeds = raw["in"]
    assert index.dtype == seeds.dtype == torch.int64 and index.ndim == 1 and len(raw["oe"]) == 2
    assert set(dm.resident_sets) == {"in", "oe"} and len(dm.resident_sets["in"]) == len(dm.train_set)
    assert dm.resident_sets["in"].images.dtype == torch.float32  # the digits load as floats: kept as they load
    assert torch.equal(resident["in"][0], loaded["in"][0]) and torch.equal(resident["in"][1], loaded["in"][1])
    assert torch.equal(resident["oe"], loaded["oe"])


@pytest.mark.slow
def test_a_resident_run_trains_the_same_weights_as_a_loaded_one(tmp_path):
    from tests.conftest import train_in_process

    train_in_process(tmp_path / "loaded", "trainer.max_epochs=2", "data.resident=false")
    train_in_process(tmp_path / "resident", "trainer.max_epochs=2", "data.resident=true")
    loaded, resident = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                        for run in ("loaded", "resident"))
    assert all(torch.equal(loaded[k], resident[k]) for k in loaded)


def test_resident_images_over_the_memory_limit_are_refused_before_reading(tmp_path):
    from oe_lightning.errors import OEUserError

    with pytest.raises(OEUserError, match=r"1,132 in training images .* over data.resident_max_gb=1e-06"):
        _first_training_batch(tmp_path, "data.resident=true", "data.resident_max_gb=0.000001")


@pytest.mark.parametrize("data", ["cifar10", "svhn"])
def test_speed_resident_keeps_uint8_images_and_gives_the_loaded_batches_bit_for_bit(tmp_path, data):
    """speed=resident on CIFAR-10 / SVHN files and a 300K-format OE array: the training images are
    kept as uint8 (a quarter of float32), finished (to float, normalised) per batch on the device,
    and every batch of an epoch equals the one the loaders build from the same (index, seed)."""
    import numpy as np

    from tests.formats import write_cifar10, write_svhn

    sums = write_cifar10(tmp_path) if data == "cifar10" else write_svhn(tmp_path, "train", n=21)
    np.save(tmp_path / "oe.npy", np.random.default_rng(0).integers(0, 256, (70, 32, 32, 3), dtype=np.uint8))
    checksums = "{" + ",".join(f"{k}:{v}" for k, v in sums.items()) + "}"
    common = [f"data={data}", "oe=random_300k", f"oe.path={tmp_path / 'oe.npy'}", f"paths.data_dir={tmp_path}",
              f"data.checksums={checksums}", "data.batch_size=4", "data.oe_batch_size=8", "data.pin_memory=false",
              "speed=resident", *(["data.train.split=train"] if data == "svhn" else [])]
    batches = {}
    for resident in (True, False):
        dm, _, _ = _first_training_batch(tmp_path / str(resident), *common, f"data.resident={resident}")
        batches[resident] = [dm.on_after_batch_transfer(b[0], 0) for b in dm.train_dataloader()]
        if resident:
            images = dm.resident_sets
            assert images["in"].images.dtype == images["oe"].images.dtype == torch.uint8
            assert images["in"].images.shape == (20 if data == "cifar10" else 21, 3, 32, 32)
            assert images["oe"].nbytes == 70 * 3 * 32 * 32
    assert len(batches[True]) == len(batches[False]) == (5 if data == "cifar10" else 6)
    for a, b in zip(batches[True], batches[False], strict=True):
        assert a["in"][0].dtype == torch.float32 and torch.equal(a["in"][0], b["in"][0])
        assert torch.equal(a["in"][1], b["in"][1]) and torch.equal(a["oe"], b["oe"])
    first = batches[True][0]["in"][0]
    if data == "svhn":  # no normalisation: [0, 1]
        assert first.shape == (4, 3, 32, 32) and float(first.min()) >= 0 and float(first.max()) <= 1
    else:  # normalised: a black pixel is -mean/std
        assert float(first.min()) < -1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs it)")
def test_a_resident_batch_is_gathered_and_augmented_on_the_gpu_without_waiting_for_it():
    """uint8 images on the GPU, finished by the test transform and cropped per batch: torch's sync
    debug mode raises on any host-device synchronisation; the result equals the CPU's."""
    from oe_lightning.data.resident import ResidentImages
    from oe_lightning.data.transforms import to_float_image

    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    finish = v2.Compose([to_float_image(), v2.Normalize(mean, std)])
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    resident = ResidentImages(images, torch.arange(64), finish)
    augment = BatchAugment(32, 4, True, mean, std)
    index, seeds = torch.arange(0, 64, 3), torch.arange(22) * 7919
    expected = augment(resident.gather(index)[0], seeds)
    index_gpu, seeds_gpu = index.cuda(), seeds.cuda()
    resident.gather(index_gpu), augment(resident.gather(index_gpu)[0], seeds_gpu)  # first use: copies in
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = augment(resident.gather(index_gpu)[0], seeds_gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(batch.cpu(), expected, rtol=0, atol=1e-6)
