"""OODEvaluation: one backbone pass per sample for any number of detectors, exact results, saved scores."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from oe_lightning.detectors import ASH, KNN, Mahalanobis, ReAct, ViM
from oe_lightning.evaluation import OODEvaluation, dataset_order
from oe_lightning.evaluation_settings import EvaluationSettings
from oe_lightning.metrics import protocol_metrics
from oe_lightning.models import SmallCNN
from oe_lightning.results import write_scores
from oe_lightning.scores import Energy, MaxSoftmax


class CountingCNN(SmallCNN):
    """SmallCNN that counts the images its trunk sees."""

    def __init__(self):
        super().__init__(num_classes=3, in_channels=1, width=4)
        self.seen = 0

    def forward_features(self, x):
        self.seen += x.shape[0]
        return super().forward_features(x)


def _sets():
    g = torch.Generator().manual_seed(0)
    labelled = lambda n: TensorDataset(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 3)  # noqa: E731
    return {"fit": labelled(90), "val": labelled(30), "in": labelled(45),
            "noise": TensorDataset(torch.randn(37, 1, 8, 8, generator=g)),
            "blank": TensorDataset(torch.zeros(11, 1, 8, 8))}


def _evaluate(detectors, tmp_path, backbone=None, **kw):
    backbone = backbone or CountingCNN().eval()
    evaluation = OODEvaluation(backbone, detectors, **kw)
    loaders = {n: DataLoader(d, batch_size=16) for n, d in _sets().items()}
    pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).test(
        evaluation, dataloaders=loaders, verbose=False)
    return evaluation, backbone


def test_many_detectors_over_many_sets_see_each_sample_once(tmp_path):
    detectors = {"msp": MaxSoftmax(), "energy": Energy(), "mahalanobis": Mahalanobis(), "knn": KNN(k=5),
                 "vim": ViM(d=4), "react": ReAct(), "ash": ASH()}
    evaluation, backbone = _evaluate(detectors, tmp_path)
    assert backbone.seen == 90 + 30 + 45 + 37 + 11  # 7 detectors, 5 sets: one trunk pass per image
    res = evaluation.results
    assert list(res["detectors"]) == list(detectors) and res["detector"] == "msp"
    assert res["scored"] == {"fit": 90, "val": 30, "in": 45, "noise": 37, "blank": 11}
    assert set(res["ood"]) == {"noise", "blank"} and res["ood"] == res["detectors"]["msp"]["ood"]
    assert res["detectors"]["knn"]["hparams"] == {"k": 5, "normalize": True}
    logit_only, plain = _evaluate({"msp": MaxSoftmax(), "energy": Energy()}, tmp_path)
    assert plain.seen == 30 + 45 + 37 + 11  # no fitted detector: the ID training set is not read


def test_saved_scores_reproduce_every_metric_without_the_model(tmp_path):
    """scores.npz holds each set's per-sample scores per detector (dataset order) plus ID labels and
    predictions: recomputing the metrics from it gives results' numbers exactly, under another
    protocol too."""
    evaluation, _ = _evaluate({"msp": MaxSoftmax(), "knn": KNN(k=5)}, tmp_path,
                              settings=EvaluationSettings(protocol="paper", num_to_avg=3))
    path = write_scores(evaluation.sample_scores, tmp_path)
    saved = np.load(path)  # no pickle needed
    assert sorted(saved) == sorted(["in/labels", "in/predictions", *[f"{s}/{d}" for s in ("in", "noise", "blank")
                                                                      for d in ("msp", "knn")]])
    res = evaluation.results
    for det in ("msp", "knn"):
        for name in ("noise", "blank"):
            again = protocol_metrics(torch.from_numpy(saved[f"in/{det}"]), torch.from_numpy(saved[f"{name}/{det}"]),
                                     "paper", 3)
            assert again == pytest.approx(res["detectors"][det]["ood"][name], abs=1e-12)
    accuracy = (saved["in/labels"] == saved["in/predictions"]).mean()
    assert accuracy == pytest.approx(res["id_accuracy"], abs=1e-12)


def test_gathered_outputs_are_put_back_in_dataset_order():
    values = torch.arange(7.0)  # 2 ranks: rank 0 held 0, 2, 4, 6 and rank 1 held 1, 3, 5
    gathered = torch.cat([values[0::2], values[1::2]])
    assert torch.equal(dataset_order(gathered, 2), values)
    assert torch.equal(dataset_order(values, 1), values)


def test_a_backbone_without_the_feature_contract_works_with_logit_detectors_only(tmp_path):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    evaluation, _ = _evaluate({"msp": MaxSoftmax(), "energy": Energy()}, tmp_path, backbone=plain)
    assert set(evaluation.results["detectors"]) == {"msp", "energy"}
    from oe_lightning.errors import OEUserError

    with pytest.raises(OEUserError, match="knn needs penultimate features.*forward_features"):
        _evaluate({"knn": KNN(k=3)}, tmp_path, backbone=plain)


def test_detector_hyperparameters_are_judged_on_validation_data_only(tmp_path):
    """oe-eval with a validation split and oe= (its held-out images) reports detectors.<name>.val:
    ID validation split vs held-out OE, what an Optuna / multirun search of e.g. detector.knn.k
    minimises; dropping an OOD *test* set does not move it."""
    from oe_lightning.results import objective
    from tests.conftest import run_in_process, train_in_process

    trained = train_in_process(tmp_path / "train", "trainer.max_epochs=2")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    runs = {}
    for k, extra in ((5, ()), (20, ()), (5, ("~ood.gaussian",))):
        runs[(k, extra)] = run_in_process("oe-eval", tmp_path / f"k{k}{len(extra)}", f"ckpt_path={ckpt}",
                                          "oe=china_crops", "detector=[knn]", f"detector.knn.k={k}", *extra)
    five, twenty, fewer_tests = runs[(5, ())], runs[(20, ())], runs[(5, ("~ood.gaussian",))]
    assert set(five["detectors"]["knn"]["val"]) == {"fpr95", "auroc"}
    assert five["test_set_sizes"]["val_ood"] == five["test_set_sizes"]["val"] == trained["test_set_sizes"]["val"]
    assert objective(five, "detectors.knn.val.fpr95") == five["detectors"]["knn"]["val"]["fpr95"]
    assert twenty["detectors"]["knn"]["hparams"]["k"] == 20 and "val" in twenty["detectors"]["knn"]
    assert fewer_tests["detectors"]["knn"]["val"] == five["detectors"]["knn"]["val"]  # test sets do not count
    assert "val_ood" not in five["ood"] and "gaussian" not in fewer_tests["ood"]


@pytest.mark.parametrize("positive", ["in", "out"])
def test_validation_fpr_of_training_equals_the_primary_detectors_validation_fpr(tmp_path, positive):
    """oe-train's val/fpr95 (what hparams_search minimises) and the primary detector's own ``val`` metrics
    are one computation on the same split, with the evaluation group's positive class (the energy presets
    use positive=in: the module used to count OOD as positive there regardless)."""
    from tests.conftest import train_in_process

    results = train_in_process(tmp_path, "trainer.max_epochs=2", f"evaluation.positive={positive}")
    primary = results["detectors"][results["detector"]]["val"]
    assert results["val"]["fpr95"] == pytest.approx(primary["fpr95"], abs=1e-12)
    assert results["val"]["auroc"] == pytest.approx(primary["auroc"], abs=1e-12)
