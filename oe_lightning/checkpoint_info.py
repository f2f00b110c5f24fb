"""What oe-train stores beside the weights in every checkpoint (plain values only): how to rebuild the
backbone, which run wrote it, and what oe-predict / oe-export deploy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CheckpointInfo:
    """Stored under ``checkpoint["oe_lightning"]`` (with ``num_classes``).

    Attributes:
        model_config: the backbone's resolved config (oe-eval rebuilds it from an allow-list).
        run_config: the run's key settings (:func:`oe_lightning.results.key_config`).
        identity: the run's resolved config, flattened (:func:`oe_lightning.results.run_identity`).
        class_names: one name per output, or None (indices).
        preprocessing: how an image file becomes the input (:class:`oe_lightning.deployment.Preprocessing`),
            or None for data that oe-predict cannot read.
        score: the primary detector's config when it is a deployable logit score, else None.
        primary_detector: the primary detector's name (``score=``).
    """

    model_config: dict[str, Any] | None = None
    run_config: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    class_names: list[str] | None = None
    preprocessing: dict[str, Any] | None = None
    score: dict[str, Any] | None = None
    primary_detector: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict written into checkpoints."""
        return asdict(self)
