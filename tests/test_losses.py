import math

import pytest
import torch

from oe_lightning.losses import EnergyMargin, JensenShannonUniform, UniformCrossEntropy


def test_uniform_cross_entropy_is_the_papers_formula():
    torch.manual_seed(0)
    logits = torch.randn(64, 10) * 5
    expected = -(logits.mean(1) - torch.logsumexp(logits, 1)).mean()
    assert torch.allclose(UniformCrossEntropy()(logits, None, None), expected, atol=1e-6)


def test_uniform_cross_entropy_is_minimal_log_k_at_uniform_prediction():
    loss = UniformCrossEntropy()(torch.full((3, 7), 2.5), None, None)
    assert loss.item() == pytest.approx(math.log(7), abs=1e-6)
    assert UniformCrossEntropy()(torch.tensor([[9.0, 0, 0, 0, 0, 0, 0]]), None, None) > loss


def test_energy_margin_matches_hand_computation():
    logits_in = torch.tensor([[30.0, 0.0], [10.0, 10.0]])
    logits_oe = torch.tensor([[0.0, 0.0], [8.0, -50.0]])
    loss = EnergyMargin(m_in=-23.0, m_out=-5.0)(logits_oe, logits_in, None)
    e_in = [-(30 + math.log1p(math.exp(-30))), -(10 + math.log(2))]
    e_oe = [-math.log(2), -(8 + math.log1p(math.exp(-58)))]
    hinge_in = sum(max(e + 23, 0) ** 2 for e in e_in) / 2
    hinge_out = sum(max(-5 - e, 0) ** 2 for e in e_oe) / 2
    assert loss.item() == pytest.approx(hinge_in + hinge_out, rel=1e-6)
    # -10.69 > -23 gives (12.31)^2/2 for ID; -8 < -5 gives 3^2/2 for OE
    assert hinge_in == pytest.approx((23 - 10 - math.log(2)) ** 2 / 2, rel=1e-9)


def test_energy_margin_rejects_inverted_margins():
    with pytest.raises(ValueError, match="m_in < m_out"):
        EnergyMargin(m_in=-5, m_out=-23)


def test_jensen_shannon_is_zero_at_uniform_and_bounded_by_log2():
    js = JensenShannonUniform()
    assert js(torch.zeros(4, 10)).item() == pytest.approx(0.0, abs=1e-7)
    confident = js(torch.tensor([[1e4] + [0.0] * 9]))
    assert 0 < confident.item() < math.log(2)
    p = torch.tensor([0.7, 0.2, 0.1])
    u = torch.full((3,), 1 / 3)
    m = (p + u) / 2
    direct = 0.5 * (p * (p / m).log()).sum() + 0.5 * (u * (u / m).log()).sum()
    assert js(p.log().unsqueeze(0)).item() == pytest.approx(direct.item(), rel=1e-5)


@pytest.mark.parametrize("loss", [UniformCrossEntropy(), JensenShannonUniform(), EnergyMargin()])
def test_losses_are_differentiable_scalars(loss):
    # confident outliers (energy ~ -20 < m_out) so that every loss has a gradient on them
    logits_oe = (torch.randn(6, 5) * 3 + 20 * torch.eye(5)[torch.arange(6) % 5]).requires_grad_()
    out = loss(logits_oe, torch.randn(4, 5), torch.randint(0, 5, (4,)))
    assert out.ndim == 0
    out.backward()
    assert torch.isfinite(logits_oe.grad).all() and logits_oe.grad.abs().sum() > 0


def test_oecc_is_the_reference_formula_at_its_batch_sizes():
    """nazim1021/OOD-detection-using-OECC CIFAR/OECC_tune_cifar.ipynb (training cell): CE + 0.07 · sum_in
    (max p - A_tr)^2 + 0.05 · sum_out sum_k |p_k - 1/K| over batches of 128 ID and 256 OE samples, A_tr = 0.9486.
    Ours is written as means with the weights scaled to those sizes: the same value (and step) there."""
    from oe_lightning.losses import OutlierExposureConfidenceControl

    g = torch.Generator().manual_seed(0)
    logits_in, logits_oe = torch.randn(128, 10, generator=g) * 3, torch.randn(256, 10, generator=g)
    probabilities = torch.softmax(torch.cat([logits_in, logits_oe]), dim=1)
    max_probs = probabilities.max(dim=1).values
    reference = 0.07 * torch.sum((max_probs[:128] - 0.9486) ** 2) + \
        0.05 * torch.sum(torch.abs(probabilities[128:] - 1 / 10))
    ours = OutlierExposureConfidenceControl()(logits_oe, logits_in)
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)
    with pytest.raises(ValueError, match="a_train"):
        OutlierExposureConfidenceControl(a_train=1.5)


def test_loss_oecc_composes_with_the_references_weights():
    from tests.test_config import compose_train

    cfg = compose_train("loss=oecc")
    assert cfg.loss.lambda_oe == 1.0 and cfg.loss.fn.lambda_in == pytest.approx(0.07 * 128)
    assert cfg.loss.fn.lambda_out == pytest.approx(0.05 * 256) and cfg.loss.fn.a_train == 0.9486


def test_loss_oecc_trains(tmp_path):
    from tests.conftest import train_in_process

    results = train_in_process(tmp_path, "loss=oecc", "loss.fn.a_train=0.95", "trainer.max_epochs=1")
    assert results["config"]["loss"] == "OutlierExposureConfidenceControl" and math.isfinite(results["mean"]["fpr95"])
