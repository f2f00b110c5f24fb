"""The Wasserstein OE term: each ground cost against an exact transport linear program (scipy's linprog),
gradients against finite differences, and the loss in a training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from oe_lightning.errors import OEUserError
from oe_lightning.losses import WassersteinUniform
from oe_lightning.transport import check_cost_matrix, sinkhorn_cost, sinkhorn_divergence, wasserstein_to


def exact_wasserstein(p: np.ndarray, q: np.ndarray, cost: np.ndarray) -> float:
    """min <P, C> over plans P >= 0 with row sums p and column sums q, as a linear program."""
    k = len(p)
    rows = np.kron(np.eye(k), np.ones(k))          # sum_j P_ij = p_i
    cols = np.kron(np.ones(k), np.eye(k))          # sum_i P_ij = q_j
    result = linprog(cost.reshape(-1), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([p, q]),
                     bounds=(0, None), method="highs")
    assert result.status == 0
    return float(result.fun)


def _distributions(n: int = 12, k: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.1, 4, n, dtype=torch.float64)[:, None]  # from nearly uniform to confident
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    return torch.softmax(logits, dim=1)


@pytest.mark.parametrize("name", ["zero_one", "ordinal"])
def test_the_closed_forms_equal_the_exact_transport_program(name):
    p = _distributions()
    k = p.shape[1]
    u = torch.full((k,), 1 / k, dtype=torch.float64)
    index = np.arange(k)
    cost = (index[:, None] != index[None, :]).astype(float) if name == "zero_one" else \
        np.abs(index[:, None] - index[None, :]).astype(float)
    ours = wasserstein_to(p, u, name)
    exact = [exact_wasserstein(row.numpy(), u.numpy(), cost) for row in p]
    assert ours.tolist() == pytest.approx(exact, abs=1e-9)


def test_the_sinkhorn_divergence_approaches_the_exact_transport_cost_for_any_cost_matrix():
    """A random metric cost (distances between random class embeddings), against the exact LP: with epsilon =
    0.01 of the largest cost (the loss's default) and 300 updates, the debiased divergence is within 1% of the
    largest cost; with epsilon = 0.002, within 0.6%; it is exactly 0 at the target, where the plain entropic
    cost is not (it is biased, which would move the loss's minimum away from uniform)."""
    p = _distributions(k=5, seed=1)
    g = torch.Generator().manual_seed(2)
    points = torch.randn(5, 3, generator=g, dtype=torch.float64)
    cost = torch.cdist(points, points)
    u = torch.full((5,), 0.2, dtype=torch.float64)
    exact = torch.tensor([exact_wasserstein(row.numpy(), u.numpy(), cost.numpy()) for row in p], dtype=torch.float64)
    coarse = (sinkhorn_divergence(p, u, cost, epsilon=0.01, iterations=300) - exact).abs().max()
    fine = (sinkhorn_divergence(p, u, cost, epsilon=0.002, iterations=2000) - exact).abs().max()
    scale = float(cost.max())
    assert coarse < 0.01 * scale and fine < 0.006 * scale and fine < coarse
    for epsilon in (0.01, 0.2):
        assert float(sinkhorn_divergence(u[None], u, cost, epsilon)[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(sinkhorn_cost(u[None], u, cost, epsilon=0.2)[0]) > 0.01  # the biased cost
    assert torch.equal(wasserstein_to(p, u, cost), sinkhorn_divergence(p, u, cost))


@pytest.mark.parametrize("cost", ["zero_one", "ordinal", "matrix"])
def test_gradients_match_finite_differences(cost):
    """gradcheck in float64 on logits away from the kinks of |·| (no coordinate exactly at uniform)."""
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(4, 4, generator=g, dtype=torch.float64) * 2).requires_grad_()
    matrix = torch.tensor([[0, 1, 2, 1], [1, 0, 1, 2], [2, 1, 0, 1], [1, 2, 1, 0]], dtype=torch.float64)
    spec = matrix if cost == "matrix" else cost

    def term(x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(x, dim=1)
        u = torch.full((4,), 0.25, dtype=torch.float64)
        return wasserstein_to(p, u, spec, epsilon=0.05, iterations=50)

    assert torch.autograd.gradcheck(term, (logits,), eps=1e-6, atol=1e-5)


def test_the_loss_is_zero_at_uniform_positive_elsewhere_and_learns_uniform_predictions():
    loss = WassersteinUniform("ordinal")
    assert float(loss(torch.zeros(3, 10))) == pytest.approx(0.0, abs=1e-7)
    confident = torch.tensor([[9.0, 0, 0, 0, 0]])
    assert float(WassersteinUniform("zero_one")(confident)) == pytest.approx(
        0.5 * float((torch.softmax(confident, 1) - 0.2).abs().sum()), rel=1e-6)
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(6)).mul(3).requires_grad_()
    optimiser = torch.optim.Adam([logits], lr=0.05)
    start = float(loss(logits))
    for _ in range(300):
        optimiser.zero_grad()
        loss(logits).backward()
        optimiser.step()
    assert float(loss(logits)) < 0.05 * start


def test_bad_costs_are_refused_in_one_sentence():
    with pytest.raises(OEUserError, match="cost='earth'"):
        WassersteinUniform("earth")
    with pytest.raises(OEUserError, match="square"):
        WassersteinUniform([[0, 1, 2], [1, 0, 1]])
    with pytest.raises(OEUserError, match="zeros on the diagonal"):
        WassersteinUniform([[1, 1], [1, 0]])
    with pytest.raises(OEUserError, match="model has 3 classes"):
        WassersteinUniform([[0, 1], [1, 0]])(torch.zeros(2, 3))
    assert check_cost_matrix([[0, 2], [2, 0]]).dtype == torch.float64


def test_loss_wasserstein_trains_from_the_command_line(tmp_path):
    """loss=wasserstein composes and trains (zero_one by default; an ordinal cost by override)."""
    from tests.conftest import train_in_process

    results = train_in_process(tmp_path / "a", "loss=wasserstein", "trainer.max_epochs=1")
    assert results["config"]["loss"] == "WassersteinUniform" and np.isfinite(results["mean"]["fpr95"])
    results = train_in_process(tmp_path / "b", "loss=wasserstein", "loss.fn.cost=ordinal", "trainer.max_epochs=1")
    assert np.isfinite(results["mean"]["auroc"])


@pytest.mark.parametrize("name", ["zero_one", "ordinal", "matrix"])
def test_distances_to_each_class_equal_the_exact_transport_program(name):
    """WOOD's distance W(p, e_k) to a one-hot class distribution, for every k, against the LP."""
    from oe_lightning.transport import wasserstein_to_classes

    p = _distributions(n=5, k=4, seed=4)
    index = np.arange(4)
    cost = {"zero_one": (index[:, None] != index[None, :]).astype(float),
            "ordinal": np.abs(index[:, None] - index[None, :]).astype(float),
            "matrix": np.array([[0, 1, 3, 2], [1, 0, 1, 2], [3, 1, 0, 1], [2, 2, 1, 0]], dtype=float)}[name]
    ours = wasserstein_to_classes(p, torch.tensor(cost) if name == "matrix" else name)
    exact = [[exact_wasserstein(row.numpy(), np.eye(4)[k], cost) for k in range(4)] for row in p]
    assert ours.tolist() == [pytest.approx(r, abs=1e-9) for r in exact]


def test_wood_term_and_score_under_the_references_zero_one_cost():
    """WOOD_Loss.py: the OE term is minus the mean min_k W(p, e_k) (custom_cost = 1 - eye: 1 - max p), the score
    the same distance, larger for more OOD; it ranks samples exactly as MSP does."""
    from oe_lightning.losses import WassersteinToClasses
    from oe_lightning.scores import MaxSoftmax, WassersteinScore

    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(5)) * 3
    p = torch.softmax(logits, dim=1)
    assert float(WassersteinToClasses()(logits)) == pytest.approx(-float((1 - p.max(1).values).mean()), rel=1e-6)
    score = WassersteinScore()(logits)
    assert torch.allclose(score, 1 - p.max(1).values, atol=1e-6)
    assert torch.equal(score.argsort(), MaxSoftmax()(logits).argsort())
    assert float(WassersteinToClasses()(torch.zeros(2, 10))) == pytest.approx(-0.9)  # uniform: farthest, 1 - 1/K


def test_loss_wood_with_score_wood_trains_and_is_deployable(tmp_path):
    from oe_lightning import detector_registry
    from tests.conftest import train_in_process

    results = train_in_process(tmp_path, "loss=wood", "score=wood", "trainer.max_epochs=1")
    assert results["config"]["loss"] == "WassersteinToClasses" and results["detector"] == "wood"
    assert np.isfinite(results["mean"]["fpr95"]) and "wood" in detector_registry.deployable_names()
