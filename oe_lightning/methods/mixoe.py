"""MixOE (Zhang et al., WACV 2023): ID images mixed with outliers, trained toward soft targets.

The OE side of each step is ``mix(x_in, y, x_oe)``: each outlier mixed with an ID image (mixup or cutmix) at a
ratio λ ~ Beta(α, β) drawn once per batch, with the soft target ``λ · onehot(y) + (1 − λ) · uniform``; the OE
term is the soft cross-entropy of the mixed images' logits to those targets (Jingkang50/OpenOOD
openood/trainers/mixoe_trainer.py:73-97, zjysteven/MixOE train/train_mixoe.py:283-304).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oe_lightning.errors import OEUserError

MIX_OPS = ("cutmix", "mixup")


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """The box ``(top, bottom, left, right)`` that cutmix pastes: sides ``√(1 − λ)`` of the image's, centred at
    ``(cy, cx)``, clipped to the image (mixoe_trainer.py:138-154, train_mixoe.py:45-61)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over samples of ``Σ_k −t_k log softmax(logits)_k`` (mixoe_trainer.py:116-128)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class MixOE(nn.Module):
    """MixOE's OE term and batch mixing.

    Args:
        mix_op: ``cutmix`` (an outlier's box pasted into the ID image; λ becomes the ID share of the pixels) or
            ``mixup`` (``λ · x_in + (1 − λ) · x_oe``).
        alpha, beta: λ ~ Beta(α, β), once per batch (OpenOOD's train_mixoe.yml:9-10: 0.1 and 1.0).

    Each outlier ``i`` is mixed with ID image ``i mod n_in`` (the reference pairs equal batches row by row).
    """

    mixes_batch = True

    def __init__(self, mix_op: str = "cutmix", alpha: float = 0.1, beta: float = 1.0):
        super().__init__()
        if mix_op not in MIX_OPS:
            raise OEUserError(f"loss.fn.mix_op must be one of {', '.join(MIX_OPS)}, got {mix_op!r}.")
        if not (alpha > 0 and beta > 0):
            raise OEUserError(f"loss.fn.alpha and loss.fn.beta must be > 0 (λ ~ Beta(alpha, beta)), got {alpha}, "
                              f"{beta}; OpenOOD uses 0.1 and 1.0.")
        self.mix_op, self.alpha, self.beta = mix_op, float(alpha), float(beta)

    def mix(self, x_in: Tensor, y: Tensor, x_oe: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        """The mixed images (one per outlier) and their soft targets. Random draws come from torch's default
        generator on the CPU (reseeded every step by the module: a resumed run draws the same)."""
        lam = float(torch.distributions.Beta(self.alpha, self.beta).sample())
        partner = torch.arange(x_oe.shape[0], device=x_in.device) % x_in.shape[0]
        x_id, y_id = x_in[partner], y[partner]
        if self.mix_op == "mixup":
            mixed = lam * x_id + (1.0 - lam) * x_oe
        else:
            height, width = x_in.shape[-2:]
            cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
            top, bottom, left, right = cutmix_box(height, width, lam, cy, cx)
            mixed = x_id.clone()
            mixed[..., top:bottom, left:right] = x_oe[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        one_hot = F.one_hot(y_id, num_classes).to(x_oe.dtype if x_oe.is_floating_point() else torch.float32)
        targets = lam * one_hot + (1.0 - lam) / num_classes
        return mixed, targets

    def forward(self, logits_mixed: Tensor, logits_in: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        """Soft cross-entropy of the mixed images' logits to their soft targets (from :meth:`mix`)."""
        if targets is None or targets.shape != logits_mixed.shape:
            raise OEUserError("MixOE's OE term needs the soft targets of its mixed batch (MixOE.mix); it is a batch "
                              "method, trained through OutlierExposureModule.")
        return soft_cross_entropy(logits_mixed, targets.to(logits_mixed.dtype))
