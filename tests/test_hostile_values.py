"""Hostile values: sizes without bounds, degenerate values, checkpoints that choose files or network.

Each is refused before any work (exit 2, one paragraph naming the key, the value and the fix,
nothing trained or written); a checkpoint's stored values are checked like a config's, naming the file.
"""

from __future__ import annotations

import math
import pathlib
import socket

import pytest
import torch

from tests.conftest import run_in_process, train_in_process
from tests.test_reliability import _load_paths, _refused

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="refusing a GPU needs a machine without one")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train_in_process(run_dir, "trainer.max_epochs=1")
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def image(tmp_path) -> pathlib.Path:
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("RGB", (8, 8), (255, 255, 255)).save(path)
    return path


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> pathlib.Path:
    """An image-folder training set: two classes of four 12x12 RGB images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("rgb") / "train"
    for c, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), tuple(min(255, v + 5 * i) for v in colour)).save(root / c / f"{i}.png")
    return root


def _folder(root: pathlib.Path) -> tuple[str, ...]:
    return ("data=image_folder", f"data.train_dir={root}", "data.num_workers=0", "oe=china_crops",
            "ood=folders", f"+ood.same={root}")


# ---- sizes have upper bounds, checked before anything is allocated -----------------------------
@pytest.mark.parametrize("overrides,named", [
    (["data.oe_batch_size=10000000"], "data.oe_batch_size=10000000 must be null or an integer in [1, 65536]"),
    (["data.batch_size=10000000"], "data.batch_size=10000000 must be an integer in [1, 65536]"),
], ids=["oe_batch_size=1e7", "batch_size=1e7"])
def test_a_batch_size_beyond_its_bound_is_refused(capsys, tmp_path, overrides, named):
    assert named in _refused(capsys, "oe-train", tmp_path / "run", *overrides)


@pytest.mark.parametrize("overrides,named", [
    (["data.image_size=100000"], "data.image_size=100000 must be an integer in [1, 2048]"),
    (["data.image_size=1024", "data.batch_size=4096"], "data.batch_size=4096 makes one batch"),
], ids=["image_size=100000", "batch of 48 GiB"])
def test_an_image_size_beyond_its_bound_is_refused_before_any_image_is_read(capsys, tmp_path, rgb_folder,
                                                                            overrides, named):
    err = _refused(capsys, "oe-train", tmp_path / "run", *_folder(rgb_folder), *overrides)
    assert named in err and "The config has 1 problem" in err, err  # image_shape and eval_resize follow it


def test_stored_preprocessing_is_bounded_like_the_config():
    from oe_lightning.deployment import Preprocessing
    from oe_lightning.errors import OEUserError

    with pytest.raises(OEUserError, match=r"height=4000 \(an integer in \[1, 2048\] pixels\)"):
        Preprocessing(1, 4000, 4000, 4000, (0.0,), (1.0,))
    with pytest.raises(OEUserError, match="resize=4000"):
        Preprocessing(1, 8, 8, 4000, (0.0,), (1.0,))


# ---- degenerate values are refused before any work ---------------------------------------------
DEGENERATE = [
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 must be"),  # exited 0, untrained
    (["trainer.limit_train_batches=0.0"], "trainer.limit_train_batches=0.0 must be"),
    (["+trainer.max_steps=0"], "trainer.max_steps=0 must be"),
    (["seed=4294967296"], "seed=4294967296 must be an integer in [0, 4294967295]"),
    (["seed=-1"], "seed=-1 must be an integer in [0, 4294967295]"),
    (["loss.lambda_oe=1e308"], "loss.lambda_oe=1e+308 must be a number in [0, 1000]"),
    (["score=energy", "detector=[energy]", "detector.energy.temperature=1e-30"],
     "detector.energy.temperature=1e-30 must be a number in [0.001, 1000]"),
    (["data.val_fraction=-0.5"], "data.val_fraction=-0.5 must be a fraction in [0, 1)"),
    (["data.val_fraction=1.0"], "data.val_fraction=1.0 must be a fraction in [0, 1)"),
]


@pytest.mark.parametrize("overrides,named", DEGENERATE, ids=[" ".join(o) for o, _ in DEGENERATE])
def test_a_degenerate_value_is_refused(capsys, tmp_path, overrides, named):
    assert named in _refused(capsys, "oe-train", tmp_path / "run", *overrides)


@pytest.mark.parametrize("fraction", ["-0.5", "0", "1.0"])
def test_a_test_fraction_outside_the_open_unit_interval_is_refused(capsys, tmp_path, rgb_folder, fraction):
    """-0.5 was silently a 50% split; 0 and 1.0 trained, then crashed on an empty set."""
    err = _refused(capsys, "oe-train", tmp_path / "run", *_folder(rgb_folder), f"data.test_fraction={fraction}")
    assert f"data.test_fraction={float(fraction) if '.' in fraction else int(fraction)} must be a fraction in (0, 1)" \
        in err, err


@pytest.mark.parametrize("num_classes", [5, 12])
def test_num_classes_disagreeing_with_the_data_is_refused_when_the_data_opens(capsys, tmp_path, num_classes):
    err = _refused(capsys, "oe-train", tmp_path / "run", f"data.num_classes={num_classes}")
    assert f"data.num_classes={num_classes} but the training data has 10 classes (labels 0..9)" in err
    assert "Set data.num_classes=10" in err


def test_knn_k_above_the_feature_bank_is_refused_before_scoring(capsys, tmp_path, trained, monkeypatch):
    from oe_lightning.evaluation import OODEvaluation

    def no_scoring(*args, **kwargs):
        raise AssertionError("a batch was scored")

    monkeypatch.setattr(OODEvaluation, "test_step", no_scoring)
    err = _refused(capsys, "oe-eval", tmp_path / "eval", f"ckpt_path={trained}", "detector=[knn]",
                   "detector.knn.k=100000")
    assert "detector.knn.k=100000 is larger than the feature bank" in err and "has 1132 images" in err, err


def test_a_non_finite_loss_names_lambda_not_only_the_learning_rate():
    from oe_lightning.errors import NonFiniteLossError
    from oe_lightning.models import SmallCNN
    from oe_lightning.module import OutlierExposureModule

    module = OutlierExposureModule(backbone=SmallCNN(num_classes=10, in_channels=1), num_classes=10, lambda_oe=1e308)
    with pytest.raises(NonFiniteLossError, match=r"not finite: lower loss.lambda_oe=1e\+308"):
        module._raise_nonfinite(3, [math.inf, 2.3, 2.3])


@NO_GPU
@pytest.mark.parametrize("entry,overrides", [
    ("oe-train", ["trainer.accelerator=gpu"]),
    ("oe-train", ["trainer=gpu"]),
])
def test_a_gpu_trainer_without_a_gpu_is_one_paragraph(capsys, tmp_path, entry, overrides):
    err = _refused(capsys, entry, tmp_path / "run", *overrides)
    assert "trainer.accelerator='gpu'" in err and "needs a CUDA GPU" in err and "trainer=cpu" in err


@NO_GPU
@pytest.mark.parametrize("entry,device", [("oe-predict", "device=cuda"), ("oe-predict", "device=cuda:1"),
                                          ("oe-export", "++device=cuda")])
def test_a_cuda_device_without_a_gpu_is_one_paragraph(capsys, tmp_path, trained, image, entry, device):
    extra = [f"input={image}"] if entry == "oe-predict" else []
    err = _refused(capsys, entry, tmp_path / "out", f"ckpt_path={trained}", device, *extra)
    assert f"device='{device.split('=')[1]}' needs a CUDA GPU" in err and "device=cpu" in err
    assert not list((tmp_path / "out").glob("predictions.*")) and not list((tmp_path / "out").glob("model.*"))


# ---- a checkpoint's stored values are validated like a config -----------------------------------
def _forged(trained_path: pathlib.Path, tmp_path: pathlib.Path, change) -> pathlib.Path:
    checkpoint = torch.load(trained_path, weights_only=True)
    change(checkpoint["oe_lightning"])
    path = tmp_path / "forged.ckpt"
    torch.save(checkpoint, path)
    return path


STORED = {
    "4000-px preprocessing": (lambda i: i["preprocessing"].update(height=4000, width=4000, resize=4000),
                              "height=4000 (an integer in [1, 2048] pixels)"),
    "temperature=inf": (lambda i: i.update(temperature=math.inf), "temperature=inf must be a number in"),
    "temperature=0": (lambda i: i.update(temperature=0.0), "temperature=0.0 must be a number in"),
    "temperature=-1": (lambda i: i.update(temperature=-1.0), "temperature=-1.0 must be a number in"),
    "temperature=nan": (lambda i: i.update(temperature=math.nan), "temperature=nan must be a number in"),
    "tiny energy temperature": (lambda i: i.update(score={"_target_": "oe_lightning.scores.Energy",
                                                          "temperature": 1e-40}),
                                "score.temperature=1e-40 must be in [0.001, 1000]"),
    "class names shorter than the head": (lambda i: i.update(class_names=["a", "b"]),
                                          "class_names has 2 names for a classifier of 10 outputs"),
}


@pytest.mark.parametrize("case", list(STORED))
def test_stored_deployment_values_are_checked_naming_the_checkpoint(capsys, tmp_path, trained, image, case):
    change, named = STORED[case]
    forged = _forged(trained, tmp_path, change)
    for entry, overrides in _load_paths(forged, image)[3:]:  # oe-predict, oe-export
        err = _refused(capsys, entry, tmp_path / entry, *overrides)
        assert f"Checkpoint '{forged}' stores" in err and named in err, (entry, err)
        assert not any((tmp_path / entry).iterdir()), entry  # no predictions, no exported model


def test_a_one_channel_checkpoint_on_three_channel_data_is_refused_by_oe_eval(capsys, tmp_path, trained,
                                                                              rgb_folder):
    err = _refused(capsys, "oe-eval", tmp_path / "eval", f"ckpt_path={trained}", *_folder(rgb_folder))
    assert f"Checkpoint '{trained}' does not fit the data" in err
    assert "it takes 1-channel images and data=image_folder has 3-channel ones" in err
    assert "it was trained with 10 classes and data=image_folder has 2" in err


def test_an_unreadable_checkpoint_is_refused_before_the_config_tree(capsys, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    err = _refused(capsys, "oe-eval", tmp_path / "eval", f"ckpt_path={bad}", "print_config=true")
    assert f"Checkpoint '{bad}' could not be read as weights" in err
    assert not (tmp_path / "eval" / "config_tree.log").exists()


# ---- a checkpoint never chooses files or network -------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("extra,named", [
    ({"_target_": "oe_lightning.models.timm_classifier", "name": "resnet18", "checkpoint_path": "FILE"},
     "checkpoint_path='FILE'"),
    ({"_target_": "oe_lightning.models.timm_classifier", "name": "resnet18", "pretrained_cfg_overlay": {}},
     None),
    ({"_target_": "oe_lightning.models.timm_classifier", "name": "hf-hub:timm/resnet18.a1_in1k"},
     "name='hf-hub:timm/resnet18.a1_in1k'"),
    ({"_target_": "oe_lightning.models.torchvision_classifier", "name": "resnet18", "url": "https://x/y.pth"},
     "url='https://x/y.pth'"),
    ({"_target_": "oe_lightning.models.SmallCNN", "cache_dir": "/tmp/cache"}, "cache_dir='/tmp/cache'"),
], ids=["timm checkpoint_path", "not plain", "hf-hub name", "url", "cache_dir"])
def test_a_checkpoint_naming_a_file_or_url_is_refused_without_touching_it(capsys, tmp_path, trained, image,
                                                                          no_network, extra, named):
    target = tmp_path / "elsewhere.pth"
    target.write_bytes(b"never opened")
    before = target.stat().st_atime_ns
    extra = {k: str(target) if v == "FILE" else v for k, v in extra.items()}
    forged = _forged(trained, tmp_path, lambda i: i["model_config"].update(extra))
    for entry, overrides in _load_paths(forged, image)[2:]:  # oe-eval, oe-predict, oe-export
        err = _refused(capsys, entry, tmp_path / entry, *overrides)
        if named is None:
            assert "is not a plain value" in err, err
            continue
        assert f"Checkpoint '{forged}' stores a model config naming a file, URL or download" in err, (entry, err)
        assert named.replace("FILE", str(target)) in err and "nothing was opened or downloaded" in err
    assert target.stat().st_atime_ns == before


def test_download_switches_from_a_checkpoint_are_left_out_with_a_note(caplog, tmp_path, trained, image, no_network):
    """A fine-tuned run stores pretrained=true (timm) or weights=... (torchvision): rebuilt from the
    checkpoint's own weights, nothing downloaded or read for them."""
    import logging

    from oe_lightning.checkpoints import checked_model_config

    stored = {"_target_": "oe_lightning.models.timm_classifier", "name": "resnet18", "pretrained": True,
              "weights_path": "/somewhere/else.pth", "num_classes": 10}
    assert checked_model_config(stored, [], "x.ckpt") == {"_target_": "oe_lightning.models.timm_classifier",
                                                          "name": "resnet18", "num_classes": 10}
    forged = _forged(trained, tmp_path, lambda i: i["model_config"].update(pretrained=True,
                                                                          weights="IMAGENET1K_V1"))
    with caplog.at_level(logging.WARNING, logger="oe_lightning"):
        run_in_process("oe-predict", tmp_path / "predict", f"ckpt_path={forged}", f"input={image}")
    rows = (tmp_path / "predict" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 2 and str(image) in rows[1] and "unreadable" not in rows[1], rows
    assert "pretrained=True, weights='IMAGENET1K_V1' left out" in caplog.text


def test_timm_checkpoint_path_from_the_users_config_is_read_weights_only(tmp_path):
    """timm 1.0.9-1.0.25 unpickle a checkpoint_path (weights_only=False): it is read by our loader instead."""
    pytest.importorskip("timm")
    from oe_lightning.errors import OEUserError
    from oe_lightning.models import timm_classifier
    from tests.test_reliability import _TouchOnLoad

    marker, evil = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"payload": _TouchOnLoad(marker)}, evil)
    with pytest.raises(OEUserError, match="could not be read as weights"):
        timm_classifier("resnet18", num_classes=10, checkpoint_path=str(evil))
    assert not marker.exists()
