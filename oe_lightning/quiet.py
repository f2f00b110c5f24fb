"""Silence third-party noise that says nothing about the run (tips, deprecations we cannot act on)."""

from __future__ import annotations

import logging
import warnings

WARNINGS = (
    r".*does not have many workers.*",
    r".*LeafSpec.*is deprecated.*",
    # test metrics are computed from scores gathered across ranks, so logging them needs no sync
    r".*when logging on epoch level in distributed setting.*",
    # a DataModule without a validation split returns no validation loaders on purpose
    r".*Total length of .* across ranks is zero.*",
    # a resumed run continues in its own checkpoint directory
    r".*Checkpoint directory .* exists and is not empty.*",
)
TIP_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero")


DROPPED = (
    "Tip:",  # "💡 Tip: ... try installing litlogger / litmodels"
    "Trainer already configured with model summary callbacks",  # ours is callbacks.model_summary
)


class _NoTips(logging.Filter):
    """Drops Lightning's advertising tips and notes about our own deliberate choices."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop the record) when its message contains one of :data:`DROPPED`."""
        return not any(text in str(record.msg) for text in DROPPED)


def quiet_third_party() -> None:
    """Install the warning and log filters (idempotent)."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())
