"""oe-lightning: Outlier Exposure for out-of-distribution detection on PyTorch Lightning."""

__version__ = "0.1.0"
