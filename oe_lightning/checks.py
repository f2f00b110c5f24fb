"""Value checks as plain predicates (``value -> bool``), shared by the config rules of
:mod:`oe_lightning.validate` and :mod:`oe_lightning.evaluation_settings`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

Check = Callable[[Any], bool]


def is_int(v: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def integer(low: int | None = None, high: int | None = None) -> Check:
    """An integer in ``[low, high]`` (a missing bound: unbounded)."""
    return lambda v: is_int(v) and (low is None or v >= low) and (high is None or v <= high)


def number(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Check:
    """A finite number between ``low`` and ``high``, each bound closed unless said open."""
    def ok(v: Any) -> bool:
        if not is_number(v) or not math.isfinite(v):  # NaN, inf
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return not (high is not None and (v >= high if high_open else v > high))
    return ok


def boolean(v: Any) -> bool:
    """``true`` or ``false`` (not 0/1, not a string)."""
    return isinstance(v, bool)


def choice(*options: Any) -> Check:
    """One of ``options``."""
    return lambda v: v in options


def optional(check: Check) -> Check:
    """``None``, or what ``check`` accepts."""
    return lambda v: v is None or check(v)


def existing_file(v: Any) -> bool:
    """A path (``~`` expanded) to an existing file."""
    return isinstance(v, str) and Path(v).expanduser().is_file()
