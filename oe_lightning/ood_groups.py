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


def groups_of(ood: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Group name -> its sets (in ``ood`` order), reading only the ``group`` keys; a group that is not a
    name is an error naming the set."""
    groups: dict[str, list[str]] = {}
    for name, entry in (ood or {}).items():
        if not isinstance(entry, Mapping | DictConfig) or GROUP_KEY not in entry:
            continue
        group = entry[GROUP_KEY]
        if not isinstance(group, str) or not group or group in ("mean", "all"):
            raise OEUserError(f"ood.{name}.group must be a group name such as near or far, got {group!r}.")
        groups.setdefault(group, []).append(str(name))
    return groups


def split_groups(ood: Mapping[str, Any] | None) -> tuple[Any, dict[str, list[str]]]:
    """``ood`` without the ``group`` keys (unchanged if it has none; else its entries resolved, as plain data),
    and :func:`groups_of` it."""
    groups = groups_of(ood)
    if not groups:
        return ood, {}
    entries = {}
    for name, entry in ood.items():
        if isinstance(entry, DictConfig):
            entry = OmegaConf.to_container(entry, resolve=True)
        entries[str(name)] = {k: v for k, v in entry.items() if k != GROUP_KEY} if isinstance(entry, Mapping) \
            else entry
    return entries, groups


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
