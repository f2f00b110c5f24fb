"""Wasserstein distances between a batch of class distributions and one target distribution.

``cost="zero_one"`` (moving mass between any two classes costs 1) and ``cost="ordinal"`` (classes on a
line, |i - j|) have closed forms; any other K × K ground cost is solved with entropic optimal transport
(the debiased Sinkhorn divergence: log-domain iterations, batched, differentiable through the last one).
Every function takes ``p`` of shape ``(batch, K)`` and returns one distance per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from oe_lightning.errors import OEUserError

COSTS = ("zero_one", "ordinal")


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """W under the 0-1 cost: half the L1 distance (the mass that must move, each unit at cost 1)."""
    return 0.5 * (p - q).abs().sum(dim=-1)


def ordinal_wasserstein(p: Tensor, q: Tensor) -> Tensor:
    """W under the cost |i - j| (classes in order on a line): the L1 distance of the cumulative sums."""
    return (p.cumsum(dim=-1) - q.cumsum(dim=-1))[..., :-1].abs().sum(dim=-1)


def check_cost_matrix(cost: Sequence[Sequence[float]] | Tensor, num_classes: int | None = None) -> Tensor:
    """A ground cost as a float64 tensor: square, finite, non-negative, zero on the diagonal, and
    ``num_classes`` × ``num_classes`` when that is given; anything else is one clear error."""
    try:  # a list of lists, a ListConfig of them, or a tensor
        matrix = torch.as_tensor(cost.tolist() if isinstance(cost, Tensor) else [list(row) for row in cost],
                                 dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise OEUserError(f"loss.fn.cost must be zero_one, ordinal or a K x K matrix of numbers, "
                          f"got {cost!r}.") from err
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise OEUserError(f"loss.fn.cost must be a square K x K matrix (K classes), got shape {tuple(matrix.shape)}.")
    if num_classes is not None and matrix.shape[0] != num_classes:
        raise OEUserError(f"loss.fn.cost is {matrix.shape[0]} x {matrix.shape[0]}, but the model has {num_classes} "
                          f"classes: give one row and one column per class.")
    if not torch.isfinite(matrix).all() or (matrix < 0).any() or matrix.diagonal().abs().max() > 0:
        raise OEUserError("loss.fn.cost must hold finite costs >= 0 with zeros on the diagonal (staying in a class "
                          "costs nothing).")
    return matrix


def _entropic_potentials(a: Tensor, b: Tensor, log_kernel: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """Log-domain Sinkhorn: potentials ``f`` (rows of ``a``) and ``g`` (``b``) with the plan
    ``exp(f_i + log_kernel_ij + g_j)`` having marginals ``a`` and ``b``; ``a`` and ``b`` are ``(batch, K)``."""
    log_a, log_b = a.clamp_min(1e-30).log(), b.clamp_min(1e-30).log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    for _ in range(iterations):
        f = log_a - torch.logsumexp(log_kernel.unsqueeze(0) + g.unsqueeze(1), dim=2)
        g = log_b - torch.logsumexp(log_kernel.unsqueeze(0) + f.unsqueeze(2), dim=1)
    return f, g


def _entropic_value(a: Tensor, b: Tensor, log_kernel: Tensor, reg: float, iterations: int) -> Tensor:
    """The entropic transport value ``min <P, C> - reg H(P)`` (up to the constant ``-reg``) from its dual.

    The iterations run without autograd; one last update from the converged potentials is differentiable (the
    envelope theorem: at the optimum the value's gradient is the potentials themselves, Feydy et al. 2019), so
    the backward pass costs one update instead of ``iterations``."""
    with torch.no_grad():
        f, g = _entropic_potentials(a, b, log_kernel, iterations)
    log_a, log_b = a.clamp_min(1e-30).log(), b.clamp_min(1e-30).log()
    f = log_a - torch.logsumexp(log_kernel.unsqueeze(0) + g.unsqueeze(1), dim=2)
    g = log_b - torch.logsumexp(log_kernel.unsqueeze(0) + f.detach().unsqueeze(2), dim=1)
    return reg * ((a * f).sum(dim=1) + (b * g).sum(dim=1))


def sinkhorn_divergence(p: Tensor, q: Tensor, cost: Tensor, epsilon: float = 0.01, iterations: int = 200) -> Tensor:
    """The debiased Sinkhorn divergence ``OT_e(p, q) - OT_e(p, p) / 2 - OT_e(q, q) / 2`` per row of ``p``
    (Feydy et al., AISTATS 2019): zero exactly when ``p == q``, positive otherwise, and the exact W as the
    regularisation goes to 0. ``epsilon`` is relative to the largest cost (the regularisation is
    ``epsilon * cost.max()``); ``iterations`` log-domain updates, all rows at once, differentiable through
    the last. tests/test_wasserstein.py measures its gap to an exact linear program.
    """
    cost = cost.to(device=p.device, dtype=p.dtype)
    reg = epsilon * float(cost.max().clamp_min(1e-12))
    log_kernel = -cost / reg
    q = q.expand_as(p)
    between = _entropic_value(p, q, log_kernel, reg, iterations)
    own = _entropic_value(p, p, log_kernel, reg, iterations)
    target = _entropic_value(q[:1], q[:1], log_kernel, reg, iterations)  # one row: q is the same for all
    return between - 0.5 * own - 0.5 * target


def sinkhorn_cost(p: Tensor, q: Tensor, cost: Tensor, epsilon: float = 0.01, iterations: int = 200) -> Tensor:
    """The transport cost ``<P, C>`` of the entropic optimal plan between each row of ``p`` and ``q`` (biased:
    above the exact W, and above 0 even for ``p == q``; the OE term uses :func:`sinkhorn_divergence`)."""
    cost = cost.to(device=p.device, dtype=p.dtype)
    reg = epsilon * float(cost.max().clamp_min(1e-12))
    log_kernel = -cost / reg
    f, g = _entropic_potentials(p, q.expand_as(p), log_kernel, iterations)
    plan = (f.unsqueeze(2) + log_kernel.unsqueeze(0) + g.unsqueeze(1)).exp()   # (batch, K, K)
    return (plan * cost).sum(dim=(1, 2))


def wasserstein_to(p: Tensor, q: Tensor, cost: str | Tensor, epsilon: float = 0.01, iterations: int = 200) -> Tensor:
    """W(p_i, q) per row under ``cost``: ``zero_one`` and ``ordinal`` exactly, a matrix by the debiased
    Sinkhorn divergence."""
    if isinstance(cost, str):
        if cost == "zero_one":
            return total_variation(p, q)
        if cost == "ordinal":
            return ordinal_wasserstein(p, q)
        raise OEUserError(f"loss.fn.cost={cost!r} must be one of {', '.join(COSTS)} or a K x K matrix.")
    return sinkhorn_divergence(p, q, cost, epsilon, iterations)


def uniform_like(p: Tensor) -> Tensor:
    """The uniform distribution over ``p``'s classes, shaped to broadcast against ``p``."""
    k = p.shape[-1]
    return torch.full((k,), 1.0 / k, dtype=p.dtype, device=p.device)



def wasserstein_to_classes(p: Tensor, cost: str | Tensor) -> Tensor:
    """W(p_i, e_k) for every row and every class k, shape ``(batch, K)``, exact for any ground cost: all of a
    row's mass must move to class k, so the only plan costs ``sum_j p_ij C_jk`` (0-1 cost: ``1 - p_ik``)."""
    if isinstance(cost, str):
        if cost == "zero_one":
            return 1 - p
        if cost == "ordinal":
            index = torch.arange(p.shape[-1], device=p.device, dtype=p.dtype)
            return p @ (index[:, None] - index[None, :]).abs()
        raise OEUserError(f"cost={cost!r} must be one of {', '.join(COSTS)} or a K x K matrix.")
    return p @ cost.to(device=p.device, dtype=p.dtype)
