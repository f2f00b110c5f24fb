"""A network with one output more than the classes (the K+1 "background" class that OE samples are labelled
with: NTOM, pytorch-ood's BackgroundClassLoss) seen as a K-class classifier, so that everything downstream
(accuracy, every detector, deployment) reads K logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import get_method
from torch import Tensor, nn

from oe_lightning.models.contract import feature_backbone


class BackgroundClassifier(nn.Module):
    """Its outputs are the joint log-probabilities ``log p(k | x)``, k < K, of the network's K+1-way softmax.

    The background probability is ``1 - Σ_k exp(output_k)``, so the energy score on these outputs,
    ``-logsumexp(outputs) = -log(1 - p(K | x))``, ranks inputs exactly as the background probability does
    (jfc43/informative-outlier-mining eval_ood_detection.py:100-105 scores ``softmax(outputs)[:, -1]``); the
    softmax over them is the class posterior given "not background", and their argmax the class decision
    over the first K outputs (train_ntom.py:353). Feature detectors read the network's features.
    """

    def __init__(self, network: nn.Module, num_classes: int):
        super().__init__()
        self.network, self.num_classes = network, int(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``log_softmax`` of the K+1 outputs, the background column left out."""
        return F.log_softmax(self.network(x), dim=1)[:, : self.num_classes]

    def forward_features(self, x: Tensor) -> Tensor:
        """The network's features (the feature contract)."""
        return feature_backbone(self.network, "a feature detector").forward_features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The network's penultimate vector, or the K class outputs from the features."""
        head = feature_backbone(self.network, "a feature detector").forward_head(x, pre_logits)
        return head if pre_logits else F.log_softmax(head, dim=1)[:, : self.num_classes]

    def from_classifier(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A K-class classifier's weights (the same network, K head rows: a baseline to fine-tune from) as this
        model's: the background row of the head keeps this model's own initial values."""
        from oe_lightning.models.pretrained import last_linear

        name, head = last_linear(self.network)
        out = dict(state)
        for part in ("weight", "bias"):
            key, own = f"{name}.{part}", getattr(head, part)
            if own is not None and key in out and out[key].shape[0] == self.num_classes:
                out[key] = torch.cat([out[key], own.detach()[self.num_classes:].to(out[key])])
        return {f"network.{k}": v for k, v in out.items()}

    def get_classifier(self) -> nn.Module:
        """The network's final linear layer (K+1 rows: the last one is the background class)."""
        return feature_backbone(self.network, "a feature detector").get_classifier()


def background_classifier(backbone: str, num_classes: int, **kwargs: Any) -> BackgroundClassifier:
    """The factory a checkpoint stores: the backbone factory ``backbone`` (a dotted name, checked against the
    model allow-list before this runs) built with ``num_classes + 1`` outputs and ``kwargs``, wrapped."""
    return BackgroundClassifier(get_method(backbone)(num_classes=num_classes + 1, **kwargs), num_classes)
