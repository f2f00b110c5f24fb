import functools

import numpy as np
import pytest
import torch

from oe_lightning.data import OEDataModule
from oe_lightning.data.embedded import TensorImages, digits, sample_image_crops
from oe_lightning.data.synthetic import noise
from oe_lightning.errors import OEUserError


def tensor_set(n, label=0, shape=(1, 8, 8), source="", transform=None):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, *shape).clone()
    return TensorImages(images, torch.full((n,), label), transform, source=source)


def two_class_set(n, transform=None):
    """``tensor_set`` with labels 0, 1, 0, 1, ...: both classes of the 2-class classifier present."""
    data = tensor_set(n, transform=transform)
    data.labels = torch.arange(n) % 2
    return data


def make_dm(n_train=100, n_oe=50, batch_size=10, oe_batch_size=None, with_oe=True,
            val_fraction=0.1, ood=None, **kw):
    return OEDataModule(
        train=functools.partial(two_class_set, n_train), test=functools.partial(tensor_set, 20),
        num_classes=2, ood=ood or {"noise": functools.partial(tensor_set, 7, -1)},
        oe=functools.partial(tensor_set, n_oe, -1, source="oe") if with_oe else None,
        batch_size=batch_size, oe_batch_size=oe_batch_size, val_fraction=val_fraction, **kw)


@pytest.mark.parametrize("n_oe", [50, 5000])  # OE set smaller / larger than one epoch needs
def test_epoch_is_one_pass_over_the_id_loader_with_oe_batches_each_step(n_oe):
    dm = make_dm(n_oe=n_oe)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 9  # 90 training images after the 10% validation split
    for batch, _, _ in batches:
        x, y = batch["in"]
        assert x.shape[0] <= 10 and batch["oe"].shape == (20, 1, 8, 8)  # default 2 x batch
    seen_in = torch.cat([b["in"][0][:, 0, 0, 0] for b, _, _ in batches])
    assert sorted(seen_in.tolist()) == sorted(set(seen_in.tolist())) and len(seen_in) == 90
    seen_oe = torch.cat([b["oe"][:, 0, 0, 0] for b, _, _ in batches])
    if n_oe == 50:  # 180 draws cycle through the 45 OE training images (5 are held out)
        assert set(seen_oe.long().tolist()) == set(range(45))
    else:  # no OE image repeats within an epoch, and none of the 10 held-out ones is drawn
        assert len(set(seen_oe.tolist())) == len(seen_oe) and seen_oe.max() < n_oe - 10


@pytest.mark.parametrize("n_oe,held_out", [(50, 5), (5000, 10)])
def test_validation_holds_out_oe_images_as_an_ood_set(n_oe, held_out):
    dm = make_dm(n_oe=n_oe)
    dm.setup("fit")
    val_id, val_oe = dm.val_dataloader()
    assert len(val_id.dataset) == 10  # held out: len(val split), at most a tenth of the OE set
    oe_images = torch.cat([x[:, 0, 0, 0] for x, _ in val_oe])
    assert oe_images.long().tolist() == list(range(n_oe - held_out, n_oe))
    assert len(dm.oe_set) == n_oe - held_out
    no_val = make_dm(n_oe=n_oe, val_fraction=0.0)
    no_val.setup("fit")
    assert no_val.val_dataloader() == [] and len(no_val.oe_set) == n_oe  # nothing held out


def test_oe_draw_is_fresh_every_epoch():
    dm = make_dm(n_oe=5000, oe_batch_size=16)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = torch.cat([b["oe"][:, 0, 0, 0] for b, _, _ in loader])
    oe_sampler = loader.flattened[1].sampler
    oe_sampler.set_epoch(1)  # as Lightning does before every epoch
    second = torch.cat([b["oe"][:, 0, 0, 0] for b, _, _ in loader])
    assert first.shape == second.shape == (9 * 16,)
    assert not torch.equal(first, second)


def test_without_oe_batches_hold_only_id_data():
    dm = make_dm(with_oe=False)
    dm.setup("fit")
    batches = [b for b, _, _ in dm.train_dataloader()]
    assert len(batches) == 9 and all(set(b) == {"in"} for b in batches) and dm.oe_set is None


def test_validation_split_is_disjoint_and_fixed_by_seed():
    dm1, dm2 = make_dm(split_seed=3), make_dm(split_seed=3)
    dm1.setup("fit")
    dm2.setup("fit")
    assert dm1.val_set.indices == dm2.val_set.indices
    assert not set(dm1.val_set.indices) & set(dm1.train_set.indices)
    assert len(dm1.val_set) == 10
    dm3 = make_dm(split_seed=4)
    dm3.setup("fit")
    assert dm3.val_set.indices != dm1.val_set.indices


