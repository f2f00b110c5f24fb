"""oe-lightning: Outlier Exposure for out-of-distribution detection on PyTorch Lightning.

The Python API without Hydra::

    from oe_lightning import OEDataModule, OutlierExposureModule, UniformCrossEntropy, ood_metrics

Names are imported on first use, so ``import oe_lightning`` (and ``oe-train --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # training
    "OutlierExposureModule": "oe_lightning.module",
    "OEDataModule": "oe_lightning.data.datamodule",
    "ImagesOnly": "oe_lightning.data.datamodule",
    # OE losses
    "UniformCrossEntropy": "oe_lightning.losses",
    "JensenShannonUniform": "oe_lightning.losses",
    "EnergyMargin": "oe_lightning.losses",
    "WassersteinUniform": "oe_lightning.losses",
    "WassersteinToClasses": "oe_lightning.losses",
    "OutlierExposureConfidenceControl": "oe_lightning.losses",
    # OOD scores (larger = more OOD)
    "MaxSoftmax": "oe_lightning.scores",
    "MaxLogit": "oe_lightning.scores",
    "Energy": "oe_lightning.scores",
    "Entropy": "oe_lightning.scores",
    "UniformCrossEntropyScore": "oe_lightning.scores",
    "GeneralizedEntropy": "oe_lightning.scores",
    "WassersteinScore": "oe_lightning.scores",
    # evaluation and detectors (larger score = more OOD)
    "OODEvaluation": "oe_lightning.evaluation",
    "EvaluationSettings": "oe_lightning.evaluation_settings",
    "Detector": "oe_lightning.detectors",
    "Mahalanobis": "oe_lightning.detectors",
    "KNN": "oe_lightning.detectors",
    "ViM": "oe_lightning.detectors",
    "ReAct": "oe_lightning.detectors",
    "ASH": "oe_lightning.detectors",
    "ODIN": "oe_lightning.detectors",
    # metrics
    "ood_metrics": "oe_lightning.metrics",
    "OODMetrics": "oe_lightning.metrics",
    "rms_calibration_error": "oe_lightning.calibration",
    "calibration_error": "oe_lightning.calibration",
    "tune_temperature": "oe_lightning.calibration",
    # backbones
    "SmallCNN": "oe_lightning.models",
    "WideResNet": "oe_lightning.models",
    "wrn_40_2": "oe_lightning.models",
    "wrn_16_4": "oe_lightning.models",
    "torchvision_classifier": "oe_lightning.models",
    # errors
    "OEUserError": "oe_lightning.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oe_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
