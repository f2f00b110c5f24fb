"""Loading backbone weights from Lightning checkpoints or plain state_dicts."""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oe_lightning.errors import OEUserError

BACKBONE_PREFIX = "backbone."
log = logging.getLogger("oe_lightning")


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """``torch.load(path, weights_only=True)`` with clear errors for a missing or foreign file
    (``mmap``: tensors of a zip-format file are mapped, not read: a cheap look at the contents)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise OEUserError(
            f"Checkpoint {str(path)!r} does not exist. Pass the path of a .ckpt written by "
            f"oe-train (in <run dir>/checkpoints/) or of a saved state_dict (.pt)."
        )
    try:
        mapped = mmap and zipfile.is_zipfile(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as err:  # pickle errors come in many types
        detail = (str(err).strip().splitlines() or ["empty or truncated file"])[0][:200]
        raise OEUserError(
            f"Checkpoint {str(path)!r} could not be read as weights ({type(err).__name__}: {detail}); "
            f"it is empty, truncated, not a checkpoint, or holds code (never run: weights_only=True). "
            f"Pass a .ckpt from oe-train or a state_dict."
        ) from err
    if not isinstance(checkpoint, dict):
        raise OEUserError(f"Checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a mapping of weights; "
                          f"pass a .ckpt from oe-train or a saved state_dict.")
    return checkpoint


def backbone_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The backbone's weights from a Lightning checkpoint, a plain state_dict, or one wrapped under
    ``"state_dict"`` or ``"model"`` (as many published weight files are)."""
    state = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    if any(k.startswith(BACKBONE_PREFIX) for k in state):
        return {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def load_backbone_weights(backbone: nn.Module, path: str | Path, num_classes: int | None = None,
                          checkpoint: dict | None = None) -> None:
    """Load the weights of the checkpoint at ``path`` (``checkpoint``: its contents, already read)
    into ``backbone`` strictly; shape mismatches get an explained error.

    Old checkpoints without BatchNorm ``num_batches_tracked`` buffers load too.
    """
    state = backbone_state_dict(read_checkpoint(path) if checkpoint is None else checkpoint)
    if hasattr(backbone, "from_classifier") and not any(k.startswith("network.") for k in state):
        state = backbone.from_classifier(state)  # a K-class baseline's weights into a K+1 background model
    own = backbone.state_dict()
    mismatched = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and v.shape != own[k].shape}
    if mismatched:
        head = [f"{k} {ck} in the checkpoint vs {mine} in the model"
                for k, (ck, mine) in mismatched.items()]
        # a head whose output count differs (and nothing else): the data's class count does not match
        classes = [ck[0] for k, (ck, mine) in mismatched.items() if num_classes is not None and mine
                   and mine[0] == num_classes and ck[0] != num_classes and ck[1:] == mine[1:]]
        why = (f"The checkpoint has {classes[0]} output classes but the data has {num_classes}. "
               if classes else "The checkpoint is of another architecture or width. ")
        raise OEUserError(
            f"Checkpoint {str(path)!r} does not fit the model: {why}Mismatched weights: "
            f"{'; '.join(head[:4])}. Use a checkpoint trained on the same data and model, or "
            f"change data=/model= to match it."
        )
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise OEUserError(
            f"Checkpoint {str(path)!r} does not fit the model {type(backbone).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}. Choose the model= the "
            f"checkpoint was trained with."
        )
    for k in own:
        if k not in state:  # num_batches_tracked of old checkpoints
            state[k] = own[k]
    backbone.load_state_dict(state, strict=True)
    log.info("loaded %d weight tensors of %s from %s", len(state), type(backbone).__name__, path)


# Backbone factories a checkpoint may name; the config's own model target (and model_allowlist) adds to
# them. Nothing read from a file can add a factory.
ALLOWED_BACKBONES = ("oe_lightning.models.SmallCNN", "oe_lightning.models.WideResNet",
                     "oe_lightning.models.wrn_40_2", "oe_lightning.models.wrn_16_4",
                     "oe_lightning.models.torchvision_classifier", "oe_lightning.models.timm_classifier",
                     "oe_lightning.models.resnet18_32x32", "oe_lightning.models.background_classifier",
                     "oe_lightning.models.GRUClassifier", "oe_lightning.models.TransformerTextClassifier",
                     "timm.create_model")