def test_test_loaders_are_the_held_out_split_then_id_then_each_ood_set():
    dm = make_dm()
    dm.setup("test")  # the held-out split (the temperature is tuned on it) and held-out OE come first
    loaders = dm.test_dataloader()
    assert [len(dl.dataset) for dl in loaders] == [10, 5, 20, 7]
    assert dm.test_names == ["val", "val_ood", "in", "noise"]
    assert dm.ood_names == ["noise"] and dm.test_set_sizes() == {"val": 10, "val_ood": 5, "in": 20, "noise": 7}
    no_val = make_dm(val_fraction=0.0)
    no_val.setup("test")
    assert [len(dl.dataset) for dl in no_val.test_dataloader()] == [20, 7] and no_val.test_names == ["in", "noise"]


def test_oe_source_used_as_ood_test_set_is_refused():
    dm = make_dm()
    dm.ood_factories["leak"] = functools.partial(tensor_set, 5, -1, source="oe")
    dm.setup("fit")
    with pytest.raises(OEUserError, match="also the OOD test set 'leak'"):
        dm.setup("test")


def test_bad_batch_size_and_val_fraction_are_named():
    with pytest.raises(OEUserError, match="batch_size must be a positive integer, got 0"):
        make_dm(batch_size=0)
    with pytest.raises(OEUserError, match="val_fraction must be in"):
        make_dm(val_fraction=1.5)


def test_digits_split_is_fixed_disjoint_and_complete():
    train, test = digits("train"), digits("test")
    assert len(train) + len(test) == 1797 and len(test) == 539
    assert train.images.shape[1:] == (1, 8, 8) and train.images.min() >= 0 and train.images.max() <= 1
    assert torch.equal(digits("test").images, test.images)
    assert not torch.equal(digits("test", split_seed=1).images, test.images)
    assert set(train.labels.tolist()) == set(range(10))


def test_sample_image_crops_are_fixed_by_seed_and_in_range():
    a = sample_image_crops("china.jpg", num_samples=20, seed=0)
    b = sample_image_crops("china.jpg", num_samples=20, seed=0)
    assert torch.equal(a.images, b.images) and a.images.shape == (20, 1, 8, 8)
    stretched = sample_image_crops("flower.jpg", num_samples=20, stretch=True, seed=1)
    assert torch.allclose(stretched.images.amax(dim=(1, 2, 3)), torch.ones(20))
    assert torch.allclose(stretched.images.amin(dim=(1, 2, 3)), torch.zeros(20))
    assert set(a.labels.tolist()) == {-1} and a.source != stretched.source
    with pytest.raises(ValueError, match="not one of scikit-learn's sample images"):
        sample_image_crops("lena.png")


def test_synthetic_sets_have_the_papers_ranges_and_statistics():
    g = noise("gaussian", 2000, (3, 8, 8), seed=0).images()
    assert g.min() >= -1 and g.max() <= 1 and abs(g.mean()) < 0.01
    assert g.std() == pytest.approx(0.4797, abs=0.01)  # N(0, 0.5) clipped at 2σ: 0.5·√0.9205
    r = noise("rademacher", 2000, (3, 8, 8), seed=0).images()
    assert set(r.unique().tolist()) == {-1.0, 1.0} and abs(r.mean()) < 0.01
    u = noise("uniform", 2000, (1, 8, 8), value_range=(0, 1)).images()
    assert u.min() >= 0 and u.max() <= 1 and u.mean() == pytest.approx(0.5, abs=0.01)
    b = noise("blobs", 500, (3, 32, 32), seed=0).images()
    assert b.min() == -1 and b.max() <= 1 and (b == -1).float().mean() > 0.3  # zeroed below 0.75
    assert ((b > -1) & (b < 0.5)).sum() == 0  # kept values were >= 0.75 before mapping
    assert noise("gaussian", 4, (1, 8, 8), value_range=(0, 1)).images().min() >= 0
    # the blur spans channels too (skimage's multichannel=False): channels are correlated
    b3 = (noise("blobs", 200, (3, 32, 32), seed=1).images() + 1) / 2
    corr = torch.corrcoef(torch.stack([b3[:, 0].flatten(), b3[:, 1].flatten()]))[0, 1]
    assert corr > 0.5
    # one image at a time from (seed, index): the same whatever else was drawn, never all in memory
    big = noise("gaussian", 52060, (3, 32, 32), seed=1)
    assert len(big) == 52060 and torch.equal(big[52059][0], noise("gaussian", 52060, (3, 32, 32), seed=1)[52059][0])


def _reference_draws(expression, n: int = 400, shape=(3, 32, 32)):
    """The reference's numpy expression evaluated here with a fixed numpy seed."""
    np.random.seed(0)
    return expression(n, shape)


