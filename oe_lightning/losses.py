"""Outlier Exposure losses.

Every loss has one signature, ``loss(logits_oe, logits_in, targets) -> scalar``: the logits of
the auxiliary outliers, the logits and labels of the in-distribution samples of the same step.
The returned term is averaged over OE samples (and, where it has one, over ID samples) and is
added to the ID cross-entropy as ``lambda_oe * loss``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oe_lightning.errors import OEUserError
from oe_lightning.transport import (
    COSTS,
    check_cost_matrix,
    uniform_like,
    wasserstein_to,
    wasserstein_to_classes,
)


class UniformCrossEntropy(nn.Module):
    """Cross-entropy from softmax(logits_oe) to the uniform distribution (the paper's L_OE).

    Equal to ``-(logits_oe.mean(1) - logsumexp(logits_oe, 1)).mean()``; its minimum, log K,
    is reached when the prediction on an outlier is uniform over the K classes.
    """

    def forward(self, logits_oe: Tensor, logits_in: Tensor | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Mean over OE samples of ``logsumexp - mean`` of the logits; ID arguments unused."""
        return (torch.logsumexp(logits_oe, dim=1) - logits_oe.mean(dim=1)).mean()


class JensenShannonUniform(nn.Module):
    """Jensen–Shannon divergence between softmax(logits_oe) and the uniform distribution.

    Bounded by log 2, so single confident outliers cannot dominate the step the way the
    unbounded cross-entropy lets them.
    """

    def forward(self, logits_oe: Tensor, logits_in: Tensor | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Mean over OE samples, computed in float64, returned in the logits' dtype; ID arguments unused."""
        num_classes = logits_oe.shape[1]
        log_p = F.log_softmax(logits_oe.double(), dim=1)
        log_u = torch.full_like(log_p, -math.log(num_classes))
        # log of the mixture m = (p + u) / 2, computed in log space
        log_m = torch.logaddexp(log_p, log_u) - math.log(2.0)
        kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=1)
        kl_um = (log_u.exp() * (log_u - log_m)).sum(dim=1)
        return (0.5 * (kl_pm + kl_um)).mean().to(logits_oe.dtype)


class EnergyMargin(nn.Module):
    """Energy-bounded learning (Liu et al., NeurIPS 2020, "Energy-based OOD Detection").

    With E(x) = -T · logsumexp(f(x) / T), squared hinges push ID energies below ``m_in`` and
    OE energies above ``m_out``: mean(relu(E_in - m_in)²) + mean(relu(m_out - E_oe)²).
    """

    def __init__(self, m_in: float = -23.0, m_out: float = -5.0, temperature: float = 1.0):
        super().__init__()
        if m_in >= m_out:
            raise ValueError(
                f"EnergyMargin needs m_in < m_out (ID energies are pushed below m_in, outlier "
                f"energies above m_out); got m_in={m_in}, m_out={m_out}. The paper's CIFAR "
                f"values are loss.fn.m_in=-23 loss.fn.m_out=-5."
            )
        self.m_in, self.m_out, self.temperature = m_in, m_out, temperature

    def energy(self, logits: Tensor) -> Tensor:
        """E = -T · logsumexp(logits / T), one per sample."""
        return -self.temperature * torch.logsumexp(logits / self.temperature, dim=1)

    def forward(self, logits_oe: Tensor, logits_in: Tensor, targets: Tensor | None = None) -> Tensor:
        """The two squared hinges, each averaged over its samples; ``targets`` unused."""
        hinge_in = F.relu(self.energy(logits_in) - self.m_in).pow(2).mean()
        hinge_out = F.relu(self.m_out - self.energy(logits_oe)).pow(2).mean()
        return hinge_in + hinge_out


class GroundCost(nn.Module):
    """The ground cost of a Wasserstein OE term: ``zero_one``, ``ordinal`` or a K × K matrix (checked when
    given, and against the model's classes at the first step)."""

    def __init__(self, cost: str | list[list[float]]):
        super().__init__()
        if isinstance(cost, str) and cost not in COSTS:
            raise OEUserError(f"loss.fn.cost={cost!r} must be one of {', '.join(COSTS)} or a K x K matrix of costs.")
        self.name = cost if isinstance(cost, str) else None
        if self.name is None:
            self.register_buffer("matrix", check_cost_matrix(cost).float(), persistent=False)

    def for_classes(self, num_classes: int) -> str | Tensor:
        """The cost to use with ``num_classes`` classes: its name, or the matrix (refused if not K × K)."""
        if self.name is not None:
            return self.name
        if self.matrix.shape[0] != num_classes:
            raise OEUserError(f"loss.fn.cost is {self.matrix.shape[0]} x {self.matrix.shape[0]}, but the model has "
                              f"{num_classes} classes: give one row and one column per class.")
        return self.matrix


class WassersteinUniform(nn.Module):
    """Wasserstein distance between softmax(logits_oe) and the uniform distribution, under a ground cost on
    the classes (the mission's "a Wasserstein distance" in place of the cross-entropy).

    ``cost="zero_one"``: every move costs 1, W = total variation ½‖p − u‖₁ (exact). ``cost="ordinal"``: classes
    on a line, cost |i − j|, W from the cumulative distributions (exact). A K × K matrix (e.g. distances
    between class embeddings): entropic transport, ``epsilon`` (relative to the largest cost) and
    ``iterations`` Sinkhorn updates, see :func:`oe_lightning.transport.sinkhorn_cost`. Zero exactly when the
    prediction is uniform; averaged over OE samples.
    """

    def __init__(self, cost: str | list[list[float]] = "zero_one", epsilon: float = 0.01, iterations: int = 200):
        super().__init__()
        if not (isinstance(epsilon, int | float) and 0 < epsilon <= 1) or not (isinstance(iterations, int)
                                                                             and iterations >= 1):
            raise OEUserError(f"loss.fn.epsilon must be in (0, 1] and loss.fn.iterations an integer >= 1, got "
                              f"{epsilon!r} and {iterations!r}; e.g. 0.01 and 200.")
        self.ground = GroundCost(cost)
        self.epsilon, self.iterations = float(epsilon), iterations

    def forward(self, logits_oe: Tensor, logits_in: Tensor | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Mean over OE samples of W(softmax(logits_oe), uniform); ID arguments unused."""
        p = F.softmax(logits_oe.float(), dim=1)
        cost = self.ground.for_classes(p.shape[1])
        return wasserstein_to(p, uniform_like(p), cost, self.epsilon, self.iterations).mean().to(logits_oe.dtype)


class WassersteinToClasses(nn.Module):
    """WOOD's OE term (Wang et al., TPAMI 2024; wyn430/WOOD ``WOOD_Loss.py``, ``NLLWOOD_Loss_v2``): minus the
    mean over OE samples of ``min_k W(softmax(logits_oe), e_k)``, the distance to the nearest one-hot class
    distribution, so outliers are pushed away from every class. With the reference's 0-1 cost
    (``custom_cost``: ``1 - eye``) that is ``1 - max_k p_k``; ``ordinal`` or a K × K matrix are exact too
    (moving all mass to one class has a single plan). The reference reaches the same value through an
    entropic Sinkhorn (geomloss, ``blur=1``); here it is exact. Its weight β is 0.1 in the reference's
    commands (``main_OOD_binary.py 0.1 ...``)."""

    def __init__(self, cost: str | list[list[float]] = "zero_one"):
        super().__init__()
        self.ground = GroundCost(cost)

    def forward(self, logits_oe: Tensor, logits_in: Tensor | None = None,
                targets: Tensor | None = None) -> Tensor:
        """Minus the mean over OE samples of the distance to the nearest class; ID arguments unused."""
        p = F.softmax(logits_oe.float(), dim=1)
        return -wasserstein_to_classes(p, self.ground.for_classes(p.shape[1])).min(dim=1).values.mean().to(
            logits_oe.dtype)


class OutlierExposureConfidenceControl(nn.Module):
    """OECC (Papadopoulos et al., Neural Networks 2021; nazim1021/OOD-detection-using-OECC,
    ``CIFAR/OECC_tune_cifar.ipynb``, training cell): an L1 distance of softmax(logits_oe) to uniform, plus
    a term keeping the ID samples' maximum softmax probability near the baseline's training accuracy
    ``a_train``: ``lambda_in * mean_in (max p - a_train)^2 + lambda_out * mean_oe sum_k |p_k - 1/K|``.

    The reference *sums* both terms over the batch (``torch.sum``) with λ1 = 0.07 and λ2 = 0.05 at batch
    sizes 128 (ID) and 256 (OE); here they are means, as every OE term of this framework, with the weights
    scaled so the step is the reference's at those sizes: λ_in = 0.07 · 128 = 8.96, λ_out = 0.05 · 256 =
    12.8. ``a_train``: 0.9486 for the CIFAR-10 WRN baseline, 0.7573 for CIFAR-100 (the notebook's A_tr).
    Use it with ``loss.lambda_oe=1`` (its weights are inside).
    """

    def __init__(self, a_train: float = 0.9486, lambda_in: float = 0.07 * 128, lambda_out: float = 0.05 * 256):
        super().__init__()
        if not (isinstance(a_train, int | float) and 0 < a_train <= 1):
            raise OEUserError(f"loss.fn.a_train is the baseline's training accuracy, in (0, 1], got {a_train!r}; "
                              f"the reference uses 0.9486 (CIFAR-10) and 0.7573 (CIFAR-100).")
        self.a_train, self.lambda_in, self.lambda_out = float(a_train), float(lambda_in), float(lambda_out)

    def forward(self, logits_oe: Tensor, logits_in: Tensor, targets: Tensor | None = None) -> Tensor:
        """The two terms, each a mean over its samples; ``targets`` unused."""
        max_in = F.softmax(logits_in, dim=1).max(dim=1).values
        p_oe = F.softmax(logits_oe, dim=1)
        to_uniform = (p_oe - 1.0 / p_oe.shape[1]).abs().sum(dim=1)
        return self.lambda_in * (max_in - self.a_train).pow(2).mean() + self.lambda_out * to_uniform.mean()


def log1mexp(s: Tensor) -> Tensor:
    """``log(1 - exp(s))`` for ``s <= 0``, accurate at both ends (Mächler 2012)."""
    s = s.clamp_max(-1e-12)
    return torch.where(s > -math.log(2), torch.log(-torch.expm1(s)), torch.log1p(-torch.exp(s)))


class BackgroundClass(nn.Module):
    """OE samples labelled as a K+1-th "background" class (NTOM, Chen et al. 2021; pytorch-ood's
    BackgroundClassLoss): cross-entropy over K+1 outputs, for ID samples with their labels and for OE samples
    with label K (jfc43/informative-outlier-mining train_ntom.py:343-356: ``in_loss + beta * out_loss``).

    The model is a :class:`~oe_lightning.models.background.BackgroundClassifier` (``loss.background_class``),
    whose K outputs are the joint log-probabilities of the classes; the module's CE over them is
    ``-log p(y) + log(1 - p(K))``, so this term adds ``-log(1 - p(K))`` of the ID samples back (divided by
    ``lambda_oe``, which multiplies the term): the total is the reference's ``CE_{K+1}(in) + λ · CE_{K+1}(oe, K)``.
    """

    def __init__(self, lambda_oe: float = 1.0):
        super().__init__()
        self.lambda_oe = float(lambda_oe)

    def forward(self, logits_oe: Tensor, logits_in: Tensor | None = None, targets: Tensor | None = None) -> Tensor:
        """Mean ``-log p(K | x)`` over OE samples + mean ``-log(1 - p(K | x))`` over ID samples / λ."""
        background_oe = -log1mexp(torch.logsumexp(logits_oe, dim=1)).mean()  # -log p(K) = -log(1 - Σ p(k))
        if logits_in is None or self.lambda_oe <= 0:
            return background_oe
        return background_oe - torch.logsumexp(logits_in, dim=1).mean() / self.lambda_oe
