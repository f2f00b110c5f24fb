"""The one rule for "λ = 0 is the plain baseline": no OE term, no OE data read, and nothing of the
OE side (its loss, its data) part of what identifies or labels the run."""

from __future__ import annotations

from typing import Any

# the config keys (prefixes) a baseline never uses: left out of its identity and its validation
UNUSED_WITHOUT_OE = ("loss.", "oe.", "data.oe_", "module.oe_loss")


def is_baseline(lambda_oe: Any) -> bool:
    """Whether a run with this ``loss.lambda_oe`` is the plain baseline (λ = 0, or none recorded)."""
    return lambda_oe in (None, 0)


def uses_oe_key(key: str) -> bool:
    """Whether config ``key`` belongs to the OE side, which a baseline never reads."""
    return key.startswith(UNUSED_WITHOUT_OE)
