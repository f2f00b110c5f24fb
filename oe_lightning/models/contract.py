"""The backbone feature contract that feature-based OOD detectors rely on (timm's names).

A backbone exposes ``forward_features(x)`` (its last feature maps, or a feature vector),
``forward_head(features, pre_logits=False)`` (pooling, then the classifier; with ``pre_logits``
the penultimate feature vector) and ``get_classifier()`` (the final linear layer). WRN,
SmallCNN and timm models implement it; any torchvision classification model gets it through
:class:`TorchvisionFeatures`, which reads the input of the model's last ``nn.Linear``. Logit-only
detectors need none of this: any ``nn.Module`` mapping images to logits works for them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from oe_lightning.errors import OEUserError

CONTRACT = "forward_features(x), forward_head(features, pre_logits=False) and get_classifier()"


@runtime_checkable
class FeatureBackbone(Protocol):
    """What feature detectors need of a backbone (timm's names); checked with ``isinstance``."""

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature maps (or a feature vector) of ``x``."""

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pooling, then the classifier; with ``pre_logits`` the penultimate feature vector."""

    def get_classifier(self) -> nn.Module:
        """The final linear layer."""


class TorchvisionFeatures:
    """The contract for any torchvision classifier: features are the input of its last ``nn.Linear``.

    Holds a reference to the model (no copy, no new parameters: checkpoints are unchanged). Feature
    "maps" are the penultimate vector itself, so map-based detectors (ASH) prune that vector.
    """

    def __init__(self, model: nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise OEUserError(f"{type(model).__name__} has no nn.Linear classifier to read features before; "
                              f"feature detectors need a backbone with {CONTRACT}.")
        self.model, self.classifier = model, linears[-1]

    def forward_features(self, x: Tensor) -> Tensor:
        """The input of the model's last ``nn.Linear`` in a forward pass on ``x``."""
        captured: list[Tensor] = []
        handle = self.classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``x`` itself with ``pre_logits``, else the last ``nn.Linear`` applied to it."""
        return x if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        """The model's last ``nn.Linear``."""
        return self.classifier


def feature_backbone(model: nn.Module, needed_by: str = "this detector") -> FeatureBackbone:
    """``model`` itself if it implements the contract, an adapter for torchvision models, else a
    clear error naming the contract."""
    if isinstance(model, FeatureBackbone):
        return model
    if type(model).__module__.startswith("torchvision.models"):
        return TorchvisionFeatures(model)
    raise OEUserError(
        f"{needed_by} needs penultimate features, and the backbone {type(model).__name__} does not "
        f"expose them: give it {CONTRACT} (as timm models, WideResNet and SmallCNN do), or use a "
        f"torchvision classifier, or keep to logit detectors (msp, max_logit, energy, entropy, oe)."
    )
