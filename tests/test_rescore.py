"""Metrics again from saved scores: other rules and protocols, bootstrap intervals, paired differences."""

from __future__ import annotations

import json

import pytest

from oe_lightning.detectors import KNN
from oe_lightning.metrics import protocol_metrics
from oe_lightning.rescore import bootstrap_mean_ci, load_scores, paired_difference, rescore
from oe_lightning.results import write_results, write_scores
from oe_lightning.scores import MaxSoftmax
from oe_lightning.table import main as oe_table
from tests.test_evaluation import _evaluate


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One evaluated run (MSP + KNN) written as oe-eval writes it: results.json and scores.npz."""
    root = tmp_path_factory.mktemp("rescore")
    evaluation, _ = _evaluate({"msp": MaxSoftmax(), "knn": KNN(k=5)}, root)
    results = {"schema": 1, **evaluation.results,
               "config": {"data": "digits", "lambda_oe": 0.0, "score": "MaxSoftmax", "seed": 0, "fpr_rule": "first",
                          "protocol": "full", "recall": 0.95, "positive": "out"}}
    (root / "run").mkdir()
    write_results(results, root / "run")
    write_scores(evaluation.sample_scores, root / "run")
    return root / "run"


def test_rescoring_under_another_rule_and_protocol_equals_a_fresh_computation(run_dir):
    results, scores = json.loads((run_dir / "results.json").read_text()), load_scores(run_dir)
    same = rescore(results, scores)  # as evaluated: nothing changes
    assert same["detectors"]["knn"]["mean"] == pytest.approx(results["detectors"]["knn"]["mean"], abs=1e-12)
    other = rescore(results, scores, fpr_rule="nearest", protocol="paper", num_to_avg=3, recall=0.9)
    expected = protocol_metrics(scores["in/knn"], scores["noise/knn"], "paper", 3, 0, 0.9, "nearest")
    assert other["detectors"]["knn"]["ood"]["noise"] == pytest.approx(expected, abs=1e-12)
    assert "fpr90" in other["mean"] and other["config"]["fpr_rule"] == "nearest"
    assert other["rescored"] == {"fpr_rule": "nearest", "recall": 0.9, "protocol": "paper", "num_to_avg": 3,
                                 "positive": "out"}


def test_bootstrap_intervals_are_reproducible_from_their_seed():
    import torch

    g = torch.Generator().manual_seed(0)  # overlapping ID and OOD scores: AUROC about 0.76
    scores = {"in/msp": torch.randn(400, generator=g), "a/msp": torch.randn(300, generator=g) + 1,
              "b/msp": torch.randn(200, generator=g) + 1}
    a = bootstrap_mean_ci(scores, ["a", "b"], "msp", "auroc", resamples=40, seed=3)
    assert a == bootstrap_mean_ci(scores, ["a", "b"], "msp", "auroc", resamples=40, seed=3)
    assert a != bootstrap_mean_ci(scores, ["a", "b"], "msp", "auroc", resamples=40, seed=4)
    assert 0.70 < a[0] < 0.76 < a[1] < 0.82


def test_paired_difference_over_common_seeds():
    diff = paired_difference({0: 30.0, 1: 34.0, 2: 50.0}, {0: 10.0, 1: 12.0})
    assert diff == pytest.approx({"mean": -21.0, "std": 2 ** 0.5, "n": 2, "t": -21.0 / (2 ** 0.5 / 2 ** 0.5)})
    assert paired_difference({0: 1.0}, {0: 2.0}) is None


def test_oe_table_rescore_names_the_runs_it_could_not_rescore_and_refuses_bad_settings(run_dir, capsys):
    without = run_dir.parent / "old_run"
    without.mkdir(exist_ok=True)
    old = json.loads((run_dir / "results.json").read_text())
    (without / "results.json").write_text(json.dumps(old))  # an older run: no scores.npz
    assert oe_table([str(run_dir.parent), "--no-files", "--format", "md", "--rescore", "fpr_rule=nearest"]) == 0
    captured = capsys.readouterr()
    assert "1 runs have no scores.npz" in captured.err and "old_run" in captured.err
    assert oe_table([str(run_dir.parent), "--no-files", "--rescore", "rule=nearest"]) == 2
    assert "--rescore got 'rule'; it takes fpr_rule, recall" in capsys.readouterr().err
