"""The one registry of detectors: the ``conf/detector/`` config group.

Each file ``conf/detector/<name>.yaml`` holds ``<name>: {_target_: ..., knobs}``. ``score=<name>``
names the *primary* detector (its results are results.json's top level; its threshold is deployed);
``detector=[a,b]`` adds more, scored from the same pass. A detector named by ``score=`` but not chosen
with ``detector=`` takes its file's settings. Logit scores (``oe_lightning.scores``) can also be
deployed by oe-predict and oe-export; feature, activation and gradient detectors are evaluated only.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from oe_lightning.errors import OEUserError

if TYPE_CHECKING:
    from torch import Tensor

DEFAULT_PRIMARY = "msp"
SCORES_MODULE = "oe_lightning.scores"


@functools.cache
def logit_scores() -> dict[str, type]:
    """The logit scores a deployed model may apply, by config target: every class of
    ``oe_lightning.scores`` (imported when first asked: it imports torch)."""
    import importlib

    module = importlib.import_module(SCORES_MODULE)
    return {f"{SCORES_MODULE}.{name}": cls for name, cls in inspect.getmembers(module, inspect.isclass)
            if cls.__module__ == SCORES_MODULE}


def group_folder() -> Path:
    """``conf/detector/``: one yaml per detector."""
    from oe_lightning.config import config_dir

    return Path(config_dir()) / "detector"


def names() -> list[str]:
    """Every detector of the config group, by name."""
    return sorted(p.stem for p in group_folder().glob("*.yaml"))


def group_config(name: str) -> dict[str, Any]:
    """The settings ``conf/detector/<name>.yaml`` gives detector ``name`` (a copy: the caller may change it)."""
    return copy.deepcopy(_read_group_file(name))


@functools.cache
def _read_group_file(name: str) -> dict[str, Any]:
    """``conf/detector/<name>.yaml``'s detector, read once per process."""
    path = group_folder() / f"{name}.yaml"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        raise OEUserError(f"score={name!r} names no detector of conf/detector/: use one of {', '.join(names())} "
                          f"(e.g. score=energy), or add {name}.yaml there.")
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not (isinstance(node, dict) and isinstance(node.get(name), dict)):
        raise OEUserError(f"{path} must hold '{name}: {{_target_: ...}}' (a detector named as its file).")
    return node[name]


def deployable_names() -> list[str]:
    """The detectors of the group that oe-predict and oe-export can apply (logit scores)."""
    return [name for name in names() if is_deployable(group_config(name))]


def primary_name(cfg: DictConfig) -> str:
    """The primary detector's name: ``score=`` (default :data:`DEFAULT_PRIMARY`)."""
    return str(cfg.get("score") or DEFAULT_PRIMARY)


def detector_configs(cfg: DictConfig) -> dict[str, Any]:
    """Name -> config of every detector a run scores with, the primary first: ``detector=[...]``'s
    entries (as composed, overrides applied), and the primary's own file if it is not among them."""
    chosen = cfg.get("detector") or {}
    primary = primary_name(cfg)
    configs = {primary: chosen[primary] if primary in chosen else OmegaConf.create(group_config(primary))}
    configs.update({str(k): v for k, v in chosen.items() if str(k) != primary})
    return configs


def primary_config(cfg: DictConfig) -> Any:
    """The primary detector's config (see :func:`detector_configs`)."""
    return detector_configs(cfg)[primary_name(cfg)]


def is_deployable(config: Any) -> bool:
    """Whether a detector config builds a logit score of ``oe_lightning.scores``, which oe-predict and
    oe-export can apply to a single input."""
    target = config.get("_target_") if isinstance(config, dict | DictConfig) else None
    return isinstance(target, str) and target.startswith(f"{SCORES_MODULE}.") and target in logit_scores()


def logit_score(detector: Any) -> Callable[[Tensor], Tensor] | None:
    """``logits -> score`` of a detector that reads logits alone (none to fit), else None: what the
    training module computes its validation OOD metric with."""
    from oe_lightning.detectors.base import Detector, Outputs

    if not isinstance(detector, Detector):
        return detector if callable(detector) else None
    if detector.needs != "logits" or detector.requires_fit:
        return None
    return lambda logits: detector.score(Outputs(logits))
