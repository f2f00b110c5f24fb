import math

import pytest
import torch

from oe_lightning.scores import Energy, Entropy, MaxLogit, MaxSoftmax, UniformCrossEntropyScore

CONFIDENT = torch.tensor([[12.0, 0.0, 0.0, 0.0]])
UNIFORM = torch.tensor([[1.0, 1.0, 1.0, 1.0]])


@pytest.mark.parametrize("score", [MaxSoftmax(), MaxLogit(), Energy(), UniformCrossEntropyScore(),
                                   Entropy()])
def test_uniform_predictions_score_as_more_ood_than_confident_ones(score):
    assert score(UNIFORM).item() > score(CONFIDENT).item()


def test_score_values():
    assert MaxSoftmax()(UNIFORM).item() == pytest.approx(-0.25)
    assert MaxLogit()(CONFIDENT).item() == pytest.approx(-12.0)
    assert Energy()(UNIFORM).item() == pytest.approx(-(1 + math.log(4)))
    assert Energy(temperature=2.0)(UNIFORM).item() == pytest.approx(-2 * (0.5 + math.log(4)))
    assert UniformCrossEntropyScore()(UNIFORM).item() == pytest.approx(-math.log(4))
    assert Entropy()(UNIFORM).item() == pytest.approx(math.log(4))
