"""MixOE: the cutmix box and soft cross-entropy restated from the reference code, the mixed batch's pixels
and targets agreeing on λ, and the module's step equal to ID CE + λ · the mixed term."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oe_lightning.errors import OEUserError
from oe_lightning.methods import MixOE
from oe_lightning.methods.mixoe import cutmix_box, soft_cross_entropy
from tests.conftest import train_in_process


def reference_rand_bbox(size: tuple[int, ...], lam: float, cx: int, cy: int) -> tuple[int, int, int, int]:
    """OpenOOD mixoe_trainer.py:138-154 (= zjysteven/MixOE train_mixoe.py:45-61) with its random centre given:
    W = size[2], H = size[3], the cut √(1 − λ) of each, clipped with np.clip."""
    W, H = size[2], size[3]
    cut_rat = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(W * cut_rat), int(H * cut_rat)
    bbx1, bby1 = np.clip(cx - cut_w // 2, 0, W), np.clip(cy - cut_h // 2, 0, H)
    bbx2, bby2 = np.clip(cx + cut_w // 2, 0, W), np.clip(cy + cut_h // 2, 0, H)
    return bbx1, bby1, bbx2, bby2


@pytest.mark.parametrize("lam", [0.0, 0.13, 0.5, 0.77, 0.999])
@pytest.mark.parametrize("size", [(8, 8), (32, 32), (7, 12)])
def test_cutmix_box_is_the_references(lam, size):
    height, width = size
    for c_dim2 in range(height):
        for c_dim3 in range(width):
            # the reference's first box axis is tensor dim 2 (its "W"), indexed x[:, :, bbx1:bbx2, bby1:bby2]
            bbx1, bby1, bbx2, bby2 = reference_rand_bbox((1, 3, height, width), lam, c_dim2, c_dim3)
            assert cutmix_box(height, width, lam, c_dim2, c_dim3) == (bbx1, bbx2, bby1, bby2)


def test_soft_cross_entropy_is_the_references_on_fixed_logits():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 5), torch.softmax(torch.randn(6, 5), 1)
    # mixoe_trainer.py:116-128 SoftCE: sum(-t * log_softmax(logits)) / batch
    reference = torch.sum(-targets * F.log_softmax(logits, dim=1)) / logits.shape[0]
    assert soft_cross_entropy(logits, targets) == pytest.approx(float(reference), abs=1e-6)
    # at λ = 0 the target is uniform: the paper's OE term
    uniform = torch.full_like(logits, 1 / 5)
    assert soft_cross_entropy(logits, uniform) == pytest.approx(
        float((torch.logsumexp(logits, 1) - logits.mean(1)).mean()), abs=1e-6)


@pytest.mark.parametrize("mix_op", ["cutmix", "mixup"])
def test_mixed_pixels_and_soft_targets_agree_on_lambda(mix_op):
    torch.manual_seed(1)
    x_in, y, x_oe = torch.rand(3, 1, 8, 8) + 2.0, torch.tensor([0, 2, 1]), torch.rand(5, 1, 8, 8) - 2.0
    for _ in range(20):
        mixed, targets = MixOE(mix_op, alpha=1.0, beta=1.0).mix(x_in, y, x_oe, num_classes=4)
        partner = torch.arange(5) % 3
        lam = float(targets[0, y[partner[0]]] - targets[0].min())  # λ · 1 + (1 − λ)/K minus (1 − λ)/K
        assert torch.allclose(targets.sum(1), torch.ones(5)) and targets.shape == (5, 4)
        assert torch.allclose(targets, lam * F.one_hot(y[partner], 4) + (1 - lam) / 4, atol=1e-6)
        if mix_op == "mixup":
            assert torch.allclose(mixed, lam * x_in[partner] + (1 - lam) * x_oe, atol=1e-6)
        else:
            from_id = mixed > 1.0  # ID pixels are > 2, outlier pixels < -1: each pixel is one or the other
            assert torch.equal(mixed[from_id], x_in[partner][from_id])
            assert torch.equal(mixed[~from_id], x_oe[~from_id])
            assert from_id[0].float().mean().item() == pytest.approx(lam, abs=1e-6)  # λ: the ID share of pixels


def test_module_step_is_id_ce_plus_lambda_times_the_mixed_term():
    from oe_lightning.models import SmallCNN
    from oe_lightning.module import OutlierExposureModule

    torch.manual_seed(0)
    backbone = SmallCNN(num_classes=4, in_channels=1)
    fn = MixOE("cutmix", alpha=2.0, beta=2.0)
    module = OutlierExposureModule(backbone, 4, oe_loss=fn, lambda_oe=5.0)
    x_in, y, x_oe = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.rand(4, 1, 8, 8)
    torch.manual_seed(7)
    loss = module.training_step({"in": (x_in, y), "oe": x_oe}, 1)
    torch.manual_seed(7)
    mixed, targets = fn.mix(x_in, y, x_oe, 4)
    logits = backbone(torch.cat([x_in, mixed]))  # one forward over both: BatchNorm sees ID and mixed images
    expected = F.cross_entropy(logits[:4], y) + 5.0 * soft_cross_entropy(logits[4:], targets)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(OEUserError, match="mix_op"):
        MixOE("blend")
    with pytest.raises(OEUserError, match="alpha"):
        MixOE(alpha=0)


def test_loss_mixoe_trains_on_the_embedded_data(tmp_path):
    results = train_in_process(tmp_path, "loss=mixoe", "trainer.max_epochs=1")
    assert results["config"]["loss"] == "MixOE" and math.isfinite(results["mean"]["auroc"])
    assert results["config"]["lambda_oe"] == 1.0  # OpenOOD's train_mixoe.yml:8
