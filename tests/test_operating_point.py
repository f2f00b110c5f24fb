"""The deployed threshold: chosen on ID validation data only, reported at a fixed threshold, stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oe_lightning.calibration import expected_calibration_error
from oe_lightning.metrics import accepted_share, operating_threshold
from tests.conftest import run_in_process, train_in_process


def test_the_threshold_keeps_the_asked_share_of_validation_scores_and_no_more():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0])
    assert operating_threshold(scores, 0.9) == pytest.approx(0.9)  # 9 of 10 kept
    assert operating_threshold(scores, 0.95) == pytest.approx(1.0)  # 9.5 -> all 10
    assert operating_threshold(scores, 0.1) == pytest.approx(0.1)
    assert accepted_share(scores, 0.9) == pytest.approx(0.9)
    tied = torch.tensor([1.0] * 5 + [2.0] * 5)
    assert operating_threshold(tied, 0.3) == 1.0 and accepted_share(tied, 1.0) == 0.5
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        operating_threshold(scores, 0.0)


def test_the_deployed_model_flags_scores_above_the_threshold_as_ood():
    from torch import nn

    from oe_lightning.deployment import DeployedModel
    from oe_lightning.scores import MaxSoftmax

    logits = torch.tensor([[9.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 5.0]])  # sure, unsure, sure
    model = DeployedModel(nn.Flatten(), MaxSoftmax(), threshold=-0.9)
    _, score, is_ood = model(logits.view(3, 3, 1, 1))
    assert torch.equal(score, -torch.softmax(logits, 1).amax(1)) and is_ood.tolist() == [False, True, False]


def test_ece_is_the_equal_width_bin_gap_as_guo_et_al():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 2000)
    correct = rng.uniform(size=2000) < conf ** 2  # over-confident
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):  # (lo, hi], restated in numpy
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            expected += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    assert expected_calibration_error(torch.from_numpy(conf), torch.from_numpy(correct)) == pytest.approx(expected)
    assert expected_calibration_error(torch.ones(10), torch.ones(10, dtype=torch.bool)) == 0.0


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("op") / "run"
    return run, train_in_process(run, "trainer.max_epochs=2")


def test_training_reports_what_the_deployed_threshold_does_and_stores_it_in_the_checkpoint(trained_run):
    run, results = trained_run
    op = results["operating_point"]
    assert op["chosen_on"] == "val" and op["keep_id"] == 0.95 and op["val_id_accepted"] >= 0.95
    assert set(op["ood_rejected"]) == set(results["ood"])
    # recomputed from the per-sample scores: accepted = score at or below the threshold, rejected = above
    scores = np.load(run / "scores.npz")
    threshold = op["threshold"]
    assert op["test_id_accepted"] == pytest.approx(float((scores["in/msp"] <= threshold).mean()))
    for name, rejected in op["ood_rejected"].items():
        assert rejected == pytest.approx(float((scores[f"{name}/msp"] > threshold).mean())), name
    assert op["mean_ood_rejected"] == pytest.approx(sum(op["ood_rejected"].values()) / len(op["ood_rejected"]))
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["oe_lightning"]["operating_point"]
    assert saved == op
    ece = results["calibration"]["ece"]
    assert ece["bins"] == 15 and 0 <= ece["after"] <= 1 and 0 <= ece["before"] <= 1


def test_test_data_never_moves_the_threshold(tmp_path, trained_run):
    """oe-eval of one checkpoint against another ID test set (the training split) and fewer OOD
    sets: the threshold, chosen on the same validation images, is the same to the last bit; the
    reported test-time rates follow the test data."""
    run, _ = trained_run
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    a = run_in_process("oe-eval", tmp_path / "a", ckpt, "data.val_fraction=0.1")
    b = run_in_process("oe-eval", tmp_path / "b", ckpt, "data.val_fraction=0.1", "data.test.split=train",
                       "~ood.gaussian", "~ood.uniform")
    assert a["operating_point"]["threshold"] == b["operating_point"]["threshold"]
    assert a["operating_point"]["val_id_accepted"] == b["operating_point"]["val_id_accepted"]
    assert a["operating_point"]["test_id_accepted"] != b["operating_point"]["test_id_accepted"]
    assert set(b["operating_point"]["ood_rejected"]) == set(a["operating_point"]["ood_rejected"]) - {"gaussian",
                                                                                                        "uniform"}
    c = run_in_process("oe-eval", tmp_path / "c", ckpt, "data.val_fraction=0.2")  # other validation images
    assert c["operating_point"]["threshold"] != a["operating_point"]["threshold"]
