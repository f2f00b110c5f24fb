"""The paper's presets: compose, and run (fast_dev_run) on tiny files in the real formats."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oe_lightning.models import wrn_16_4, wrn_40_2
from tests.conftest import train_in_process
from tests.formats import write_cifar10, write_cifar100, write_lsun_test_lmdb, write_svhn, write_tiny_images
from tests.test_config import compose_train, options

TEXT_DATA = ("sst_", "20ng_", "trec_")  # the text presets: tests/test_text.py
PRESETS = [f"paper/{p}" for p in options("experiment/paper") if not p.startswith(TEXT_DATA)]


# The OOD sets each paper preset evaluates, in the reference's order: exactly the sets its
# published mean is over (hendrycks/outlier-exposure).
PAPER_SUITES = {
    # CIFAR/test.py:188-273, mean over 8 at l.284-285
    "cifar10_paper": ["gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun", "cifar100"],
    "cifar100_paper": ["gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun", "cifar10"],
    # SVHN/test.py:180-276, mean over 9 at l.285-286
    "svhn_paper": ["gaussian", "bernoulli", "blobs", "icons50", "textures", "places365", "lsun", "cifar10",
                   "street_letters"],
    # TinyImageNet/test.py:184-267, mean over 8 at l.277-278
    "tiny_imagenet_paper": ["gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun",
                            "imagenet_heldout"],
    # wetliu/energy_ood CIFAR/test.py:234-279, mean over 6 at l.287-288
    "cifar10_energy": ["textures", "svhn", "places365", "lsun_crop", "lsun_resize", "isun"],
    "cifar100_energy": ["textures", "svhn", "places365", "lsun_crop", "lsun_resize", "isun"],  # same test.py
}
# (suite, set) -> the generator's parameters, cited
GENERATORS = {
    ("cifar10_paper", "gaussian"): dict(num_samples=20000, value_range=[-1, 1], loc=0.0, scale=0.5,
                                        clip=[-1, 1]),  # CIFAR/test.py:189-190
    ("cifar10_paper", "rademacher"): dict(num_samples=20000, value_range=[-1, 1], p=0.5),  # CIFAR/test.py:201-202
    ("cifar10_paper", "blobs"): dict(num_samples=20000, value_range=[-1, 1], p=0.7, blur_sigma=1.5,
                                     threshold=0.75),  # CIFAR/test.py:211-217
    ("svhn_paper", "gaussian"): dict(num_samples=52060, value_range=[0, 1], loc=0.5, scale=0.5,
                                     clip=[0, 1]),  # SVHN/test.py:181-183
    ("svhn_paper", "bernoulli"): dict(num_samples=52060, value_range=[0, 1], p=0.5),  # SVHN/test.py:193-194
    ("svhn_paper", "blobs"): dict(num_samples=52060, value_range=[0, 1], p=0.7, blur_sigma=1.5,
                                  threshold=0.75),  # SVHN/test.py:203-209
    ("tiny_imagenet_paper", "gaussian"): dict(num_samples=20000, value_range=[-1, 1], loc=0.0, scale=0.5,
                                              clip=[-1, 1]),  # TinyImageNet/test.py:185-186
    ("tiny_imagenet_paper", "blobs"): dict(num_samples=20000, value_range=[-1, 1], p=0.7, blur_sigma=2.0,
                                           threshold=0.75),  # TinyImageNet/test.py:207-213
}


@pytest.mark.parametrize("preset", [p.split("/")[1] for p in PRESETS])
def test_each_paper_preset_evaluates_exactly_the_papers_sets_with_the_papers_rule(preset):
    cfg = compose_train(f"experiment=paper/{preset}", "module.pretrained=x.ckpt")
    suite = next(s for s in PAPER_SUITES if s.startswith(preset.rsplit("_", 2)[0] + "_") and
                 ("energy" in s) == ("energy" in preset))
    assert list(cfg.ood) == PAPER_SUITES[suite]
    assert cfg.evaluation.fpr_rule == "nearest"  # utils/display_results.py:64 argmin |recall - 0.95|
    # experiments/*test.sh: --num_to_avg 10
    assert cfg.evaluation.protocol == "paper" and cfg.evaluation.num_to_avg == 10
    for (s, name), params in GENERATORS.items():
        if s == suite:
            node = cfg.ood[name]
            assert {k: node[k] for k in params} == params, (suite, name)
            assert node.input_space is True  # never normalised in the reference


def test_every_paper_preset_composes_with_the_papers_hyperparameters():
    assert len(PRESETS) == 14
    for preset in PRESETS:
        cfg = compose_train(f"experiment={preset}", "module.pretrained=x.ckpt")
        assert cfg.module.optimizer.nesterov and cfg.module.optimizer.momentum == 0.9
        assert cfg.module.optimizer.weight_decay == 5e-4 and cfg.evaluation.protocol == "paper"
        oe_batch = 180 if "tiny_imagenet_oe_tune" in preset or "tiny_imagenet_baseline" in preset else 256
        assert (cfg.data.batch_size, cfg.data.oe_batch_size) == (128, oe_batch)
        # fp32 as the reference (no autocast or .half() in hendrycks/outlier-exposure), even on trainer=gpu
        gpu = compose_train(f"experiment={preset}", "trainer=gpu", "module.pretrained=x.ckpt")
        assert gpu.trainer.precision == "32-true" and gpu.trainer.accelerator == "gpu"
    c10 = compose_train("experiment=paper/cifar10_oe_tune", "module.pretrained=x.ckpt")
    assert (c10.trainer.max_epochs, c10.module.optimizer.lr, c10.loss.lambda_oe) == (10, 0.001, 0.5)
    assert c10.model._target_.endswith("wrn_40_2") and c10.model.drop_rate == 0.3
    assert c10.oe._target_.endswith("TinyImages") and "cifar100" in c10.ood
    base = compose_train("experiment=paper/cifar10_baseline")
    assert (base.trainer.max_epochs, base.module.optimizer.lr, base.loss.lambda_oe) == (100, 0.1, 0)
    sv = compose_train("experiment=paper/svhn_oe_tune", "module.pretrained=x.ckpt")
    assert (sv.trainer.max_epochs, sv.module.optimizer.lr) == (5, 1e-4)
    assert sv.model._target_.endswith("wrn_16_4") and sv.model.drop_rate == 0.4
    assert sv.ood.gaussian.value_range == [0, 1] and sv.data.train.split == "train+extra"
    tin = compose_train("experiment=paper/tiny_imagenet_oe_tune", "module.pretrained=x.ckpt")
    assert tin.data.oe_batch_size == 180 and tin.data.num_classes == 200
    assert tin.oe.root.endswith("imagenet22k_minus_1k")
    energy = compose_train("experiment=paper/cifar10_energy_tune", "module.pretrained=x.ckpt")
    assert (energy.loss.fn.m_in, energy.loss.fn.m_out, energy.loss.lambda_oe) == (-23.0, -5.0, 0.1)
    e100 = compose_train("experiment=paper/cifar100_energy_tune", "module.pretrained=x.ckpt")
    assert (e100.loss.fn.m_in, e100.loss.fn.m_out) == (-27.0, -5.0)  # wetliu/energy_ood CIFAR/run.sh:54-56
    assert energy.evaluation.positive == "in"  # wetliu/energy_ood CIFAR/test.py:218-221, no --out_as_pos in run.sh
    assert all(compose_train(f"experiment={p}", "module.pretrained=x.ckpt").evaluation.positive == "out"
               for p in PRESETS if "energy" not in p)  # CIFAR/test.py:174 get_measures(out_score, in_score)


def _folder(root: Path, n: int = 3, size: int = 40, cls: str = "class0") -> None:
    (root / cls).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 30 * i, np.uint8)).save(root / cls / f"{i}.png")


@pytest.fixture(scope="module")
def paper_data_dir(tmp_path_factory) -> tuple[Path, dict]:
    """Every file the CIFAR and SVHN presets read, tiny, in its real format."""
    root = tmp_path_factory.mktemp("data")
    sums = write_cifar10(root) | write_cifar100(root)
    for split in ("train", "extra", "test"):
        sums |= write_svhn(root, split, n=6, seed=len(split))
    write_tiny_images(root / "tiny_images.bin",
                      np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8))
    (root / "80mn_cifar_idxs.txt").write_text("1\n8\n")  # 1-based
    for folder, size in (("dtd/images", 60), ("places365", 48), ("StreetLetters", 28)):
        _folder(root / folder, size=size)
    for cls in ("animals", "numbers"):  # Icons-50 without its 'numbers' class
        _folder(root / "Icons-50", size=40, cls=cls)
    write_lsun_test_lmdb(root / "lsun")
    return root, sums


@pytest.mark.parametrize("dataset,builder", [("cifar10", wrn_40_2), ("svhn", wrn_16_4)])
def test_oe_tune_preset_runs_on_tiny_files_from_a_papers_baseline_checkpoint(
        paper_data_dir, dataset, builder, tmp_path):
    root, sums = paper_data_dir
    baseline = tmp_path / f"{dataset}_wrn_baseline_epoch_99.pt"  # a plain state_dict, as released
    torch.save(builder(num_classes=10).state_dict(), baseline)
    checksums = "{" + ",".join(f"{k}:{v}" for k, v in sums.items()) + "}"
    res = train_in_process(tmp_path / "run", f"experiment=paper/{dataset}_oe_tune", f"module.pretrained={baseline}",
                           f"paths.data_dir={root}", f"data.checksums={checksums}", "+trainer.fast_dev_run=1",
                           "data.batch_size=8", "data.oe_batch_size=16", "data.num_workers=0",
                           "data.pin_memory=false", "logger=none", tiny=False)
    expected = PAPER_SUITES[f"{dataset}_paper"]
    assert list(res["ood"]) == expected
    assert res["config"]["protocol"] == "paper" and "fpr95_std" in res["ood"]["textures"]
    assert res["config"]["pretrained"] == str(baseline)


def test_tiny_imagenet_reads_train_folders_and_val_annotations(tmp_path):
    from oe_lightning.data.vision import TinyImageNet

    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]
    (base).mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((64, 64, 3), 10 * i, np.uint8)).save(
                base / "train" / w / "images" / f"{w}_{i}.JPEG", format="JPEG")
    (base / "val" / "images").mkdir(parents=True)
    rows = []
    for i, w in enumerate(["n03", "n01"]):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(base / "val" / "images" / f"val_{i}.JPEG",
                                                               format="JPEG")
        rows.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    train, val = TinyImageNet(tmp_path, "train"), TinyImageNet(tmp_path, "val")
    assert train.classes == ["n01", "n02", "n03"] and len(train) == 6
    assert [label for _, label in train.samples] == [0, 0, 1, 1, 2, 2]
    assert [val[i][1] for i in range(2)] == [2, 0] and val[0][0].size == (64, 64)
    from oe_lightning.errors import OEUserError
    with pytest.raises(OEUserError, match="val_annotations.txt"):
        TinyImageNet(tmp_path / "nowhere", "val")


def test_missing_paper_data_names_the_path_and_how_to_get_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(tmp_path / "run", "experiment=paper/cifar10_baseline", f"paths.data_dir={tmp_path}/none",
                         "logger=none")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "cifar-10-batches-py" in err and "prepare_data.py cifar10" in err


def test_oe_pipelines_per_dataset_are_the_references():
    """The OE transform and order of each D_in (hendrycks/outlier-exposure *_oe_tune.py)."""
    from hydra.utils import instantiate
    from torchvision.transforms import v2

    sv = compose_train("experiment=paper/svhn_oe_tune", "module.pretrained=x.ckpt")
    steps = instantiate(sv.data.oe_transform).transforms  # SVHN/oe_tune.py:70-72: flip, ToTensor
    assert isinstance(steps[0], v2.RandomHorizontalFlip) and len(steps) == 2
    assert sv.data.get("oe_sampling") is None  # 80M Tiny Images: its own random offset per epoch
    for preset, batch in (("tiny_imagenet_oe_tune", 180), ("tiny_imagenet_oe_scratch", 256)):
        tin = compose_train(f"experiment=paper/{preset}", "module.pretrained=x.ckpt")
        # TinyImageNet/oe_tune.py:82-83 (Resize, CenterCrop, ToTensor, Normalize only), 95-98 (fixed order)
        assert tin.data.oe_transform == tin.data.test_transform and tin.data.oe_sampling == "sequential"
        assert tin.oe.resize == 64 and tin.data.oe_batch_size == batch  # oe_scratch.py:35 uses 256
    c10 = compose_train("experiment=paper/cifar10_oe_tune", "module.pretrained=x.ckpt")
    assert c10.data.get("oe_transform") is None  # CIFAR/oe_tune.py:84-86: the ID train augmentation


def test_sequential_oe_sampling_reads_the_same_images_every_epoch():
    from oe_lightning.data.samplers import OESampler

    sampler = OESampler(10, 6, mode="sequential")
    first = list(sampler)
    sampler.set_epoch(1)
    assert first == list(sampler) == [0, 1, 2, 3, 4, 5]
    ranks = [list(OESampler(10, 3, mode="sequential", num_replicas=2, rank=r)) for r in (0, 1)]
    assert ranks == [[0, 2, 4], [1, 3, 5]]


# calibration=paper: the held-out images (paper App. G.2: "5000, 5000, 5000, and 10000 training examples
# held out") and how the reference picks them
CALIBRATION_HOLDOUT = {
    "cifar10": (5000, "tail"),    # CIFAR/test_calibration.py:64 validation_split(train_data, val_share=0.1)
    "cifar100": (5000, "tail"),   # same file, CIFAR-100 branch
    "svhn": (5000, "tail"),       # SVHN/test_calibration.py:55 val_share=5000/604388.
    "tiny_imagenet": (10000, "numpy_shuffle"),  # TinyImageNet/test_calibration.py:62 validation_split_folder
}


@pytest.mark.parametrize("preset", [p for p in PRESETS if "energy" not in p])
def test_calibration_paper_holds_out_what_the_papers_calibration_runs_held_out(preset):
    cfg = compose_train(f"experiment={preset}", "calibration=paper", "module.pretrained=x.ckpt")
    assert (cfg.data.val_size, cfg.data.val_split) == CALIBRATION_HOLDOUT[cfg.data.name]
    plain = compose_train(f"experiment={preset}", "module.pretrained=x.ckpt")
    assert plain.data.val_fraction == 0.0 and plain.data.val_size is None  # detection runs train on all
