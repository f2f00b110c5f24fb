"""OE methods that change the training batch (MixOE) or the OE samples (outlier mining), not only the OE term."""

from oe_lightning.methods.mining import OutlierMining
from oe_lightning.methods.mixoe import MixOE
from oe_lightning.methods.poem import PosteriorSampledMining

__all__ = ["MixOE", "OutlierMining", "PosteriorSampledMining"]
