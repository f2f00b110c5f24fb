"""Evaluation: named loaders -> one backbone pass per sample -> every detector -> metrics and scores.

``trainer.test(OODEvaluation(backbone, detectors), dataloaders={"in": ..., "svhn": ...})`` (or a
DataModule whose ``test_names`` name its loaders). Loader names with a role:

- ``"in"``: the ID test set (required); every OOD set is compared with it;
- ``"fit"``: the ID training set seen through the test transform, to fit detectors on
  (Mahalanobis, KNN, ViM, ReAct); required only by them;
- ``"val"``: the held-out ID split, on which the softmax temperature for calibration is tuned;
- ``"val_ood"``: a validation OOD set: with ``"val"``, each detector's ``val`` metrics, what a
  search of detector hyperparameters may minimise (never the test sets);
- any other name: an OOD test set.

Logits (and penultimate features, when a detector reads them) are kept per set, gathered exactly
across DDP ranks and put back in dataset order; ASH and ODIN score each batch during the pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import CatMetric

from oe_lightning.calibration import (
    CALIBRATION_RULE,
    calibration_summary,
    expected_calibration_error,
    ood_calibration,
    tune_temperature,
)
from oe_lightning.detectors import Detector, Outputs, as_detector
from oe_lightning.errors import OEUserError
from oe_lightning.evaluation_settings import EvaluationSettings
from oe_lightning.metrics import (
    accepted_share,
    operating_threshold,
    paper_subset_size,
    paper_text_subset_size,
    protocol_metrics,
    roc_curve,
    score_histograms,
    sort_scores,
    validation_ood_metrics,
)
from oe_lightning.models.contract import feature_backbone
from oe_lightning.ood_groups import metric_means, summarised
from oe_lightning.scores import MaxSoftmax

ROLES = ("fit", "val", "val_ood", "in")  # loader names that are not OOD test sets


def dataset_order(values: Tensor, world_size: int) -> Tensor:
    """Undo the rank-by-rank concatenation of an :class:`ExactShardSampler` gather (rank r holds
    samples r, r + R, ...), so stored outputs are in dataset order whatever the world size."""
    if world_size <= 1:
        return values
    n = values.shape[0]
    index = torch.cat([torch.arange(r, n, world_size) for r in range(world_size)])
    out = torch.empty_like(values)
    out[index] = values
    return out


class OODEvaluation(pl.LightningModule):
    """Scores the ID test set and every OOD set with several detectors from one forward pass.

    Args:
        backbone: maps images to logits; feature detectors need the feature contract
            (:mod:`oe_lightning.models.contract`).
        detectors: name -> detector (or any ``logits -> score`` callable); default ``{"msp": MSP}``.
        primary: the detector whose results are results.json's top-level ``ood`` / ``mean``
            (default: the first).
        settings: how detection is measured (recall, FPR rule, positive class, protocol, the deployed
            threshold's ``keep_id``); default :class:`~oe_lightning.evaluation_settings.EvaluationSettings`.
        seed: the paper protocol's subset draws.
        groups: group name -> its OOD sets (OpenOOD's ``near`` / ``far``): each detector's results get
            the mean over each group's sets (``groups``) beside the mean over all sets.
    """

    def __init__(self, backbone: nn.Module, detectors: Mapping[str, Any] | None = None,
                 primary: str | None = None, settings: EvaluationSettings | None = None, seed: int = 0,
                 groups: Mapping[str, list[str]] | None = None):
        super().__init__()
        self.settings = EvaluationSettings.of(settings)
        self.backbone = backbone
        chosen = dict(detectors) if detectors else {"msp": MaxSoftmax()}
        self.detectors = nn.ModuleDict({name: as_detector(d) for name, d in chosen.items()})
        self.primary = primary or next(iter(self.detectors))
        if self.primary not in self.detectors:
            raise OEUserError(f"primary detector {self.primary!r} is not among the detectors {list(self.detectors)}.")
        self.seed = seed
        self.groups = {str(g): [str(n) for n in names] for g, names in (groups or {}).items()}
        self.store = nn.ModuleDict()
        self.names: list[str] = []
        self.results: dict[str, Any] = {}
        self._curve_scores: dict[str, Any] = {}  # the primary detector's scores, for curves()
        self._curves: dict[str, dict[str, Any]] | None = None  # curves() of the last test, once computed
        self.sample_scores: dict[str, Tensor] = {}
        self._view: Any = None

    # ---- what the detectors need ---------------------------------------------------------------
    def _needing(self, *needs: str) -> list[str]:
        return [n for n, d in self.detectors.items() if d.needs in needs]

    @property
    def fit_detectors(self) -> list[str]:
        """Detectors fitted on the ID training set (the ``"fit"`` loader)."""
        return [n for n, d in self.detectors.items() if d.requires_fit]

    def loader_names(self) -> list[str]:
        """Names of the test loaders, in order (dict keys, the DataModule's ``test_names``, or
        ``in, ood_1, ood_2, ...``), checked for the roles the detectors need."""
        loaders = self.trainer.test_dataloaders
        if isinstance(loaders, Mapping):
            names = [str(k) for k in loaders]
        else:
            count = len(loaders) if isinstance(loaders, list | tuple) else 1
            names = list(getattr(getattr(self.trainer, "datamodule", None), "test_names", None) or [])
            if len(names) != count:
                names = ["in", *[f"ood_{i}" for i in range(1, count)]]
        if "in" not in names:
            raise OEUserError(f"The test loaders are named {names}, none of them 'in'. Name the ID test set 'in' "
                              f"and each OOD set by its name: dataloaders={{'in': id_loader, 'svhn': svhn_loader}}.")
        if self.fit_detectors and "fit" not in names:
            raise OEUserError(f"Detectors {self.fit_detectors} are fitted on the ID training set, and no loader is "
                              f"named 'fit'. Pass dataloaders={{'fit': id_train_loader, 'in': ..., ...}} (the "
                              f"training images through the test transform), or a DataModule with fit_set=True.")
        return names

    def on_test_epoch_start(self) -> None:
        """Name the loaders, check the fitted detectors' settings against the ``fit`` set's size, and create
        each set's stores (logits, features, labels, per-batch scores as the detectors need)."""
        self.names = self.loader_names()
        self._check_fit_sizes()
        self._view = None
        if self._needing("features", "maps"):
            self._view = feature_backbone(self.backbone, needed_by=" and ".join(self._needing("features", "maps")))
        kinds: dict[str, list[str]] = {}
        for name in self.names:
            if name == "fit" and not self.fit_detectors:
                continue
            kinds[name] = ["logits"]
            if self._needing("features"):
                kinds[name].append("features")
            if name in ("fit", "val", "in"):
                kinds[name].append("labels")
            if name != "fit":
                kinds[name] += [f"score_{d}" for d in self._needing("maps", "input")]
        self.store = nn.ModuleDict({f"{name}__{kind}": CatMetric(nan_strategy="disable")
                                    for name, ks in kinds.items() for kind in ks}).to(self.device)
        self.results, self._curve_scores, self.sample_scores, self._curves = {}, {}, {}, None

    def _check_fit_sizes(self) -> None:
        """Before any batch is scored: each fitted detector's settings against the size of the ID
        training set it is fitted on (e.g. KNN's k against its feature bank)."""
        if not self.fit_detectors:
            return
        loaders = self.trainer.test_dataloaders
        loaders = list(loaders.values()) if isinstance(loaders, Mapping) else \
            list(loaders) if isinstance(loaders, list | tuple) else [loaders]
        try:
            samples = len(loaders[self.names.index("fit")].dataset)
        except (TypeError, AttributeError, IndexError):
            return  # a loader without a sized dataset: fit() checks the bank it gets
        for name in self.fit_detectors:
            self.detectors[name].check_fit_size(samples)

    # ---- the one forward pass -------------------------------------------------------------------
    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """ID batches are ``(x, y)``; OOD batches ``(x, y)``, ``(x,)`` or ``x`` (labels unused)."""
        name = self.names[dataloader_idx]
        if f"{name}__logits" not in self.store:
            return  # a "fit" loader while no detector needs fitting
        x = batch[0] if isinstance(batch, list | tuple) else batch
        maps = None
        if self._view is not None:
            maps = self._view.forward_features(x)
            logits = self._view.forward_head(maps)
            if f"{name}__features" in self.store:
                self.store[f"{name}__features"].update(self._view.forward_head(maps, pre_logits=True).float())
        else:
            logits = self.backbone(x)
        if logits.ndim != 2:
            raise OEUserError(f"The backbone returned outputs of shape {tuple(logits.shape)}; it must map a batch "
                              f"of images to logits (batch, classes).")
        self.store[f"{name}__logits"].update(logits.float())
        if f"{name}__labels" in self.store:
            self.store[f"{name}__labels"].update(batch[1])
        for det in self._needing("maps", "input"):
            key = f"{name}__score_{det}"
            if key in self.store:
                self.store[key].update(self.detectors[det].score_batch(self.backbone, self._view, x, maps).float())

    # ---- everything else, once all sets went through ----------------------------------------
    def _gathered(self) -> dict[str, dict[str, Tensor]]:
        out: dict[str, dict[str, Tensor]] = {}
        for key, metric in self.store.items():
            name, kind = key.split("__", 1)
            value = metric.compute() if metric.update_count or self.trainer.world_size > 1 else torch.empty(0)
            value = dataset_order(torch.as_tensor(value).cpu(), self.trainer.world_size)
            out.setdefault(name, {})[kind] = value.long() if kind == "labels" else value.double() \
                if kind.startswith("score_") else value
        return out

    def _scores(self, detector: str, sets: dict[str, dict[str, Tensor]], head: nn.Module | None) -> dict[str, Tensor]:
        det: Detector = self.detectors[detector]
        if det.needs in ("maps", "input"):
            return {name: s[f"score_{detector}"] for name, s in sets.items() if name != "fit"}
        return {name: det.score(Outputs(s["logits"], s.get("features"), s.get("labels")), head).double().cpu()
                for name, s in sets.items() if name not in ("fit",)}

    @property
    def primary_scores(self) -> dict[str, Tensor]:
        """The primary detector's per-sample scores after testing: ``"in"`` and each OOD set."""
        return dict(self._curve_scores)

    def curves(self) -> dict[str, dict[str, Any]]:
        """The primary detector's downsampled ROC curve and score histograms per OOD set (for the
        W&B dashboard and the plots; computed once, when first asked)."""
        if self._curves is None:
            scores = self._curve_scores
            self._curves = {name: {"roc": roc_curve(scores["in"], s), "histogram": score_histograms(scores["in"], s)}
                            for name, s in scores.items() if name != "in"}
        return self._curves

    def on_test_epoch_end(self) -> None:
        """Fit the detectors that need it, score every set with every detector, and put metrics, calibration and
        the operating point in :attr:`results`, per-sample scores in :attr:`sample_scores`; log ``test/...``."""
        sets = self._gathered()
        head = self._view.get_classifier() if self._view is not None else None
        self._fit_detectors(sets, head)
        ood_names = [n for n in self.names if n not in ROLES]
        per_detector: dict[str, Any] = {}
        for detector in self.detectors:
            scores = self._scores(detector, sets, head)
            per_detector[detector] = self._detector_results(detector, scores, ood_names)
            self.sample_scores.update({f"{name}/{detector}": s for name, s in scores.items()
                                       if name not in ("val", "val_ood")})
            if detector == self.primary:
                self._curve_scores = {"in": scores["in"], **{name: scores[name] for name in ood_names}}
                operating = self._operating_point(scores, ood_names)
        logits_in, labels_in = sets["in"]["logits"], sets["in"]["labels"]
        predictions = logits_in.argmax(dim=1)
        self.sample_scores.update({"in/labels": labels_in, "in/predictions": predictions})
        calibration = self._calibration(sets, ood_names)
        primary = per_detector[self.primary]
        self.results = {
            "id_accuracy": float((predictions == labels_in).double().mean()),
            "rms_calibration_error": calibration["in"]["rms"],
            "calibration": calibration,
            "operating_point": operating,
            "ood": primary["ood"],
            "mean": primary["mean"],
            **({"groups": primary["groups"], "ood_groups": self._present_groups(ood_names)} if "groups" in primary
               else {}),
            "detector": self.primary,
            "detectors": per_detector,
            "scored": {name: int(s["logits"].shape[0]) for name, s in sets.items()},
        }
        self.log_dict(self._flat_results(), add_dataloader_idx=False, rank_zero_only=True)
        for metric in self.store.values():
            metric.reset()

    def _fit_detectors(self, sets: dict[str, dict[str, Tensor]], head: nn.Module | None) -> None:
        """Fit each detector that needs it on the ID training set's outputs (the ``"fit"`` loader)."""
        if not self.fit_detectors:
            return
        fit = sets["fit"]
        if fit["logits"].shape[0] == 0:
            raise OEUserError("The 'fit' loader (the ID training set) yielded no samples to fit detectors on.")
        for name in self.fit_detectors:
            self.detectors[name].fit(Outputs(fit["logits"], fit.get("features"), fit.get("labels")), head)

    def _detector_results(self, detector: str, scores: dict[str, Tensor], ood_names: list[str]) -> dict[str, Any]:
        """One detector's metrics per OOD set (the settings' protocol), their mean, its hyperparameters and,
        with validation data, its ``val`` metrics (what a search may minimise; test sets never)."""
        s = self.settings
        id_sorted = sort_scores(scores["in"], "ID scores")  # once, for every OOD set
        per_set = {name: protocol_metrics(id_sorted, scores[name], s.protocol, s.num_to_avg, self.seed,
                                          s.recall, s.fpr_rule, s.positive) for name in ood_names}
        out = {"ood": per_set, **summarised(per_set, self._present_groups(ood_names)),
               "hparams": self.detectors[detector].hparams()}
        if "val" in scores and "val_ood" in scores:
            out["val"] = validation_ood_metrics(scores["val"], scores["val_ood"], s)
        return out

    def _present_groups(self, ood_names: list[str]) -> dict[str, list[str]]:
        """Each group's sets that this evaluation scored (groups with none left out)."""
        groups = {g: [n for n in names if n in ood_names] for g, names in self.groups.items()}
        return {g: names for g, names in groups.items() if names}

    def _flat_results(self) -> dict[str, float]:
        """:attr:`results` as the flat ``test/...`` values logged to the loggers."""
        res, calibration, operating = self.results, self.results["calibration"], self.results["operating_point"]
        flat = {"test/id_accuracy": res["id_accuracy"], "test/rms_calibration_error": calibration["in"]["rms"],
                "test/temperature": calibration["temperature"]}
        flat.update({f"test/calibration_ood_{k}": v for k, v in calibration["mean"].items()})
        if operating.get("threshold") is not None:
            flat.update({"test/operating/test_id_accepted": operating["test_id_accepted"],
                         "test/operating/mean_ood_rejected": operating["mean_ood_rejected"]})
        for name, values in {**res["ood"], "mean": res["mean"]}.items():
            flat.update({f"test/{name}/{k}": v for k, v in values.items()})
        for group, values in (res.get("groups") or {}).items():
            flat.update({f"test/group/{group}/{k}": v for k, v in values.items()})
        for detector, values in res["detectors"].items():
            flat.update({f"test/detector/{detector}/{k}": v for k, v in values["mean"].items()})
        return flat

    def _operating_point(self, scores: dict[str, Tensor], ood_names: list[str]) -> dict[str, Any]:
        """What the primary detector does deployed: the threshold keeping ``keep_id`` of the ID
        *validation* images (test sets never choose it), then the test-time ID acceptance and each
        OOD set's rejection at that fixed threshold."""
        if "val" not in scores or scores["val"].numel() == 0:
            return {"detector": self.primary, "keep_id": self.settings.keep_id, "threshold": None,
                    "why": "no ID validation split to choose it on (set data.val_fraction > 0)"}
        threshold = operating_threshold(scores["val"], self.settings.keep_id)
        rejected = {name: 1.0 - accepted_share(scores[name], threshold) for name in ood_names}
        return {
            "detector": self.primary, "keep_id": self.settings.keep_id, "threshold": threshold,
            "rule": "input is OOD when its score > threshold; threshold = the smallest ID validation score "
                    "keeping keep_id of them",
            "chosen_on": "val", "val_images": int(scores["val"].numel()),
            "val_id_accepted": accepted_share(scores["val"], threshold),
            "test_id_accepted": accepted_share(scores["in"], threshold),
            "ood_rejected": rejected,
            "mean_ood_rejected": sum(rejected.values()) / len(rejected) if rejected else None,
        }

    def _calibration(self, sets: dict[str, dict[str, Tensor]], ood_names: list[str]) -> dict[str, Any]:
        """ID test data alone and mixed with each OOD set (OOD counted as wrong), at the temperature
        tuned on the ``"val"`` split: the paper's Table 12 setting (CIFAR/test_calibration.py)."""
        val = sets.get("val")
        tuned_on = int(val["logits"].shape[0]) if val is not None else 0
        temperature = tune_temperature(val["logits"], val["labels"]) if tuned_on else 1.0
        probs = F.softmax(sets["in"]["logits"].double() / temperature, dim=1).max(dim=1)
        conf_in, correct_in = probs.values, (probs.indices == sets["in"]["labels"]).double()
        repeats = self.settings.num_to_avg if self.settings.protocol != "full" else 1
        num_out = (paper_text_subset_size if self.settings.protocol == "paper_text" else paper_subset_size)(
            conf_in.numel())
        per_set = {name: ood_calibration(conf_in, correct_in, F.softmax(
            sets[name]["logits"].double() / temperature, dim=1).max(dim=1).values, num_out, repeats)
            for name in ood_names if sets[name]["logits"].shape[0]}
        plain = F.softmax(sets["in"]["logits"].double(), dim=1).max(dim=1)
        ece = {"bins": 15, "before": expected_calibration_error(plain.values, plain.indices == sets["in"]["labels"]),
               "after": expected_calibration_error(conf_in, correct_in)}  # T = 1, then T tuned on "val"
        return {
            "rule": CALIBRATION_RULE, "temperature": float(temperature), "temperature_tuned_on": tuned_on,
            "ece": ece,
            "ood_per_mixture": num_out, "in": calibration_summary(conf_in, correct_in), "ood": per_set,
            "mean": metric_means(per_set),
        }
