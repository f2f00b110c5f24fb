"""Pretrained backbones offline: weights from a cache or file the test writes, the head replaced for
the data's classes, a clear error naming the file to place; fine-tuning with a scaled or frozen backbone."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from oe_lightning.errors import OEUserError
from oe_lightning.models import timm_classifier, torchvision_classifier
from oe_lightning.models.pretrained import last_linear


def _same_except_head(model: nn.Module, state: dict[str, torch.Tensor], head: str) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        if not key.startswith(head):
            assert torch.equal(own[key], value), key


def test_torchvision_weights_come_from_torchs_cache_and_get_a_new_head(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    cached = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    with pytest.raises(OEUserError) as info:  # not cached, and no download: name the file to place
        torchvision_classifier("mobilenet_v3_small", num_classes=5, weights="IMAGENET1K_V1", download=False)
    assert str(cached) in str(info.value) and weights.url in str(info.value)
    torch.manual_seed(1)
    stored = torchvision.models.mobilenet_v3_small(num_classes=1000).state_dict()  # "ImageNet" weights
    cached.parent.mkdir(parents=True)
    torch.save(stored, cached)
    model = torchvision_classifier("mobilenet_v3_small", num_classes=5, weights="IMAGENET1K_V1", download=False)
    assert model.classifier[3].out_features == 5
    _same_except_head(model, {k: v for k, v in stored.items()}, "classifier.3.")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    default = torchvision_classifier("mobilenet_v3_small", num_classes=5, weights="DEFAULT", download=False)
    assert torch.equal(default.features[0][0].weight, model.features[0][0].weight)  # DEFAULT is IMAGENET1K_V1
    with pytest.raises(OEUserError, match=r"model.weights='IMAGENET9K'.*\['DEFAULT', 'IMAGENET1K_V1'\]"):
        torchvision_classifier("mobilenet_v3_small", num_classes=5, weights="IMAGENET9K", download=False)


def test_a_weights_file_of_another_architecture_is_refused_naming_it(tmp_path):
    import torchvision

    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(OEUserError, match=f"{path}.*do not fit MobileNetV3"):
        torchvision_classifier("mobilenet_v3_small", num_classes=5, weights_path=str(path))


def test_timm_weights_from_a_local_file_with_the_head_replaced(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    source = timm.create_model("test_efficientnet", num_classes=1000)
    path = tmp_path / "test_efficientnet.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # a Lightning-style wrapper is unwrapped too
    model = timm_classifier("test_efficientnet", num_classes=3, weights_path=str(path))
    assert model.get_classifier().out_features == 3
    _same_except_head(model, source.state_dict(), "classifier.")
    with pytest.raises(OEUserError, match="'no_such_net' is not a timm model"):
        timm_classifier("no_such_net", num_classes=3)


@pytest.mark.slow
def test_timm_pretrained_offline_without_a_cached_file_is_a_clear_error(tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache, in a fresh process (the hub reads both at import)."""
    pytest.importorskip("timm")
    code = ("from oe_lightning.models import timm_classifier\n"
            "from oe_lightning.errors import OEUserError\n"
            "try:\n    timm_classifier('resnet18', num_classes=3, pretrained=True)\n"
            "except OEUserError as err:\n    print(err)\n")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(__import__("tests.conftest").conftest.REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pretrained weights for resnet18 could not be loaded" in out and str(tmp_path / "hf") in out
    assert "model.weights_path=" in out


def _module(scale: float):
    from functools import partial

    from oe_lightning.models import SmallCNN
    from oe_lightning.module import OutlierExposureModule

    torch.manual_seed(0)
    return OutlierExposureModule(SmallCNN(num_classes=3, in_channels=1), num_classes=3, lambda_oe=0.5,
                                 optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
                                 backbone_lr_scale=scale)


def test_the_backbone_learns_at_a_scaled_rate_and_a_frozen_one_not_at_all():
    head = _module(0.1).backbone.get_classifier()
    optimizer = _module(0.1).configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, pytest.approx(0.01)]
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == sum(p.numel() for p in head.parameters())

    module = _module(0.0)
    optimizer = module.configure_optimizers()
    module.train()
    module.on_train_epoch_start()
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    x, y, x_oe = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)), torch.randn(8, 1, 8, 8)
    logits = module.backbone(torch.cat([x, x_oe]))
    loss = nn.functional.cross_entropy(logits[:8], y) + module.oe_loss(logits[8:], logits[:8], y)
    loss.backward()
    optimizer.step()
    after = module.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    name = last_linear(module.backbone)[0]
    assert changed == {f"{name}.weight", f"{name}.bias"}, changed  # BatchNorm statistics too stay
    assert any("running_mean" in k for k in before)


def test_a_negative_backbone_lr_scale_is_refused():
    with pytest.raises(OEUserError, match="module.backbone_lr_scale must be a number >= 0"):
        _module(-1.0)


@pytest.mark.slow
def test_compiled_channels_last_training_matches_plain_training_and_saves_plain_weights(tmp_path):
    """module.compile / module.channels_last change how the step runs, not what it computes or saves."""
    from tests.conftest import train_in_process

    train_in_process(tmp_path / "plain", "trainer.max_epochs=1")
    train_in_process(tmp_path / "fast", "trainer.max_epochs=1", "module.compile=true", "module.channels_last=true")
    plain, fast = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                   for run in ("plain", "fast"))
    assert list(plain) == list(fast)  # no "_orig_mod." keys: checkpoints load anywhere
    floats = [k for k, v in plain.items() if v.is_floating_point()]
    assert all(torch.equal(fast[k], plain[k]) for k in plain if k not in floats)  # e.g. BatchNorm step counts
    # the same steps up to reordered float sums (compiled kernels, thread counts): 0.1% of the weights' norm
    gap = torch.cat([(fast[k].contiguous() - plain[k]).flatten() for k in floats]).norm()
    assert gap <= 1e-3 * torch.cat([plain[k].flatten() for k in floats]).norm()