# wraps a K+1-output backbone as K classes; the backbone factory it names must be allowed too
BACKGROUND_FACTORY = "oe_lightning.models.background_classifier"


def _plain(value: Any) -> bool:
    """A number, string, bool or None (no interpolation), or a list of those."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, str):
        return "${" not in value
    return value is None or isinstance(value, bool | int | float)


# Keywords that name files, URLs or downloads: a checkpoint never sets them (the user's config may).
# Initial-weights switches our own factories store (a fine-tuned run's pretrained=true, weights=DEFAULT,
# weights_path=...) are left out instead (the factory's default: none), with a note: the checkpoint's own
# weights replace them.
DROPPED_WEIGHT_SOURCES = ("pretrained", "weights", "weights_path")
REFUSED_KEYWORDS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "url", "file", "path",
                    "cache_dir", "hf_hub_id", "hf_hub_filename", "model_dir")


def _names_a_place(value: Any) -> bool:
    """A string that looks like a path or a URL (``/``, ``\\``, ``:`` as in ``https://``, ``hf-hub:``,
    ``C:``, or a leading ``~``), or a list holding one."""
    if isinstance(value, list):
        return any(_names_a_place(v) for v in value)
    return isinstance(value, str) and (any(c in value for c in "/\\:") or value.startswith("~"))


def checked_model_config(stored: Any, also_allowed: Iterable[str], path: str) -> dict[str, Any]:
    """The backbone config a checkpoint stores, accepted only if it is data: an allowed factory
    (:data:`ALLOWED_BACKBONES` and ``also_allowed``: the config's ``model._target_``, ``model_allowlist``)
    with plain values, none naming a file, URL or download (:data:`REFUSED_KEYWORDS`, path-like strings);
    :data:`DROPPED_WEIGHT_SOURCES` are left out."""
    allowed = {*ALLOWED_BACKBONES, *(str(t) for t in also_allowed if t)}
    target = stored.get("_target_") if isinstance(stored, dict) else None
    bad = [] if isinstance(stored, dict) else ["it is not a mapping"]
    if isinstance(stored, dict):
        if target not in allowed:
            bad.append(f"_target_={target!r} is not an allowed backbone factory")
        if target == BACKGROUND_FACTORY and stored.get("backbone") not in allowed:
            bad.append(f"backbone={stored.get('backbone')!r} is not an allowed backbone factory")
        bad += [f"{k}={v!r} is not a plain value" for k, v in stored.items()
                if k != "_target_" and (not isinstance(k, str) or k.startswith("_") or not _plain(v))]
    if bad:
        raise OEUserError(
            f"Checkpoint {path!r} stores a model config that is not plain data ({'; '.join(bad[:3])}); "
            f"a checkpoint never chooses what code runs. Rebuild the model from your own config instead "
            f"(model=... with its settings), or, if you trust that factory, allow it with "
            f"++model_allowlist=[{target}]. Allowed: {', '.join(sorted(allowed))}."
        )
    config = dict(stored)
    dropped = {k: config[k] for k in DROPPED_WEIGHT_SOURCES if config.get(k)}
    places = [f"{k}={v!r}" for k, v in config.items() if k not in dropped and k != "_target_" and v
              and (k in REFUSED_KEYWORDS or _names_a_place(v))]
    if places:
        raise OEUserError(
            f"Checkpoint {path!r} stores a model config naming a file, URL or download ({'; '.join(places[:4])}); "
            f"a checkpoint never chooses what is read or fetched: nothing was opened or downloaded. The model "
            f"is rebuilt from the checkpoint's own weights, so none is needed: use a checkpoint written by "
            f"oe-train, or remove these keys from its model config."
        )
    if dropped:
        log.warning("checkpoint %s: its model config's %s left out: the checkpoint's own weights are loaded, so "
                    "nothing is downloaded or read for them", path, ", ".join(f"{k}={v!r}" for k, v in dropped.items()))
        for key in dropped:
            del config[key]
    return config