# Each row: a suite's generator (the preset's config values) and the reference's expression from
# hendrycks/outlier-exposure, evaluated with numpy (its code is unseeded, so statistics are compared).
REFERENCE_GENERATORS = [
    ("cifar10_paper", "gaussian",  # CIFAR/test.py:189-190
     lambda n, s: np.clip(np.random.normal(size=(n, *s), scale=0.5), -1, 1)),
    ("cifar10_paper", "rademacher",  # CIFAR/test.py:201-202
     lambda n, s: np.random.binomial(n=1, p=0.5, size=(n, *s)).astype(np.float32) * 2 - 1),
    ("cifar10_paper", "blobs", None),  # CIFAR/test.py:211-217, sigma 1.5, * 2 - 1
    ("svhn_paper", "gaussian",  # SVHN/test.py:181-183
     lambda n, s: np.clip(np.random.normal(size=(n, *s), loc=0.5, scale=0.5), 0, 1)),
    ("svhn_paper", "bernoulli",  # SVHN/test.py:193-194
     lambda n, s: np.random.binomial(n=1, p=0.5, size=(n, *s)).astype(np.float32)),
    ("svhn_paper", "blobs", None),  # SVHN/test.py:203-209, sigma 1.5, no * 2 - 1
    ("tiny_imagenet_paper", "gaussian",  # TinyImageNet/test.py:185-186
     lambda n, s: np.clip(np.random.normal(size=(n, *s), scale=0.5), -1, 1)),
    ("tiny_imagenet_paper", "blobs", None),  # TinyImageNet/test.py:207-213, sigma 2
]
BLOB_REFERENCE = {"cifar10_paper": (1.5, True), "svhn_paper": (1.5, False), "tiny_imagenet_paper": (2.0, True)}


def _reference_blobs(n, shape, sigma, to_pm1):
    from scipy.ndimage import gaussian_filter

    c, h, w = shape
    data = np.float32(np.random.binomial(n=1, p=0.7, size=(n, h, w, c)))
    for i in range(n):  # skimage.filters.gaussian(img, sigma, multichannel=False): 3-D, 'nearest', truncate 4
        data[i] = gaussian_filter(data[i], sigma=sigma, mode="nearest", truncate=4.0)
        data[i][data[i] < 0.75] = 0.0
    data = data.transpose((0, 3, 1, 2))
    return data * 2 - 1 if to_pm1 else data


@pytest.mark.parametrize("suite,name,expression", REFERENCE_GENERATORS)
def test_every_paper_generator_matches_the_reference_statistics(suite, name, expression):
    from hydra.utils import instantiate

    from tests.test_config import compose_train

    data = {"cifar10_paper": "cifar10", "svhn_paper": "svhn", "tiny_imagenet_paper": "tiny_imagenet"}[suite]
    cfg = compose_train(f"data={data}", f"ood={suite}")
    ours_ds = instantiate(cfg.ood[name])(transform=None)
    shape = tuple(cfg.data.image_shape)
    n = 400 if shape[1] == 32 else 150
    ours = ours_ds.images(n).numpy().astype(np.float64)
    if expression is None:
        sigma, to_pm1 = BLOB_REFERENCE[suite]
        assert cfg.ood[name].blur_sigma == sigma
        ref = _reference_draws(lambda k, s: _reference_blobs(k, s, sigma, to_pm1), n, shape)
    else:
        ref = _reference_draws(expression, n, shape)
    lo, hi = float(ref.min()), 1.0  # every generator's values lie in [lo, 1]
    assert ours.min() >= lo - 1e-6 and ours.max() <= hi + 1e-6
    assert ours.mean() == pytest.approx(ref.mean(), abs=0.01)
    assert ours.std() == pytest.approx(ref.std(), abs=0.01)
    for edge in (lo, hi):  # the same fraction clipped to (or sitting at) each end of the range
        assert np.isclose(ours, edge).mean() == pytest.approx(np.isclose(ref, edge).mean(), abs=0.01)
    if expression is None:  # the fraction of Blobs pixels on
        assert (ours > lo).mean() == pytest.approx((ref > lo).mean(), abs=0.01)


def test_a_validation_ood_set_of_its_own_replaces_the_oe_hold_out():
    dm = make_dm(n_oe=50, val_ood=functools.partial(tensor_set, 13, -1, source="val-outliers"))
    dm.setup("fit")
    val_id, val_ood = dm.val_dataloader()
    assert len(val_ood.dataset) == 13 and len(dm.oe_set) == 50  # every OE image trains
    leaky = make_dm(val_ood=functools.partial(tensor_set, 13, -1, source="noise-src"),
                    ood={"noise": functools.partial(tensor_set, 7, -1, source="noise-src")})
    leaky.setup("fit")
    with pytest.raises(OEUserError, match="validation OOD set .* is also the OOD test set 'noise'"):
        leaky.setup("test")


def test_pin_memory_applies_only_where_batches_go_to_a_cuda_device(monkeypatch):
    """data.pin_memory=true (the image configs) on a CPU run: no pinned memory and no torch warning."""
    import warnings

    dm = make_dm(pin_memory=True)
    dm.setup("fit")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = dm.val_dataloader()
        next(iter(loader[0] if isinstance(loader, list) else loader))
    assert (loader[0] if isinstance(loader, list) else loader).pin_memory is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader = dm.val_dataloader()
    assert (loader[0] if isinstance(loader, list) else loader).pin_memory is True
