"""The Outlier Exposure LightningModule: any backbone, CE on D_in + λ · L_OE on D_out^OE."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import CatMetric
from torchmetrics.classification import MulticlassAccuracy

from oe_lightning.checkpoints import load_backbone_weights
from oe_lightning.errors import NonFiniteLossError, OEUserError
from oe_lightning.losses import UniformCrossEntropy
from oe_lightning.metrics import (
    CALIBRATION_RULE,
    POSITIVES,
    OODMetrics,
    calibration_summary,
    ood_calibration,
    paper_subset_size,
    tune_temperature,
)
from oe_lightning.scores import MaxSoftmax


class OutlierExposureModule(pl.LightningModule):
    """Wraps a backbone mapping images to logits with the Outlier Exposure objective.

    Training batches are ``{"in": (x, y), "oe": x_oe}`` (``"oe"`` absent for the λ = 0
    baseline). One forward pass runs over ``cat(x, x_oe)``, so BatchNorm sees both, as in the
    paper; the loss is mean CE over the ID samples + ``lambda_oe`` · ``oe_loss`` (averaged over the
    OE samples). At test time one loader is the ID test set and every other one an OOD set, named
    as in :meth:`test_set_names` (e.g. ``trainer.test(module, dataloaders={"in": id_loader,
    "noise": noise_loader})``); :attr:`test_results` then holds per-set OOD metrics, ID accuracy
    and calibration.

    Args:
        backbone: any ``nn.Module`` mapping a batch of images to logits.
        num_classes: classes of D_in; checked against the backbone's output.
        oe_loss: ``loss(logits_oe, logits_in, targets) -> scalar``; default the paper's.
        lambda_oe: weight λ of the OE term, >= 0.
        score: OOD score from logits (larger = more OOD); default max softmax probability.
        optimizer: ``params -> Optimizer`` (a ``_partial_`` config).
        scheduler: ``(optimizer, total_steps) -> LR scheduler`` stepped every step, or None.
        pretrained: checkpoint whose backbone weights to start from (fine-tuning).
        recall, fpr_rule: the FPR@TPR operating point and rule, see :mod:`oe_lightning.metrics`.
        protocol, num_to_avg: ``full`` (every OOD sample once) or ``paper`` (``num_to_avg``
            subsets of len(ID test) // 5 OOD samples, mean and std), see :class:`OODMetrics`.
        positive: the FPR's positive class, ``out`` (the OE paper) or ``in`` (the energy paper),
            see :func:`oe_lightning.metrics.ood_metrics`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, oe_loss: nn.Module | None = None,
                 lambda_oe: float = 0.5, score: nn.Module | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, pretrained: str | None = None,
                 recall: float = 0.95, fpr_rule: str = "first", protocol: str = "full",
                 num_to_avg: int = 10, positive: str = "out"):
        super().__init__()
        if lambda_oe is None or not lambda_oe >= 0:
            raise OEUserError(
                f"loss.lambda_oe must be >= 0 (the weight of the OE term), got {lambda_oe}. "
                f"Use loss.lambda_oe=0 for the plain baseline; the paper uses 0.5."
            )
        if positive not in POSITIVES:
            raise OEUserError(f"module.positive must be 'out' (OOD positive, the OE paper) or 'in' (ID positive, "
                              f"the energy paper), got {positive!r}.")
        self.save_hyperparameters(ignore=["backbone", "oe_loss", "score", "optimizer", "scheduler"])
        self.backbone = backbone
        self.num_classes = num_classes
        self.oe_loss = oe_loss if oe_loss is not None else UniformCrossEntropy()
        self.lambda_oe = float(lambda_oe)
        self.score = score if score is not None else MaxSoftmax()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.recall, self.fpr_rule = recall, fpr_rule
        self.protocol, self.num_to_avg, self.positive = protocol, num_to_avg, positive
        if pretrained:
            load_backbone_weights(self.backbone, pretrained, num_classes)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_confidence, self.test_correct = CatMetric(), CatMetric()
        self.val_logits, self.val_labels = CatMetric(), CatMetric()  # for the softmax temperature
        self.ood_confidence = nn.ModuleDict()
        self.temperature: float | None = None
        self.val_ood = OODMetrics(recall, fpr_rule)
        self.ood_metrics = nn.ModuleDict()
        self.ood_names: list[str] = []
        self.test_names: list[str] = []
        self.test_results: dict[str, Any] = {}
        self.test_curves: dict[str, Any] = {}  # per OOD set: downsampled ROC, score histograms
        # stored in checkpoints: the backbone's config (so oe-eval can rebuild it) and run info
        self.model_config: dict | None = None
        self.run_config: dict | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def _check_logits(self, logits: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise OEUserError(
                f"The backbone returned logits of shape {tuple(logits.shape)}, but the data has "
                f"{self.num_classes} classes: set the model's num_classes to {self.num_classes} "
                f"(model.num_classes=${{data.num_classes}}) or use a checkpoint trained on this data."
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["oe_lightning"] = {"model_config": self.model_config,
                                      "run_config": self.run_config,
                                      "num_classes": self.num_classes}

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x_in, y = batch["in"]
        x_oe = batch.get("oe") if self.lambda_oe > 0 else None
        n_in = x_in.shape[0]
        if x_oe is not None:
            logits = self.backbone(torch.cat([x_in, x_oe]))
            logits_in, logits_oe = logits[:n_in], logits[n_in:]
        else:
            logits_in = logits = self.backbone(x_in)
        if batch_idx == 0:
            self._check_logits(logits)
        loss_in = F.cross_entropy(logits_in, y)
        loss_oe = self.oe_loss(logits_oe, logits_in, y) if x_oe is not None else loss_in.new_zeros(())
        loss = loss_in + self.lambda_oe * loss_oe
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss became {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step} (ID loss {loss_in.item():.4g}, OE loss {loss_oe.item():.4g}, "
                f"λ={self.lambda_oe}). Training stopped; lower optimizer.lr or check the data "
                f"for NaN/inf values."
            )
        self.train_acc(logits_in.detach(), y)
        self.log_dict({"train/loss": loss, "train/loss_in": loss_in, "train/loss_oe": loss_oe},
                      on_step=True, on_epoch=True, batch_size=n_in)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        """Loader 0: the ID validation split; loader 1 (if any): the validation OOD set."""
        x, y = batch
        logits = self.backbone(x)
        self.val_ood.update(self.score(logits), dataloader_idx == 1)
        if dataloader_idx == 0:
            self.val_acc(logits, y)
            self.log("val/loss", F.cross_entropy(logits, y), batch_size=x.shape[0], sync_dist=True,
                     add_dataloader_idx=False)
            self.log("val/acc", self.val_acc, prog_bar=True, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/fpr95`` and ``val/auroc`` (ID split vs validation OOD set): what a λ search minimises."""
        loaders = self.trainer.val_dataloaders
        if isinstance(loaders, list | tuple) and len(loaders) > 1:
            values = self.val_ood.compute()
            self.log_dict({"val/fpr95": values["fpr95"], "val/auroc": values["auroc"]},
                          add_dataloader_idx=False)
        self.val_ood.reset()

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                        weight_decay=5e-4)
        else:
            optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- testing --------------------------------------------------------------------------
    def test_set_names(self) -> list[str]:
        """Names of the test loaders in order: ``"val"`` (optional, first: the held-out ID split the
        softmax temperature is tuned on), ``"in"`` (the ID test set), then the OOD sets.

        From a dict passed to ``trainer.test(dataloaders={"in": ..., "svhn": ...})``, else from the
        DataModule's ``test_names``, else ``in``, ``ood_1``, ``ood_2``, ... for a plain list of loaders.
        """
        loaders = self.trainer.test_dataloaders
        if isinstance(loaders, Mapping):
            names = [str(k) for k in loaders]
            if "in" not in names:
                raise OEUserError(
                    f"trainer.test got loaders named {names}, none of them 'in'. Name the ID test "
                    f"set 'in' and each OOD set by its name: dataloaders={{'in': id_loader, "
                    f"'svhn': svhn_loader}}."
                )
            if "val" in names and names[0] != "val":
                raise OEUserError(
                    f"trainer.test got loaders named {names}: 'val' (the held-out ID split the "
                    f"temperature is tuned on) must come first, before 'in' and the OOD sets."
                )
            return names
        count = len(loaders) if isinstance(loaders, list | tuple) else 1
        names = list(getattr(getattr(self.trainer, "datamodule", None), "test_names", None) or [])
        return names if len(names) == count else ["in", *[f"ood_{i}" for i in range(1, count)]]

    def on_test_epoch_start(self) -> None:
        self.test_names = self.test_set_names()
        self.ood_names = [n for n in self.test_names if n not in ("in", "val")]
        self.ood_metrics = nn.ModuleDict({
            name: OODMetrics(self.recall, self.fpr_rule, self.protocol, self.num_to_avg, positive=self.positive)
            for name in self.ood_names
        }).to(self.device)
        self.ood_confidence = nn.ModuleDict({name: CatMetric() for name in self.ood_names}).to(self.device)
        self.temperature = None
        self.test_results = {}

    def _tuned_temperature(self) -> float:
        """Tune T on the ``val`` loader's logits (all ranks), or 1 without one."""
        if "val" not in self.test_names or not self.val_labels.update_count:
            return 1.0
        return tune_temperature(self.val_logits.compute(), self.val_labels.compute())

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """ID batches are ``(x, y)``; OOD batches ``(x, y)``, ``(x,)`` or ``x`` (labels unused)."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        logits = self.backbone(x)
        name = self.test_names[dataloader_idx]
        if name == "val":
            self._check_logits(logits)
            self.val_logits.update(logits.detach().float())
            self.val_labels.update(batch[1])
            return
        if self.temperature is None:  # the first batch after the val loader
            self.temperature = self._tuned_temperature()
        scores = self.score(logits)
        confidence = F.softmax(logits.detach().float() / self.temperature, dim=1).max(dim=1)
        if name == "in":
            y = batch[1]
            self._check_logits(logits)
            self.test_acc.update(logits, y)
            self.test_confidence.update(confidence.values)
            self.test_correct.update((confidence.indices == y).float())
            for metric in self.ood_metrics.values():
                metric.update(scores, False)
        else:
            self.ood_metrics[name].update(scores, True)
            self.ood_confidence[name].update(confidence.values)

    def _scored_counts(self) -> dict[str, int]:
        """Samples scored per test set (fewer than the set holds under fast_dev_run / limit_test_batches)."""
        counts = {name: metric.counts() for name, metric in self.ood_metrics.items()}
        scored = {"in": next(iter(counts.values()))[0]} if counts else {}
        if "val" in self.test_names:
            scored = {"val": int(self.val_labels.compute().numel()) if self.val_labels.update_count else 0,
                      **scored}
        return {**scored, **{name: n_out for name, (_, n_out) in counts.items()}}

    def _calibration(self) -> dict[str, Any]:
        """Calibration on ID test data alone and mixed with each OOD set (OOD counted as wrong),
        at the tuned temperature: the paper's Table 12 setting (CIFAR/test_calibration.py)."""
        conf_in, correct_in = self.test_confidence.compute(), self.test_correct.compute()
        repeats = self.num_to_avg if self.protocol == "paper" else 1
        num_out = paper_subset_size(conf_in.numel())
        per_set = {name: ood_calibration(conf_in, correct_in, metric.compute(), num_out, repeats)
                   for name, metric in self.ood_confidence.items() if metric.update_count}
        n_val = self._scored_counts().get("val", 0)
        return {
            "rule": CALIBRATION_RULE,
            "temperature": float(self.temperature or 1.0),
            "temperature_tuned_on": n_val,  # held-out ID images; 0: T = 1
            "ood_per_mixture": num_out,
            "in": calibration_summary(conf_in, correct_in),
            "ood": per_set,
            "mean": {k: sum(v[k] for v in per_set.values()) / len(per_set) for k in next(iter(per_set.values()))}
            if per_set else {},
        }

    def on_test_epoch_end(self) -> None:
        per_set = {name: metric.compute() for name, metric in self.ood_metrics.items()}
        self.test_curves = {name: metric.curves() for name, metric in self.ood_metrics.items()}
        keys = [k for k in next(iter(per_set.values())) if not k.endswith("_std")] if per_set else []
        mean = {k: sum(m[k] for m in per_set.values()) / len(per_set) for k in keys}
        calibration = self._calibration()
        self.test_results = {
            "id_accuracy": float(self.test_acc.compute()),
            "rms_calibration_error": calibration["in"]["rms"],
            "calibration": calibration,
            "ood": per_set,
            "mean": mean,
            "scored": self._scored_counts(),
        }
        flat = {"test/id_accuracy": self.test_results["id_accuracy"],
                "test/rms_calibration_error": calibration["in"]["rms"],
                "test/temperature": calibration["temperature"]}
        flat.update({f"test/calibration_ood_{k}": v for k, v in calibration["mean"].items()})
        for name, values in {**per_set, "mean": mean}.items():
            flat.update({f"test/{name}/{k}": v for k, v in values.items()})
        self.log_dict(flat, add_dataloader_idx=False, rank_zero_only=True)
        for metric in (self.test_acc, self.test_confidence, self.test_correct, self.val_logits,
                       self.val_labels):
            metric.reset()
