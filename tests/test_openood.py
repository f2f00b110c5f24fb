"""OpenOOD v1.5: its image lists read as OpenOOD reads them, its CIFAR benchmarks' sets and near/far groups
as openood/evaluation_api/datasets.py defines them, near/far means, and its ResNet-18 checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from oe_lightning.data.imglist import image_list, read_image_list
from oe_lightning.errors import OEUserError
from tests.conftest import train_in_process
from tests.formats import write_openood

# Jingkang50/OpenOOD openood/evaluation_api/datasets.py (main, 3c35632e): DATA_INFO['cifar10'] near-OOD
# ['cifar100', 'tin'] (line 51), far-OOD ['mnist', 'svhn', 'texture', 'places365'] (63); DATA_INFO['cifar100']
# near ['cifar10', 'tin'], the same far sets (109-140); OOD validation val_tin.txt (46-49, 105-108).
OPENOOD_GROUPS = {
    "cifar10": {"near": ["cifar100", "tin"], "far": ["mnist", "svhn", "texture", "places365"]},
    "cifar100": {"near": ["cifar10", "tin"], "far": ["mnist", "svhn", "texture", "places365"]},
}
# datasets.py:144-228 (imagenet200) and 229-308 (imagenet): near ssb_hard, ninco; far inaturalist, textures,
# openimage_o; textures under images_classic/, the rest under images_largescale/; validation val_openimage_o.txt
LARGE_GROUPS = {"near": ["ssb_hard", "ninco"], "far": ["inaturalist", "textures", "openimage_o"]}


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from oe_lightning.config import config_dir

    with initialize_config_dir(config_dir(), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


@pytest.mark.parametrize("suite", ["cifar10", "cifar100"])
def test_benchmark_sets_groups_and_lists_are_openoods(suite):
    from oe_lightning.ood_groups import split_groups

    cfg = compose(f"experiment=openood/{suite}", "paths.data_dir=/root")
    ood, groups = split_groups(cfg.ood)
    assert groups == OPENOOD_GROUPS[suite]
    for name in ood:
        assert ood[name]["list_file"] == f"/root/benchmark_imglist/{suite}/test_{name}.txt"
        assert ood[name]["data_dir"] == "/root/images_classic"
        assert ood[name]["resize"] == 32  # preprocessor.py:9-18 Resize(32), CenterCrop(32)
    assert cfg.val_ood.list_file == f"/root/benchmark_imglist/{suite}/val_tin.txt"
    for split in ("train", "val", "test"):
        assert cfg.data[split].list_file == f"/root/benchmark_imglist/{suite}/{split}_{suite}.txt"
    assert cfg.oe.list_file == f"/root/benchmark_imglist/{suite}/train_tin597.txt"  # cifar10_oe.yml:9
    # preprocessor.py:9-18; oe_trainer.py / train_oe.yml:8 λ 0.5; baseline.yml:28-33 100 epochs, lr 0.1, wd 5e-4
    mean = {"cifar10": [0.4914, 0.4822, 0.4465], "cifar100": [0.5071, 0.4867, 0.4408]}[suite]
    assert list(cfg.data.mean) == mean
    assert (cfg.loss.lambda_oe, cfg.trainer.max_epochs, cfg.module.optimizer.lr) == (0.5, 100, 0.1)
    assert (cfg.module.optimizer.weight_decay, cfg.data.batch_size, cfg.data.oe_batch_size) == (5e-4, 128, 256)
    # metrics.py:41-49: OOD positive, the first threshold reaching 95% TPR
    assert (cfg.evaluation.positive, cfg.evaluation.fpr_rule, cfg.evaluation.recall) == ("out", "first", 0.95)


@pytest.mark.parametrize("suite", ["imagenet200", "imagenet"])
def test_large_scale_benchmark_sets_groups_and_lists_are_openoods(suite):
    from oe_lightning.ood_groups import split_groups

    cfg = compose(f"data=openood_v15/{suite}", f"ood=openood_v15/{suite}", f"val_ood=openood_v15/{suite}",
                  "paths.data_dir=/root")
    ood, groups = split_groups(cfg.ood)
    assert groups == LARGE_GROUPS
    for name in ood:
        assert ood[name]["list_file"] == f"/root/benchmark_imglist/{suite}/test_{name}.txt"
        folder = "images_classic" if name == "textures" else "images_largescale"
        assert ood[name]["data_dir"] == f"/root/{folder}" and ood[name]["resize"] is None  # the data's 256 -> 224
    assert cfg.val_ood.list_file == f"/root/benchmark_imglist/{suite}/val_openimage_o.txt"
    for split in ("train", "val", "test"):
        assert cfg.data[split].list_file == f"/root/benchmark_imglist/{suite}/{split}_{suite}.txt"
        assert cfg.data[split].data_dir == "/root/images_largescale"
    assert cfg.data.num_classes == {"imagenet200": 200, "imagenet": 1000}[suite]
    # preprocessor.py:20-29: Resize(256), CenterCrop(224), ImageNet's mean/std
    assert (cfg.data.eval_resize, cfg.data.image_size) == (256, 224)
    assert list(cfg.data.mean) == [0.485, 0.456, 0.406] and list(cfg.data.std) == [0.229, 0.224, 0.225]


def test_image_list_lines_are_read_as_openood_splits_them(tmp_path):
    written = write_openood(tmp_path)
    samples = read_image_list(tmp_path / "benchmark_imglist/cifar10/test_cifar10.txt", tmp_path / "images_classic")
    assert [(Path(p).relative_to(tmp_path / "images_classic").as_posix(), y) for p, y in samples] == \
        [(line.split(" ")[0], int(line.split(" ")[1])) for line in written["test_cifar10"]]
    dataset = image_list(tmp_path / "benchmark_imglist/cifar10/test_mnist.txt", tmp_path / "images_classic",
                         resize=32)
    image, label = dataset[0]
    assert image.size == (32, 32) and label == -1  # OpenOOD's 28x28 MNIST resized to the ID size


@pytest.mark.parametrize(("line", "message"), [
    ("/etc/passwd 0", "must be relative"),
    ("../outside.png 0", "must be relative"),
    ("cifar10/test/a.png zero", "'zero' is not an integer"),
    ("cifar10/test/missing.png 0", "1 of 1 images"),
])
def test_a_bad_image_list_line_is_named(tmp_path, line, message):
    (tmp_path / "images").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text(line + "\n")
    with pytest.raises(OEUserError, match=message) as err:
        read_image_list(listing, tmp_path / "images")
    assert "line 1" in str(err.value) or "not under" in str(err.value)


def test_a_missing_image_list_names_where_it_belongs(tmp_path):
    with pytest.raises(OEUserError, match="benchmark_imglist"):
        read_image_list(tmp_path / "benchmark_imglist/cifar10/test_tin.txt", tmp_path)


def test_openood_benchmark_trains_and_reports_near_and_far_means(tmp_path):
    """A tiny OE run of experiment=openood/cifar10 on lists written in OpenOOD's layout: results.json holds
    each group's sets and, per detector, each group's mean, equal to the mean of its sets' metrics."""
    root = tmp_path / "openood"
    write_openood(root)
    results = train_in_process(tmp_path / "run", "experiment=openood/cifar10", f"paths.data_dir={root}",
                               "trainer.max_epochs=1", "data.batch_size=8", "data.oe_batch_size=16",
                               "detector=[energy]")
    assert results["ood_groups"] == OPENOOD_GROUPS["cifar10"]
    for detector in ("msp", "energy"):
        d = results["detectors"][detector]
        for group, sets in OPENOOD_GROUPS["cifar10"].items():
            for metric in ("fpr95", "auroc", "aupr_in", "aupr_out"):
                expected = sum(d["ood"][s][metric] for s in sets) / len(sets)
                assert d["groups"][group][metric] == pytest.approx(expected, abs=1e-12)
    assert results["groups"] == results["detectors"]["msp"]["groups"]
    assert results["scored"]["in"] == 6 and results["scored"]["val"] == 6 and results["scored"]["val_ood"] == 6
    # the printed tables and oe-table read the groups
    from oe_lightning.report import results_rows
    from oe_lightning.table import main as table_main

    rows = [r[0] for r in results_rows(results)[1]]
    assert rows[-3:] == ["mean", "near mean", "far mean"]
    assert table_main([str(tmp_path / "run"), "--format", "md", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "table.md").read_text()
    assert "msp near" in text and "energy far" in text
    # beside OpenOOD's leaderboard (results/cifar10.csv:35, OE + MSP: near 94.82, far 96.00), with our difference
    board = next(line for line in text.splitlines() if line.startswith("| UniformCrossEntropy") and "94.82" in line)
    near = 100 * results["groups"]["near"]["auroc"]
    assert board.split(" | ")[1:4] == [f"{near:.2f}", "94.82", f"{near - 94.82:+.2f}"]
    assert board.split(" | ")[5] == "96.00"
    csv_rows = (tmp_path / "table.csv").read_text().splitlines()
    near = next(r for r in csv_rows if ",near mean,auroc," in r)
    assert float(near.split(",")[10]) == pytest.approx(100 * results["groups"]["near"]["auroc"], abs=1e-4)


def test_openood_resnet18_reads_openoods_checkpoint_format(tmp_path):
    """OpenOOD saves a plain state_dict with its projection shortcuts named `shortcut`
    (resnet18_32x32.py:25-32, base_recorder.py:27-30); the model config reads that file as is."""
    from oe_lightning.models import resnet18_32x32

    torch.manual_seed(0)
    source = resnet18_32x32(10)
    state = {k.replace(".downsample.", ".shortcut."): v for k, v in source.state_dict().items()}
    assert "layer2.0.shortcut.0.weight" in state and "layer1.0.shortcut.0.weight" not in state
    assert len(state) == 122  # OpenOOD's key count for ResNet18_32x32
    torch.save(state, tmp_path / "best.ckpt")
    loaded = resnet18_32x32(10, weights_path=str(tmp_path / "best.ckpt")).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), source.eval()(x))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(OEUserError, match="do not fit"):
        resnet18_32x32(10, weights_path=str(tmp_path / "other.ckpt"))


