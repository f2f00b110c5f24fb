"""Groups of OOD test sets (OpenOOD's near-OOD and far-OOD) and the means reported over sets and groups.

An ``ood`` config entry may carry ``group: near`` beside its dataset factory; the key is taken out
before the factory is built. Every mean over OOD sets (all sets, each group) is computed here, for the
evaluation, ``oe-table --rescore`` and the tables alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from oe_lightning.errors import OEUserError

GROUP_KEY = "group"


def split_groups(ood: Mapping[str, Any] | None) -> tuple[Any, dict[str, list[str]]]:
    """``ood`` without the ``group`` keys, and group name -> its sets (in ``ood`` order)."""
    if not ood:
        return ood, {}
    groups: dict[str, list[str]] = {}
    entries: dict[str, Any] = {}
    for name, entry in ood.items():
        if isinstance(entry, Mapping | DictConfig) and GROUP_KEY in entry:
            group = entry[GROUP_KEY]
            if not isinstance(group, str) or not group or group in ("mean", "all"):
                raise OEUserError(f"ood.{name}.group must be a group name such as near or far, got {group!r}.")
            groups.setdefault(group, []).append(str(name))
            entry = OmegaConf.create({k: v for k, v in entry.items() if k != GROUP_KEY}) \
                if isinstance(entry, DictConfig) else {k: v for k, v in entry.items() if k != GROUP_KEY}
        entries[name] = entry
    return (OmegaConf.create(entries) if isinstance(ood, DictConfig) else entries), groups


def metric_means(per_set: Mapping[str, Mapping[str, float]], names: list[str] | None = None) -> dict[str, float]:
    """Each metric's mean over the sets ``names`` (default: all), ``*_std`` spreads left out."""
    chosen = [per_set[n] for n in (names if names is not None else per_set) if n in per_set]
    if not chosen:
        return {}
    keys = [k for k in chosen[0] if not k.endswith("_std")]
    return {k: sum(m[k] for m in chosen) / len(chosen) for k in keys}


def summarised(per_set: Mapping[str, Mapping[str, float]], groups: Mapping[str, list[str]]) -> dict[str, Any]:
    """``{"mean": over every set}`` and, with groups, ``{"groups": {group: mean over its sets}}``."""
    out: dict[str, Any] = {"mean": metric_means(per_set)}
    if groups:
        out["groups"] = {g: metric_means(per_set, names) for g, names in groups.items()}
    return out
