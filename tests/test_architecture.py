"""docs/architecture.md is the map of the house: every module of the package is in it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_module_is_on_the_map():
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([a-z_.]+)`", text))
    modules = sorted(p.relative_to(REPO / "oe_lightning").with_suffix("").as_posix().replace("/", ".")
                     for p in (REPO / "oe_lightning").rglob("*.py") if p.name != "__init__.py")
    missing = [m for m in modules if m not in named]
    assert not missing, f"modules missing from docs/architecture.md: {missing}"
    assert len(modules) > 60
