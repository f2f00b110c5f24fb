"""Loaders read tiny files written in each real on-disk format."""

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from oe_lightning.data.large_oe import NpyImages, TinyImages
from oe_lightning.data.samplers import ExactShardSampler, OESampler
from oe_lightning.data.vision import CIFAR_MEAN, CIFAR_STD, cifar, image_folder, svhn
from oe_lightning.errors import OEUserError
from tests.formats import write_cifar10, write_cifar100, write_svhn, write_tiny_images

TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
CIFAR_TEST = v2.Compose([TO_TENSOR, v2.Normalize(CIFAR_MEAN, CIFAR_STD)])


def test_cifar10_reads_the_python_pickles_with_labels_and_normalisation(tmp_path):
    sums = write_cifar10(tmp_path)
    train = cifar(tmp_path, "cifar10", "train", transform=CIFAR_TEST, checksums=sums)
    test = cifar(tmp_path, "cifar10", "test", transform=CIFAR_TEST, checksums=sums)
    assert len(train) == 20 and len(test) == 6
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    raw = test.data[0]  # (32, 32, 3) uint8 as decoded by torchvision
    expected = (torch.tensor(raw[0, 0] / 255.0) - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    assert torch.allclose(x[:, 0, 0], expected.float(), atol=1e-5)
    assert y == test.targets[0] and 0 <= y < 10


def test_cifar_integrity_check_still_runs_on_the_files(tmp_path):
    write_cifar10(tmp_path)  # torchvision's published md5s do not match these tiny files
    with pytest.raises(OEUserError, match=r"cifar10 was not found or failed its integrity check.*"
                                          r"cifar-10-batches-py.*prepare_data.py cifar10"):
        cifar(tmp_path, "cifar10", "train")


def test_cifar100_fine_labels(tmp_path):
    sums = write_cifar100(tmp_path)
    train = cifar(tmp_path, "cifar100", "train", transform=CIFAR_TEST, checksums=sums)
    assert len(train) == 8 and train[3][1] == train.targets[3] and max(train.targets) < 100


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    sums = write_svhn(tmp_path, "train", n=7)
    sums |= write_svhn(tmp_path, "extra", n=3, seed=5)
    train = svhn(tmp_path, "train", transform=TO_TENSOR, checksums=sums)
    assert len(train) == 7 and train[0][1] == 0 and set(train.labels.tolist()) <= set(range(10))
    x, _ = train[1]
    assert x.shape == (3, 32, 32) and x.min() >= 0 and x.max() <= 1  # SVHN stays unnormalised
    assert len(svhn(tmp_path, "train+extra", transform=TO_TENSOR, checksums=sums)) == 10
    with pytest.raises(OEUserError, match="test_32x32.mat|svhn"):
        svhn(tmp_path, "test", checksums=sums)


def test_image_folder_and_its_missing_error(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "lsun" / cls).mkdir(parents=True)
        Image.fromarray(np.full((36, 36, 3), 200, np.uint8)).save(tmp_path / "lsun" / cls / "0.png")
    folder = image_folder(tmp_path / "lsun", transform=v2.Compose([v2.CenterCrop(32), TO_TENSOR]))
    assert len(folder) == 2 and folder[0][0].shape == (3, 32, 32)
    assert folder[1][0].mean().item() == pytest.approx(200 / 255, abs=1e-6)
    with pytest.raises(OEUserError, match="iSUN was not found"):
        image_folder(tmp_path / "iSUN")


def test_tiny_images_reads_column_major_records_by_seek_and_skips_excluded(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "tiny_images.bin"
    write_tiny_images(path, images)
    exclude = tmp_path / "80mn_cifar_idxs.txt"
    exclude.write_text("4\n6\n")  # 1-based, as the paper's file: records 3 and 5
    tiny = TinyImages(path, exclude_file=exclude)
    assert len(tiny) == 12
    assert np.array_equal(np.asarray(tiny[0][0]), images[0]) and tiny[0][1] == -1
    assert np.array_equal(np.asarray(tiny[13][0]), images[1])  # indices wrap around
    for _ in range(20):
        got = np.asarray(tiny[3][0])  # excluded: replaced by a random other record
        assert not np.array_equal(got, images[3]) and not np.array_equal(got, images[5])
    # every record a whole epoch serves, from any offset: never one of the excluded
    served = {bytes(np.asarray(tiny[i][0]).tobytes()) for i in range(200)}
    assert images[3].tobytes() not in served and images[5].tobytes() not in served
    assert {images[i].tobytes() for i in (0, 1, 2, 4, 6, 11)} <= served
    with pytest.raises(OEUserError, match="tiny_images was not found"):
        TinyImages(tmp_path / "nope.bin")
    exclude.write_text("0\n6\n")
    with pytest.raises(OEUserError, match="count from 1"):
        TinyImages(path, exclude_file=exclude)


def test_oe_sampler_modes():
    torch.manual_seed(0)
    cycled = list(OESampler(10, 25))
    assert len(cycled) == 25 and sorted(cycled[:10]) == list(range(10))
    offset = list(OESampler(100, 7, mode="offset"))
    assert [(b - a) % 100 for a, b in zip(offset, offset[1:], strict=False)] == [1] * 6
    huge = list(OESampler(79_302_017, 1000))
    assert len(huge) == 1000 and max(huge) < 79_302_017
    sampler = OESampler(1000, 50, seed=0)
    first = list(sampler)
    assert list(sampler) == first  # the same epoch draws the same stream (every rank agrees)
    sampler.set_epoch(1)
    assert list(sampler) != first  # a fresh draw every epoch
    with pytest.raises(ValueError, match="one of \\('shuffle', 'offset', 'sequential'\\), got 'random'"):
        OESampler(10, 5, mode="random")


@pytest.mark.parametrize("mode", ["shuffle", "offset"])
def test_oe_sampler_shards_one_epoch_stream_disjointly_across_ranks(mode):
    ranks = [OESampler(1000, 64, mode, seed=7, num_replicas=2, rank=r) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    shards = [list(s) for s in ranks]
    assert [len(s) for s in shards] == [64, 64] and not set(shards[0]) & set(shards[1])
    whole = OESampler(1000, 128, mode, seed=7)
    whole.set_epoch(3)
    assert sorted(shards[0] + shards[1]) == sorted(whole)  # together: the single-process draw


def test_exact_shards_cover_every_index_once_without_padding():
    from torch.utils.data import DistributedSampler

    shards = [list(ExactShardSampler(11, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    assert [len(ExactShardSampler(11, 3, r)) for r in range(3)] == [4, 4, 3]
    padded = [list(DistributedSampler(range(11), 3, r, shuffle=False)) for r in range(3)]
    assert sum(map(len, padded)) == 12  # what torch's sampler would score: one image twice


@pytest.mark.slow
def test_npy_images_iterate_with_two_workers_without_materialising_the_array(tmp_path):
    """A 74 MB uint8 array (295 MB as float32): worker memory must stay far below that."""
    path = tmp_path / "300K_random_images.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(24000, 32, 32, 3))
    arr[:] = 7
    arr.flush()
    del arr
    script = textwrap.dedent(f"""
        import resource, torch
        from torch.utils.data import DataLoader
        from torchvision.transforms import v2
        from oe_lightning.data.large_oe import NpyImages
        t = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        ds = NpyImages({str(path)!r}, transform=t)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        total = 0.0
        for x, _ in DataLoader(ds, batch_size=500, num_workers=2):
            total += float(x.sum())
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(before // 1024, child // 1024, round(total / (24000 * 3072) * 255))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    parent_mb, worker_peak_mb, mean_pixel = map(int, out.stdout.split())
    assert mean_pixel == 7  # every image was read
    # a worker starts as a fork of the parent; touching its half of the map adds ~62 MB
    assert worker_peak_mb - parent_mb < 150, (parent_mb, worker_peak_mb)  # float32 copy: +295
    ds = NpyImages(path)
    assert isinstance(ds.data, np.memmap) and len(ds) == 24000


def test_prepare_reports_what_is_present_and_how_to_get_the_rest(tmp_path):
    from oe_lightning.data.prepare import prepare

    (tmp_path / "dtd" / "images" / "banded").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "dtd" / "images" / "banded" / "a.png")
    rows = {name: (status, detail) for name, status, detail in
            prepare(["textures", "random_300k", "cifar10"], tmp_path, download=False)}
    assert rows["textures"] == ("ok", "")
    assert rows["random_300k"][0] == "missing" and "300K_random_images.npy" in rows["random_300k"][1]
    assert rows["cifar10"][0] == "missing" and "cifar-10-batches-py" in rows["cifar10"][1]
    with pytest.raises(OEUserError, match="Unknown dataset"):
        prepare(["mnist"], tmp_path)


def test_datamodule_prepare_data_builds_only_datasets_set_to_download():
    import functools

    from oe_lightning.data import OEDataModule

    calls = []

    def factory(name, transform=None, download=False):
        calls.append(name)

    dm = OEDataModule(train=functools.partial(factory, "train", download=True),
                      test=functools.partial(factory, "test"), num_classes=2,
                      ood={"svhn": functools.partial(factory, "svhn", download=True)})
    dm.prepare_data()
    assert calls == ["train", "svhn"]


def test_prepare_data_script_offline_says_what_it_could_not_fetch_and_leaves_no_files(tmp_path, monkeypatch,
                                                                                      capsys):
    """`python scripts/prepare_data.py` without network: a table and exit 1, no traceback, no data dir."""
    import runpy
    import sys
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data_dir = tmp_path / "data"
    monkeypatch.setattr(sys, "argv", ["prepare_data.py", "cifar10", "svhn", "textures",
                                      "--data-dir", str(data_dir)])
    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_data.py"
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 1
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("could not download") == 2 and "Name or service not known" in out
    assert "cifar-10-python.tar.gz" in out and "extra_32x32.mat" in out and "dtd/images" in out
    assert not data_dir.exists()  # the failed downloads left nothing behind


def test_lsun_test_set_reads_its_lmdb_and_resizes_like_the_paper(tmp_path):
    """LSUN's test set is an LMDB of WebP images (the paper's lsun_loader, classes='test')."""
    from oe_lightning.data.vision import LSUNTest
    from tests.formats import write_lsun_test_lmdb

    write_lsun_test_lmdb(tmp_path / "lsun", n=7, size=40)
    a, b = LSUNTest(tmp_path / "lsun"), LSUNTest(tmp_path / "lsun", resize=64)  # two readers in one process
    assert len(a) == len(b) == 7
    image, label = a[6]
    assert image.size == (32, 32) and label == -1  # Resize(32) + CenterCrop(32) of a 40x48 image
    assert b[0][0].size == (64, 64)
    with pytest.raises(OEUserError, match="lsun was not found.*test_lmdb"):
        LSUNTest(tmp_path / "elsewhere")


def test_held_out_split_random_tail_or_numpy_shuffle_as_the_references():
    """val_split=tail: the last images in order (utils/validation_dataset.py:29-30, the paper's CIFAR
    and SVHN calibration runs); numpy_shuffle: np.random.seed(0) + shuffle(arange(n)), the first
    int(n * 0.9) train (:63-71, Tiny ImageNet); both the size the paper holds out (App. G.2)."""
    from oe_lightning.data import OEDataModule
    from oe_lightning.data.embedded import TensorImages

    images = TensorImages(torch.rand(1000, 1, 2, 2), torch.arange(1000) % 10)
    split = {}
    for mode in ("random", "tail", "numpy_shuffle"):
        dm = OEDataModule(train=images, test=images, num_classes=10, val_fraction=0.1, val_split=mode)
        dm.setup("fit")
        split[mode] = (list(dm.train_set.indices), list(dm.val_set.indices))
        assert len(split[mode][1]) == 100 and sorted(split[mode][0] + split[mode][1]) == list(range(1000))
    assert split["tail"] == (list(range(900)), list(range(900, 1000)))
    np.random.seed(0)  # the reference's own calls, as the oracle
    perm = np.asarray(range(1000))
    np.random.shuffle(perm)
    assert split["numpy_shuffle"] == (perm[:900].tolist(), perm[900:].tolist())
    assert split["random"][1] != split["tail"][1]
    dm = OEDataModule(train=images, test=images, num_classes=10, val_size=37, val_split="tail")
    dm.setup("test")  # the held-out split is built for testing too: the temperature is tuned on it
    assert list(dm.val_set.indices) == list(range(963, 1000)) and dm.test_names == ["val", "in"]
    with pytest.raises(OEUserError, match="val_size=1000 must be in"):
        OEDataModule(train=images, test=images, num_classes=10, val_size=1000).setup("fit")
    with pytest.raises(OEUserError, match="data.val_split must be one of"):
        OEDataModule(train=images, test=images, num_classes=10, val_split="last")


def test_image_folders_skip_unreadable_files_naming_them_and_scale_16_bit_images(tmp_path, caplog):
    """A file that is not an image is left out at construction (one warning naming it; strict=True:
    an error listing it, before any training); a JPEG that fails to decode is replaced by the next
    image with a warning naming it; a 16-bit PNG keeps its grey level (PIL alone would clip it white)."""
    import logging

    from oe_lightning.data.vision import image_folder

    folder = tmp_path / "oe" / "things"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(folder / "a_good.png")
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(folder / "b_sixteen.png")  # mode I;16
    good_jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good_jpeg, "JPEG")
    (folder / "c_truncated.jpg").write_bytes(good_jpeg.getvalue()[:len(good_jpeg.getvalue()) // 2])  # cut pixels
    (folder / "d_notes.jpg").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="oe_lightning"):
        dataset = image_folder(tmp_path / "oe")
    assert len(dataset) == 3 and "skipped 1 unreadable file(s) of 4" in caplog.text and "d_notes.jpg" in caplog.text
    assert np.asarray(dataset[0][0]).max() == 200
    assert abs(int(np.asarray(dataset[1][0]).mean()) - 127) <= 1  # 32768 / 65535 of full scale
    with caplog.at_level(logging.WARNING, logger="oe_lightning"):
        served = dataset[2][0]  # the truncated JPEG: the next readable image (wrapping round) instead
    assert np.asarray(served).max() == 200 and "c_truncated.jpg" in caplog.text
    with pytest.raises(OEUserError, match="1 files under .* are not readable images: .*d_notes.jpg"):
        image_folder(tmp_path / "oe", strict=True)


def test_each_cifar_file_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    """The train, held-out, fit and test views of CIFAR each construct a torchvision dataset; the md5
    of an unchanged file is computed once, a file modified since is hashed (and checked) again."""
    import os

    import torchvision.datasets.cifar as tv_cifar

    calls = []
    real = tv_cifar.check_integrity
    def counted(path, *args, **kwargs):  # the tiny label-names file (batches.meta) is not counted
        if not str(path).endswith("batches.meta"):
            calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tv_cifar, "check_integrity", counted)
    sums = write_cifar10(tmp_path)
    for split in ("train", "train", "test", "train"):
        cifar(tmp_path, "cifar10", split, checksums=sums)
    assert len(calls) == 6  # 5 train batches + the test batch, once each
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 10**9))
    cifar(tmp_path, "cifar10", "test", checksums=sums)
    assert len(calls) == 12  # changed since: checked again
    batch.write_bytes(batch.read_bytes()[:-10])  # and a damaged file is still refused
    with pytest.raises(OEUserError, match="failed its integrity check"):
        cifar(tmp_path, "cifar10", "train", checksums=sums)
