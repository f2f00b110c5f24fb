"""Backbones: any nn.Module mapping a batch of inputs (images, token indices) to logits works; these are the
bundled ones."""

from oe_lightning.models.background import BackgroundClassifier, background_classifier
from oe_lightning.models.openood import resnet18_32x32
from oe_lightning.models.pretrained import timm_classifier
from oe_lightning.models.small_cnn import SmallCNN
from oe_lightning.models.text import GRUClassifier, TransformerTextClassifier
from oe_lightning.models.torchvision_models import torchvision_classifier
from oe_lightning.models.wrn import WideResNet, wrn_16_4, wrn_40_2

__all__ = ["BackgroundClassifier", "GRUClassifier", "SmallCNN", "TransformerTextClassifier", "WideResNet",
           "background_classifier", "resnet18_32x32", "timm_classifier", "torchvision_classifier", "wrn_16_4",
           "wrn_40_2"]
