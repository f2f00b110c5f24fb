"""OE methods that change the training batch (MixOE) rather than only the OE term."""

from oe_lightning.methods.mixoe import MixOE

__all__ = ["MixOE"]
