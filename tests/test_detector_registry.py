"""One registry of detectors: conf/detector/. ``score=<name>`` is the primary detector, a name in it."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from oe_lightning import detector_registry as registry
from oe_lightning.detectors import Detector, Outputs, as_detector
from oe_lightning.errors import OEUserError
from oe_lightning.scores import GeneralizedEntropy
from tests.conftest import hydra_job, run_in_process, train_in_process


def test_every_detector_file_names_one_detector_that_builds_and_scores():
    """Each conf/detector/<name>.yaml holds <name>: {_target_: ...}; every one builds and gives one
    finite score per sample (logit scores on logits alone, the others on outputs or batches)."""
    assert {"msp", "energy", "knn", "gen", "odin"} <= set(registry.names())
    for name in registry.names():
        detector = as_detector(instantiate(registry.group_config(name)))
        assert isinstance(detector, Detector), name
    logits = torch.randn(6, 4)
    for name in registry.names():
        config = registry.group_config(name)
        if registry.is_deployable(config):
            score = instantiate(config)(logits)
            assert score.shape == (6,) and torch.isfinite(score).all(), name


def test_the_primary_detector_is_a_name_whose_settings_come_from_its_file_unless_chosen(tmp_path):
    """score=energy alone takes conf/detector/energy.yaml; with detector=[energy] the chosen (and
    overridden) settings are the primary's; the primary is first, detector=[...] entries follow."""
    from oe_lightning.building import build_evaluation

    with hydra_job("train", ["score=energy", "detector=[knn]"], tmp_path / "a") as cfg:
        configs = registry.detector_configs(cfg)
        assert list(configs) == ["energy", "knn"] and configs["energy"]["temperature"] == 1.0
        evaluation = build_evaluation(cfg, torch.nn.Linear(2, 2))
        assert evaluation.primary == "energy" and list(evaluation.detectors) == ["energy", "knn"]
    with hydra_job("train", ["score=energy", "detector=[knn,energy]", "detector.energy.temperature=2"],
                   tmp_path / "b") as cfg:
        configs = registry.detector_configs(cfg)
        assert list(configs) == ["energy", "knn"] and configs["energy"]["temperature"] == 2


def test_an_unknown_primary_detector_is_refused_with_the_names_there_are(tmp_path):
    from oe_lightning.validate import check_config

    with hydra_job("train", ["score=mps"], tmp_path) as cfg, pytest.raises(OEUserError) as err:
        check_config(cfg, "train")
    message = str(err.value)
    assert "score='mps'" in message and "msp" in message and "gen" in message
    with pytest.raises(OEUserError, match="names no detector"):
        registry.group_config("../train")


def test_gen_is_openoods_generalized_entropy_restated():
    """OpenOOD gen_postprocessor.py:31-37: sort the softmax, keep the top M, sum p^γ (1 - p)^γ; it returns
    the negative as a confidence, ours is the sum itself (larger = more OOD)."""
    logits = torch.tensor([[4.0, 1.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    probs = torch.softmax(logits, dim=1)
    expected = [sum(p ** 0.1 * (1 - p) ** 0.1 for p in sorted(row.tolist())[-3:]) for row in probs]
    ours = GeneralizedEntropy(gamma=0.1, top_m=3)(logits)
    assert ours.tolist() == pytest.approx(expected, rel=1e-6)
    assert ours[1] > ours[0]  # the uniform prediction is the more OOD one
    assert GeneralizedEntropy(top_m=100)(logits).tolist() == pytest.approx(
        [sum(p ** 0.1 * (1 - p) ** 0.1 for p in row.tolist()) for row in probs], rel=1e-6)  # M > classes: all
    with pytest.raises(OEUserError, match="gamma"):
        GeneralizedEntropy(gamma=0)


def test_a_feature_detector_as_primary_trains_evaluates_and_is_refused_by_oe_predict(tmp_path, capsys):
    """score=knn: the run's headline results are KNN's and its threshold is chosen on validation data;
    the module logs no logit-based val/fpr95 (KNN needs fitted features), and oe-predict, which applies a
    detector to one input at a time, refuses the checkpoint in one paragraph naming the fix."""
    results = train_in_process(tmp_path / "run", "trainer.max_epochs=1", "score=knn", "detector=[knn]",
                               "detector.knn.k=5", "optimized_metric=detectors.knn.val.fpr95")
    assert results["detector"] == "knn" and results["ood"] == results["detectors"]["knn"]["ood"]
    assert "fpr95" not in results["val"] and "fpr95" in results["detectors"]["knn"]["val"]
    assert results["operating_point"]["detector"] == "knn" and math.isfinite(results["operating_point"]["threshold"])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["oe_lightning"]["primary_detector"] == "knn" and checkpoint["oe_lightning"]["score"] is None
    with pytest.raises(SystemExit) as stop:
        run_in_process("oe-predict", tmp_path / "predict", f"ckpt_path={last}", f"input={tmp_path}")
    assert stop.value.code == 2
    assert "score=knn" in capsys.readouterr().err


def test_a_logit_primary_detector_is_stored_for_deployment(tmp_path):
    results = train_in_process(tmp_path, "trainer.max_epochs=1", "score=gen")
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    stored = checkpoint["oe_lightning"]
    assert results["detector"] == "gen" and stored["primary_detector"] == "gen"
    assert stored["score"] == {"_target_": "oe_lightning.scores.GeneralizedEntropy", "gamma": 0.1, "top_m": 100}
    assert results["val"]["fpr95"] == pytest.approx(results["detectors"]["gen"]["val"]["fpr95"], abs=1e-12)


def test_outputs_of_a_logit_detector_score_the_same_as_its_function():
    gen = GeneralizedEntropy()
    logits = torch.randn(5, 10)
    assert torch.equal(registry.logit_score(gen)(logits), gen(logits))
    wrapped = registry.logit_score(as_detector(gen))
    assert torch.equal(wrapped(logits), gen(logits))
    assert registry.logit_score(instantiate(registry.group_config("knn"))) is None
    assert as_detector(gen).score(Outputs(logits)).shape == (5,)
