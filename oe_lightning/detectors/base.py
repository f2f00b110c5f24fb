"""What every OOD detector is: optional ``fit`` on ID training outputs, then a score per sample.

Convention: a larger score means more likely OOD. A detector declares what it reads (``needs``):

- ``"logits"``: scored from stored logits (MSP, max-logit, energy, ...);
- ``"features"``: scored from stored penultimate features (+ logits, + the classifier head);
- ``"maps"``: scored per batch from the backbone's feature maps (ASH), in the same forward pass;
- ``"input"``: scored per batch from the input, with gradients (ODIN): its own forward passes.

Logit and feature detectors are scored after every set has been through the backbone once;
``fit`` sees the ID training set's outputs (``requires_fit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

NEEDS = ("logits", "features", "maps", "input")


@dataclass
class Outputs:
    """A set's backbone outputs: logits ``(N, C)``, penultimate features ``(N, D)`` (when a detector
    needs them) and labels (ID sets)."""

    logits: Tensor
    features: Tensor | None = None
    labels: Tensor | None = None

    def __len__(self) -> int:
        return self.logits.shape[0]


class Detector(nn.Module):
    """Base class: override ``score`` (logits / features) or ``score_batch`` (maps / input)."""

    needs: ClassVar[str] = "logits"
    requires_fit: ClassVar[bool] = False

    def fit(self, train: Outputs, head: nn.Module | None = None) -> Detector:
        """Estimate what the detector needs from the ID training set's outputs (no-op by default)."""
        return self

    def check_fit_size(self, samples: int) -> None:
        """Refuse, before anything is scored, settings that ``samples`` fitting samples cannot meet."""

    def score(self, outputs: Outputs, head: nn.Module | None = None) -> Tensor:
        """One score per sample of ``outputs`` (larger = more OOD); ``head`` is the backbone's classifier.
        Logit and feature detectors override it; here it raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} scores batches (needs={self.needs!r}), not stored outputs")

    def score_batch(self, model: nn.Module, view: Any, x: Tensor, maps: Tensor | None) -> Tensor:
        """Score a batch: ``model`` maps images to logits, ``view`` is its feature contract (or None)."""
        raise NotImplementedError(f"{type(self).__name__} scores stored outputs (needs={self.needs!r})")

    def extra_repr(self) -> str:
        """The hyperparameters as ``name=value, ...``, shown in the module's repr."""
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    def hparams(self) -> dict[str, Any]:
        """The detector's hyperparameters (recorded with its results)."""
        return {}


class LogitDetector(Detector):
    """Any ``logits -> score`` module or function as a detector (MSP, max-logit, energy, entropy, OE)."""

    def __init__(self, fn: nn.Module | Any):
        super().__init__()
        self.fn = fn

    def score(self, outputs: Outputs, head: nn.Module | None = None) -> Tensor:
        """``fn`` applied to the stored logits."""
        return self.fn(outputs.logits)

    def hparams(self) -> dict[str, Any]:
        """The class name of ``fn``, and its ``temperature`` if it has one."""
        temperature = getattr(self.fn, "temperature", None)
        return {"fn": type(self.fn).__name__, **({"temperature": temperature} if temperature is not None else {})}


def as_detector(obj: Detector | nn.Module | Any) -> Detector:
    """A detector as it is; any other callable (a score from ``oe_lightning.scores``) as a logit detector."""
    if isinstance(obj, Detector):
        return obj
    if callable(obj):
        return LogitDetector(obj)
    raise TypeError(f"{obj!r} is neither a Detector nor a logits -> score callable.")


def energy_score(logits: Tensor) -> Tensor:
    """Negative free energy, larger = more OOD (ReAct's and ASH's default score)."""
    return -torch.logsumexp(logits, dim=1)
