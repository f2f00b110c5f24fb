"""The background class (K+1): the module's objective on a BackgroundClassifier equals pytorch-ood's
BackgroundClassLoss on the network's K+1 outputs (ID labels, OE label K), energy on its K outputs ranks as the
background probability, and a run trains, is evaluated again from its checkpoint and refuses a foreign backbone."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from oe_lightning.errors import OEUserError
from oe_lightning.losses import BackgroundClass
from oe_lightning.models import BackgroundClassifier, SmallCNN
from oe_lightning.module import OutlierExposureModule
from oe_lightning.scores import Energy
from tests.conftest import run_in_process, train_in_process


@pytest.mark.parametrize("lambda_oe", [1.0, 0.3])
def test_objective_is_cross_entropy_over_k_plus_one_outputs(lambda_oe):
    from pytorch_ood.loss import BackgroundClassLoss

    torch.manual_seed(0)
    network = SmallCNN(num_classes=5, in_channels=1)  # K = 4 classes + the background class
    model = BackgroundClassifier(network, 4)
    module = OutlierExposureModule(model, 4, oe_loss=BackgroundClass(lambda_oe), lambda_oe=lambda_oe)
    x_in, y, x_oe = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1]), torch.rand(9, 1, 8, 8)
    loss = module.training_step({"in": (x_in, y), "oe": x_oe}, 1)
    z = network(torch.cat([x_in, x_oe]))  # the same forward: one pass over ID + OE
    oracle = BackgroundClassLoss(n_classes=4)  # OOD targets < 0 become class 4 (pytorch-ood loss/background.py)
    reference = oracle(z[:6], y.clone()) + lambda_oe * oracle(z[6:], torch.full((9,), -1))
    assert float(loss.detach()) == pytest.approx(float(reference), abs=1e-5)


def test_energy_on_the_k_outputs_is_minus_log_of_one_minus_the_background_probability():
    torch.manual_seed(1)
    network = SmallCNN(num_classes=11, in_channels=1)
    model = BackgroundClassifier(network, 10).eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        background = F.softmax(network(x), dim=1)[:, -1]  # NTOM's score, eval_ood_detection.py:100-105
        energy = Energy()(model(x))
    assert torch.allclose(energy, -torch.log1p(-background), atol=1e-5)
    assert torch.equal(torch.argsort(energy), torch.argsort(background))
    assert torch.equal(model(x).argmax(1), network(x)[:, :10].argmax(1))  # the class decision over the first K


def test_background_runs_train_and_are_evaluated_again_from_their_checkpoint(tmp_path):
    results = train_in_process(tmp_path / "run", "loss=background", "score=energy", "trainer.max_epochs=1")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    stored = ckpt["oe_lightning"]["model_config"]
    assert stored["_target_"] == "oe_lightning.models.background_classifier"
    assert stored["backbone"] == "oe_lightning.models.SmallCNN" and stored["num_classes"] == 10
    assert ckpt["state_dict"]["backbone.network.fc.weight"].shape[0] == 11  # K + 1 outputs
    again = run_in_process("oe-eval", tmp_path / "eval", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
                           "score=energy")
    assert again["mean"] == pytest.approx(results["mean"], abs=1e-6)
    assert again["id_accuracy"] == results["id_accuracy"]
    # a checkpoint naming a backbone factory that is not allowed is refused before anything is built
    from oe_lightning.checkpoints import checked_model_config

    with pytest.raises(OEUserError, match="backbone='os.system' is not an allowed"):
        checked_model_config({**stored, "backbone": "os.system"}, [], "x.ckpt")
    json.dumps(results)
