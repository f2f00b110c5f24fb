"""The Outlier Exposure LightningModule: any backbone, CE on D_in + λ · L_OE on D_out^OE."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from oe_lightning.baseline import is_baseline
from oe_lightning.checkpoint_info import CheckpointInfo
from oe_lightning.checkpoints import load_backbone_weights
from oe_lightning.compat import BatchNormBase, attached_trainer
from oe_lightning.data.samplers import sample_seed
from oe_lightning.errors import NonFiniteLossError, OEUserError
from oe_lightning.evaluation_settings import EvaluationSettings
from oe_lightning.losses import UniformCrossEntropy
from oe_lightning.metrics import OODMetrics, validation_ood_metrics
from oe_lightning.scores import MaxSoftmax
from oe_lightning.step_log import DeferredStepLog


class OutlierExposureModule(pl.LightningModule):
    """Wraps a backbone mapping images to logits with the Outlier Exposure objective.

    Training batches are ``{"in": (x, y), "oe": x_oe}`` (``"oe"`` absent for the λ = 0
    baseline). One forward pass runs over ``cat(x, x_oe)``, so BatchNorm sees both, as in the
    paper; the loss is mean CE over the ID samples + ``lambda_oe`` · ``oe_loss`` (averaged over the
    OE samples). The module trains and validates; OOD evaluation is :class:`~oe_lightning.evaluation.
    OODEvaluation`, which ``oe-train`` runs on :attr:`backbone` after fitting.

    Args:
        backbone: any ``nn.Module`` mapping a batch of images to logits.
        num_classes: classes of D_in; checked against the backbone's output.
        oe_loss: ``loss(logits_oe, logits_in, targets) -> scalar``; default the paper's. A loss with
            ``mixes_batch`` (MixOE) first turns the step's OE images into ``mix(x_in, y, x_oe, K)``: mixed
            images and the targets its term takes.
        lambda_oe: weight λ of the OE term, >= 0.
        score: OOD score from logits (larger = more OOD) for validation; default max softmax probability.
        optimizer: ``params -> Optimizer`` (a ``_partial_`` config).
        scheduler: ``(optimizer, total_steps) -> LR scheduler`` stepped every step, or None.
        pretrained: checkpoint whose backbone weights to start from (fine-tuning).
        evaluation: the validation OOD metric's FPR settings (recall, rule, positive class), the same
            :class:`~oe_lightning.evaluation_settings.EvaluationSettings` the test evaluation uses.
        backbone_lr_scale: fine-tuning: every layer but the head (the last ``nn.Linear``) learns at
            ``lr × backbone_lr_scale``; 0 freezes them, BatchNorm statistics included.
        channels_last: keep the backbone's weights and the training batches in channels-last memory
            format (faster convolutions on GPUs with tensor cores, with bf16).
        compile: train through ``torch.compile(backbone)``; weights, checkpoints and evaluation stay
            those of the plain backbone.
        info: what checkpoints store beside the weights (:class:`~oe_lightning.checkpoint_info.CheckpointInfo`).
        validate_ood: log ``val/fpr95`` and ``val/auroc`` with ``score`` (False: the primary detector
            needs more than logits, e.g. a fitted KNN; its ``val`` metrics come from the evaluation).
        joint_forward: one forward over the ID and OE inputs together (the image paper's rule: BatchNorm sees
            both), joined by the DataModule's ``join_inputs`` (text: padded to one length); False: two
            forwards, as the reference's text classifiers (NLP_classification/train_OE.py:175-181).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, oe_loss: nn.Module | None = None,
                 lambda_oe: float = 0.5, score: Callable[[Tensor], Tensor] | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, pretrained: str | None = None,
                 evaluation: EvaluationSettings | None = None, nonfinite_check_every: int | None = None,
                 backbone_lr_scale: float = 1.0, channels_last: bool = False, compile: bool = False,
                 info: CheckpointInfo | None = None, validate_ood: bool = True, joint_forward: bool = True):
        super().__init__()
        if lambda_oe is None or not lambda_oe >= 0:
            raise OEUserError(
                f"loss.lambda_oe must be >= 0 (the weight of the OE term), got {lambda_oe}. "
                f"Use loss.lambda_oe=0 for the plain baseline; the paper uses 0.5."
            )
        self.evaluation = EvaluationSettings.of(evaluation)
        self.save_hyperparameters(ignore=["backbone", "oe_loss", "score", "optimizer", "scheduler", "evaluation",
                                          "info", "validate_ood"])
        self.backbone = backbone
        self.num_classes = num_classes
        self.oe_loss = oe_loss if oe_loss is not None else UniformCrossEntropy()
        self.lambda_oe = float(lambda_oe)
        # None (validate_ood=False): the primary detector does not score logits alone (e.g. KNN)
        self.score = score if score is not None else MaxSoftmax() if validate_ood else None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.nonfinite_check_every = nonfinite_check_every
        if not (isinstance(backbone_lr_scale, int | float) and 0 <= backbone_lr_scale < float("inf")):
            raise OEUserError(f"module.backbone_lr_scale must be a number >= 0 (1: one learning rate, 0: frozen "
                              f"backbone), got {backbone_lr_scale!r}.")
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.channels_last, self.compile = bool(channels_last), bool(compile)
        self.joint_forward = bool(joint_forward)
        self._step_log = DeferredStepLog()
        if pretrained:
            load_backbone_weights(self.backbone, pretrained, num_classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.info = info or CheckpointInfo()  # stored in checkpoints beside the weights
        self.last_val_ood: dict[str, float] = {}
        self.val_ood = OODMetrics()  # gathers the validation scores; validation_ood_metrics computes

    def setup(self, stage: str) -> None:
        """A data family that learnt from the training data (text: the vocabulary) is stored in :attr:`info`, so
        checkpoints carry how an input becomes the model's (oe-predict and oe-export read it)."""
        trainer = attached_trainer(self)
        family = getattr(getattr(trainer, "datamodule", None), "family", None) if trainer is not None else None
        if family is not None:
            if self.info.preprocessing is None:
                self.info = replace(self.info, preprocessing=family.to_dict())
            family.check_fits(self.backbone)

    def forward(self, x: Tensor) -> Tensor:
        """The backbone's logits."""
        return self.backbone(x)

    def _check_logits(self, logits: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise OEUserError(
                f"The backbone returned logits of shape {tuple(logits.shape)}, but the data has "
                f"{self.num_classes} classes: set the model's num_classes to {self.num_classes} "
                f"(model.num_classes=${{data.num_classes}}) or use a checkpoint trained on this data."
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store :attr:`info` and ``num_classes`` beside the weights (never after a non-finite loss)."""
        self.raise_if_nonfinite()  # never save weights that a NaN step has already reached
        checkpoint["oe_lightning"] = {**self.info.to_dict(), "num_classes": self.num_classes}

    # ---- training -------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Remember the run's seed, from which every step reseeds."""
        self._base_seed = torch.initial_seed()  # the seed_everything seed (the same after a resume)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed the RNGs (dropout, any unseeded randomness) from (seed, step): a step draws the
        same whether the run got here uninterrupted or resumed from a checkpoint, however many
        random numbers data loaders and hooks drew in between. Only the generators this run uses
        (``torch.manual_seed`` would also seed every other device type: ~0.3 ms a step)."""
        seed = sample_seed(getattr(self, "_base_seed", torch.initial_seed()), self.global_step, -1)
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
        elif self.device.type != "cpu":
            torch.manual_seed(seed)
        random.seed(seed)
        numpy.random.seed(seed % (1 << 32))

    def configure_model(self) -> None:
        """On the training device, before the optimiser: channels-last weights, the compiled forward."""
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if self.compile and "_compiled" not in self.__dict__:
            # kept outside the module tree: state_dict keys and checkpoints stay the plain backbone's
            self.__dict__["_compiled"] = torch.compile(self.backbone)

    def _train_forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.__dict__.get("_compiled", self.backbone)(x)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """CE on the ID samples + λ · OE term on the OE samples, from one forward over both."""
        x_in, y = batch["in"]
        x_oe = None if is_baseline(self.lambda_oe) else batch.get("oe")
        n_in = x_in.shape[0]
        oe_targets = y
        if x_oe is not None and getattr(self.oe_loss, "mixes_batch", False):  # MixOE: mixed images, soft targets
            x_oe, oe_targets = self.oe_loss.mix(x_in, y, x_oe, self.num_classes)
        if x_oe is not None and self.joint_forward:
            logits = self._train_forward(self._join(x_in, x_oe))
            logits_in, logits_oe = logits[:n_in], logits[n_in:]
        elif x_oe is not None:
            logits_in, logits_oe = self._train_forward(x_in), self._train_forward(x_oe)
            logits = logits_in
        else:
            logits_in = logits = self._train_forward(x_in)
        if batch_idx == 0:
            self._check_logits(logits)
        loss_in = F.cross_entropy(logits_in, y)
        loss_oe = self.oe_loss(logits_oe, logits_in, oe_targets) if x_oe is not None else loss_in.new_zeros(())
        loss = loss_in + self.lambda_oe * loss_oe
        parts = torch.stack([loss, loss_in, loss_oe]).detach()
        self._watch_finite(parts, batch_idx)
        self._accumulate(parts, (logits_in.detach().argmax(1) == y).sum(), n_in)
        trainer = attached_trainer(self)  # None when called outside a Trainer (tests, notebooks)
        if trainer is not None and (self.global_step + 1) % trainer.log_every_n_steps == 0:
            self._log_step(parts)
        return loss

    def _join(self, x_in: Tensor, x_oe: Tensor) -> Tensor:
        """The ID and OE inputs as one batch, joined as the DataModule's data wants (``torch.cat`` without one)."""
        trainer = attached_trainer(self)
        join = getattr(getattr(trainer, "datamodule", None), "join_inputs", None) if trainer is not None else None
        return join(x_in, x_oe) if join is not None else torch.cat([x_in, x_oe])

    STEP_NAMES = ("train/loss_step", "train/loss_in_step", "train/loss_oe_step")

    def _log_step(self, parts: Tensor) -> None:
        """Every ``trainer.log_every_n_steps`` steps, straight to the loggers (rank 0 only), where
        ``self.log`` would cost ~6 ms of bookkeeping per call; copied off the device without
        waiting for it and written once there (:class:`~oe_lightning.step_log.DeferredStepLog`)."""
        if self.trainer.is_global_zero and self.loggers:
            self._step_log.put(parts, self.STEP_NAMES, self.global_step, self.current_epoch, self.loggers)

    def _flush_step_log(self, wait: bool = True) -> None:
        if attached_trainer(self) is not None:
            self._step_log.flush(self.loggers, wait)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Write the logged step values whose copy off the device is done, in order (on CPU: at once; on a
        GPU a step or two later, so with log_every_n_steps=1 a row may follow a later step's learning rate)."""
        self._flush_step_log(wait=False)

    def on_validation_start(self) -> None:
        """Write pending step values before the validation's, in step order."""
        self._flush_step_log()

    def on_train_end(self) -> None:
        """Write pending step values."""
        self._flush_step_log()

    # Losses and accuracy stay on the device during an epoch (no host synchronisation per step):
    # summed here, logged once per epoch. A non-finite loss is looked for every step on CPU (free)
    # and, on an accelerator, every NONFINITE_CHECK_EVERY steps (``nonfinite_check_every``), at each
    # epoch's last batch and before every checkpoint.
    NONFINITE_CHECK_EVERY = 50

    def _accumulate(self, parts: Tensor, correct: Tensor, n: int) -> None:
        sums = getattr(self, "_epoch_sums", None)
        if sums is None or sums.device != parts.device:
            sums = self._epoch_sums = torch.zeros(4, dtype=torch.float64, device=parts.device)
            self._epoch_seen = 0
        sums[:3] += parts.double() * n
        sums[3] += correct
        self._epoch_seen += n

    def _watch_finite(self, parts: Tensor, batch_idx: int) -> None:
        """Raise :class:`NonFiniteLossError` for a NaN/inf loss: at once on CPU (free); on an
        accelerator the first bad step is recorded on the device and read every
        ``nonfinite_check_every`` steps, at the epoch's last batch and before any checkpoint."""
        every = self.nonfinite_check_every or (1 if parts.device.type == "cpu" else self.NONFINITE_CHECK_EVERY)
        if every == 1:
            if not bool(torch.isfinite(parts[0])):
                self._raise_nonfinite(self.global_step, parts.tolist())
            return
        record = getattr(self, "_first_bad", None)
        if record is None or record.device != parts.device:
            record = self._first_bad = torch.full((4,), -1.0, dtype=torch.float64, device=parts.device)
        newly = ~torch.isfinite(parts[0]) & (record[0] < 0)
        # new_full fills on the device; new_tensor would copy from the host and wait for the device
        step_and_parts = torch.cat([parts.new_full((1,), float(self.global_step), dtype=torch.float64),
                                    parts.double()])
        record.copy_(torch.where(newly, step_and_parts, record))
        trainer = attached_trainer(self)
        last = trainer is not None and batch_idx + 1 >= trainer.num_training_batches
        if last or (self.global_step + 1) % every == 0:
            self.raise_if_nonfinite()

    def raise_if_nonfinite(self) -> None:
        """Look at the device's record of a non-finite loss (one synchronisation) and raise if there is one."""
        record = getattr(self, "_first_bad", None)
        if record is not None:
            step, *parts = record.tolist()
            if step >= 0:
                self._raise_nonfinite(int(step), parts)

    def _raise_nonfinite(self, step: int, parts: list[float]) -> None:
        loss, loss_in, loss_oe = parts
        weighted = self.lambda_oe * loss_oe
        cause = (f"the OE term λ · OE loss = {weighted:.4g} is not finite: lower loss.lambda_oe={self.lambda_oe:g}"
                 if math.isfinite(loss_in) and math.isfinite(loss_oe) and not math.isfinite(weighted) else
                 f"lower module.optimizer.lr or loss.lambda_oe={self.lambda_oe:g}")
        raise NonFiniteLossError(
            f"The training loss became {loss} at epoch {self.current_epoch}, step {step} (ID loss "
            f"{loss_in:.4g}, OE loss {loss_oe:.4g}, λ={self.lambda_oe:g}). Training stopped; {cause}, or check "
            f"the data for NaN/inf values."
        )

    def on_train_epoch_end(self) -> None:
        """Log the epoch's sample-weighted mean losses and training accuracy (one synchronisation)."""
        self._flush_step_log()
        seen = getattr(self, "_epoch_seen", 0)
        if seen:
            means = self._epoch_sums / seen
            self.log_dict({"train/loss_epoch": means[0], "train/loss_in_epoch": means[1],
                           "train/loss_oe_epoch": means[2]}, sync_dist=True)
            self.log("train/acc", means[3], prog_bar=True, sync_dist=True)
        self._epoch_sums, self._epoch_seen = None, 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        """Loader 0: the ID validation split; loader 1 (if any): the validation OOD set."""
        x, y = batch
        logits = self.backbone(x)
        if self.score is not None:
            self.val_ood.update(self.score(logits), dataloader_idx == 1)
        if dataloader_idx == 0:
            self.val_acc(logits, y)
            self.log("val/loss", F.cross_entropy(logits, y), batch_size=x.shape[0], sync_dist=True,
                     add_dataloader_idx=False)
            self.log("val/acc", self.val_acc, prog_bar=True, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/fpr95`` and ``val/auroc`` (ID split vs validation OOD set): what a λ search minimises;
        the same computation as each detector's ``val`` metrics in the test evaluation."""
        loaders = self.trainer.val_dataloaders
        if isinstance(loaders, list | tuple) and len(loaders) > 1 and self.score is not None:
            values = validation_ood_metrics(*self.val_ood.gathered(), self.evaluation)
            self.last_val_ood = values  # float64, for results.json (logged values are float32)
            self.log_dict({f"val/{k}": v for k, v in values.items()}, add_dataloader_idx=False)
        self.val_ood.reset()

    def _head_and_body(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The classifier head's parameters (the backbone's last ``nn.Linear``) and all the others."""
        from oe_lightning.models.pretrained import last_linear

        head = list(last_linear(self.backbone)[1].parameters())
        ids = {id(p) for p in head}
        return head, [p for p in self.backbone.parameters() if id(p) not in ids]

    def _parameter_groups(self) -> Any:
        """All parameters, or (``backbone_lr_scale`` != 1) the head at the optimiser's lr and the rest
        at lr × scale; frozen (scale 0) parameters are left out."""
        if self.backbone_lr_scale == 1.0:
            return self.parameters()
        head, body = self._head_and_body()
        if self.backbone_lr_scale == 0.0:
            for p in body:
                p.requires_grad_(False)
            return [{"params": head}]
        return [{"params": head}, {"params": body, "lr_scale": self.backbone_lr_scale}]

    def on_train_epoch_start(self) -> None:
        """A frozen backbone (``backbone_lr_scale=0``) keeps its BatchNorm statistics."""
        if self.backbone_lr_scale == 0.0:
            for m in self.backbone.modules():
                if isinstance(m, BatchNormBase):
                    m.eval()

    def configure_optimizers(self) -> Any:
        """The optimiser over the parameter groups, and the scheduler stepped every step."""
        groups = self._parameter_groups()
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        else:
            optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
