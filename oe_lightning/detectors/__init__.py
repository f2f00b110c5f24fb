"""OOD detectors (larger score = more OOD): logit detectors from ``oe_lightning.scores``, and
feature, activation and gradient detectors, all scored from one evaluation pass per sample."""

from oe_lightning.detectors.base import NEEDS, Detector, LogitDetector, Outputs, as_detector
from oe_lightning.detectors.batch_detectors import ASH, ODIN
from oe_lightning.detectors.feature_detectors import KNN, Mahalanobis, ReAct, ViM

__all__ = ["ASH", "KNN", "NEEDS", "ODIN", "Detector", "LogitDetector", "Mahalanobis", "Outputs", "ReAct", "ViM",
           "as_detector"]
