"""The error for a dataset that is not where the config says."""

from __future__ import annotations

from pathlib import Path

from oe_lightning.errors import OEUserError


def missing_dataset(name: str, path: str | Path, layout: str, how_to_get: str,
                    reason: str = "") -> OEUserError:
    """An error naming the expected path and layout, and how to get the data."""
    why = f" ({reason})" if reason else ""
    return OEUserError(
        f"Dataset {name} was not found or failed its integrity check at {str(path)!r}{why}. "
        f"Expected layout: {layout}. To get it: {how_to_get}. Set paths.data_dir=... or the "
        f"OE_DATA_DIR environment variable to point the framework at your data."
    )