def test_a_group_name_that_is_not_a_name_is_refused_before_any_work(tmp_path):
    from oe_lightning.validate import problems

    cfg = compose("ood=openood_v15/cifar10", "++ood.tin.group=7")
    assert any("ood.tin.group must be a group name" in p for p in problems(cfg))


def test_rescore_recomputes_group_means(tmp_path):
    from oe_lightning.rescore import rescore

    torch.manual_seed(0)
    scores = {"in/msp": torch.randn(50), **{f"{s}/msp": torch.randn(40) + i for i, s in enumerate("abc")}}
    results = {"detector": "msp", "ood_groups": {"near": ["a"], "far": ["b", "c"]},
               "detectors": {"msp": {"ood": {"a": {}, "b": {}, "c": {}}}}}
    out = rescore(results, scores, fpr_rule="nearest")
    far = out["detectors"]["msp"]["groups"]["far"]["auroc"]
    assert far == pytest.approx((out["ood"]["b"]["auroc"] + out["ood"]["c"]["auroc"]) / 2)
    assert out["groups"]["near"]["auroc"] == out["ood"]["a"]["auroc"]
    json.dumps(out)  # plain values


@pytest.mark.parametrize("ties", [False, True])
def test_fpr95_and_auroc_are_openoods_compute_all_metrics(ties):
    """openood/evaluators/metrics.py:41-57 restated with scikit-learn: OOD positive, roc_curve(ood, -conf),
    FPR@95 = fpr[argmax(tpr >= 0.95)], AUROC = auc(fpr, tpr); conf is larger for ID (our score's negative)."""
    import numpy as np
    from sklearn import metrics as skm

    from oe_lightning.metrics import ood_metrics

    g = torch.Generator().manual_seed(5)
    scores_in, scores_out = torch.randn(700, generator=g), torch.randn(400, generator=g) + 1.0
    if ties:
        scores_in, scores_out = scores_in.round(decimals=1), scores_out.round(decimals=1)
    conf = -torch.cat([scores_in, scores_out]).double().numpy()
    ood = np.r_[np.zeros(700), np.ones(400)]
    fpr, tpr, _ = skm.roc_curve(ood, -conf)
    ours = ood_metrics(scores_in, scores_out, recall=0.95, fpr_rule="first", positive="out")
    assert ours["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    assert ours["auroc"] == pytest.approx(skm.auc(fpr, tpr), abs=1e-12)


def test_imagenet200_presets_evaluate_a_model_on_lists_in_openoods_layout(tmp_path):
    """data/ood/val_ood=openood_v15/imagenet200 on lists written as OpenOOD lays them out (images of varied
    sizes under images_largescale/, Textures under images_classic/), with a model of one's own: every set read,
    resized and cropped by the data's test transform (small here: 40 -> 32), near/far means reported."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "openood"
    lists = {"train_imagenet200": 24, "val_imagenet200": 6, "test_imagenet200": 6, "val_openimage_o": 6,
             **{f"test_{s}": 5 for s in ("ssb_hard", "ninco", "inaturalist", "textures", "openimage_o")}}
    for name, count in lists.items():
        folder = "images_classic" if name == "test_textures" else "images_largescale"
        lines = []
        for i in range(count):
            relative = f"{name}/{i}.jpg"
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / folder / relative)
            lines.append(f"{relative} {i if name.endswith('imagenet200') else -1}")
        (root / "benchmark_imglist" / "imagenet200").mkdir(parents=True, exist_ok=True)
        (root / "benchmark_imglist" / "imagenet200" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    results = train_in_process(tmp_path / "run", "data=openood_v15/imagenet200", "ood=openood_v15/imagenet200",
                               "val_ood=openood_v15/imagenet200", f"paths.data_dir={root}", "model=small_cnn",
                               "data.image_size=32", "data.eval_resize=40", "loss.lambda_oe=0", "data.num_classes=24",
                               "trainer.max_epochs=1", "data.batch_size=8")
    assert results["ood_groups"] == LARGE_GROUPS
    assert results["scored"]["in"] == 6 and results["scored"]["val_ood"] == 6
    assert {s: results["scored"][s] for s in ("ssb_hard", "textures")} == {"ssb_hard": 5, "textures": 5}
    near = results["groups"]["near"]["auroc"]
    assert near == pytest.approx((results["ood"]["ssb_hard"]["auroc"] + results["ood"]["ninco"]["auroc"]) / 2)
