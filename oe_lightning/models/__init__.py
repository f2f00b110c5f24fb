"""Backbones: any nn.Module mapping images to logits works; these are the bundled ones."""

from oe_lightning.models.small_cnn import SmallCNN
from oe_lightning.models.torchvision_models import torchvision_classifier

__all__ = ["SmallCNN", "torchvision_classifier"]
