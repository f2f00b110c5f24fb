"""Dataset sources and the DataModule that zips D_in with D_out^OE."""

from oe_lightning.data.datamodule import ImagesOnly, OEDataModule

__all__ = ["ImagesOnly", "OEDataModule"]
