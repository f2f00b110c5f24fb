"""Detectors scored batch by batch during the evaluation pass: from feature maps (ASH) or from
the input with gradients (ODIN)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oe_lightning.detectors.base import Detector, energy_score
from oe_lightning.errors import OEUserError

ASH_VARIANTS = ("b", "p", "s")


def ash(maps: Tensor, percentile: float, variant: str) -> Tensor:
    """Activation shaping (Djurisic et al., ICLR 2023) of each sample's activations (all non-batch
    dims): keep the largest ``1 - percentile`` share, zero the rest; ``b`` sets the kept ones to
    the sample's total / their count, ``s`` scales them by exp(total before / total after)."""
    flat = maps.flatten(1)
    n = flat.shape[1]
    keep = n - int(round(n * percentile))
    values, index = flat.topk(keep, dim=1)
    if variant == "b":
        values = (flat.sum(1) / keep)[:, None].expand_as(values)
    pruned = torch.zeros_like(flat).scatter_(1, index, values)
    if variant == "s":  # an all-zero sample stays zero (pytorch-ood gives NaN there: 0 / 0)
        kept = pruned.sum(1)
        ratio = torch.where(kept != 0, flat.sum(1) / kept.where(kept != 0, torch.ones_like(kept)), 0.0)
        pruned = pruned * torch.exp(ratio)[:, None]
    return pruned.view_as(maps)


class ASH(Detector):
    """ASH-B/P/S on the backbone's last feature maps (before pooling), then its head, then the
    energy score. With a torchvision adapter the 'maps' are the penultimate vector."""

    needs = "maps"

    def __init__(self, variant: str = "s", percentile: float = 0.65):
        super().__init__()
        if variant not in ASH_VARIANTS:
            raise OEUserError(f"detector ash: variant must be one of {ASH_VARIANTS}, got {variant!r}.")
        if not 0.0 <= percentile < 1.0:
            raise OEUserError(f"detector ash: percentile is the pruned fraction in [0, 1), got {percentile}.")
        self.variant, self.percentile = variant, percentile

    def score_batch(self, model: nn.Module, view: Any, x: Tensor, maps: Tensor | None) -> Tensor:
        """The energy score of the head's logits on the ASH-shaped ``maps``."""
        return energy_score(view.forward_head(ash(maps, self.percentile, self.variant)))

    def hparams(self) -> dict[str, Any]:
        """``variant`` and ``percentile``."""
        return {"variant": self.variant, "percentile": self.percentile}


class ODIN(Detector):
    """ODIN (Liang et al., ICLR 2018): the input moved by ``eps`` against the gradient of the
    temperature-scaled cross-entropy to the predicted class, then minus the max softmax at
    temperature T. ``norm_std``: the data's per-channel std, so ``eps`` is in [0, 1] pixel units
    (the input is normalised). Needs gradients: two extra forward passes and one backward."""

    needs = "input"

    def __init__(self, temperature: float = 1000.0, eps: float = 0.0014, norm_std: Sequence[float] | None = None):
        super().__init__()
        if temperature <= 0 or eps < 0:
            raise OEUserError(f"detector odin: temperature must be > 0 and eps >= 0, got {temperature}, {eps}.")
        self.temperature, self.eps = float(temperature), float(eps)
        self.norm_std = list(norm_std) if norm_std is not None else None

    def score_batch(self, model: nn.Module, view: Any, x: Tensor, maps: Tensor | None) -> Tensor:
        """Minus the max softmax at temperature T of ``x`` moved by ``eps`` against the gradient (see the class)."""
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone().detach().requires_grad_(True)
            logits = model(x) / self.temperature
            loss = F.cross_entropy(logits, logits.argmax(dim=1))
            (grad,) = torch.autograd.grad(loss, x)
            step = grad.sign()
            if self.norm_std is not None:
                step = step / torch.tensor(self.norm_std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
            x_hat = x.detach() - self.eps * step
        with torch.no_grad():
            return -F.softmax(model(x_hat) / self.temperature, dim=1).max(dim=1).values

    def hparams(self) -> dict[str, Any]:
        """``temperature`` and ``eps``."""
        return {"temperature": self.temperature, "eps": self.eps}
