"""Where a run starts: a complete run is skipped, an interrupted one continues from its newest readable
checkpoint (``auto_resume``, ``ckpt_path``), a checkpoint of another run is refused."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from oe_lightning.checkpoints import read_checkpoint
from oe_lightning.config import overrides, run_dir
from oe_lightning.errors import OEUserError
from oe_lightning.results import (
    RESUMABLE,
    identity_hash,
    key_config,
    read_complete,
    run_identity,
    upgraded_identity,
)
from oe_lightning.run_folder import (
    newest_checkpoint,
    refuse_beside_checkpoints,
)

log = logging.getLogger("oe_lightning")


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint the run wrote (``last.ckpt``), if any; for a run resumed after its last epoch
    (nothing left to train), the ``last.ckpt`` it resumed from."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") if callback else ""
    if not path and isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
        path = str(Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
    return path if path and Path(path).exists() else None


def completed_results(cfg: DictConfig) -> dict[str, Any] | None:
    """The run directory's complete ``results.json`` when ``skip_complete`` is on (resumable sweeps)."""
    results = read_complete(run_dir()) if cfg.get("skip_complete") else None
    if results is None:
        return None
    if "run_id" in results:  # the same resolved config (output-only keys aside)
        now = identity_hash(run_identity(cfg))
        if results["run_id"] == now or (results.get("identity") is not None
                                        and identity_hash(upgraded_identity(results["identity"])) == now):
            return results
        return None
    return results if results.get("overrides") == overrides() else None  # an older results.json


def readable_checkpoint(last: Path) -> tuple[Path, dict[str, Any]]:
    """``last`` and its contents, or, if it cannot be read (a kill while writing, a full disk), the
    newest readable checkpoint beside it, with a warning; an error naming the file if there is none."""
    try:
        return last, read_checkpoint(last)
    except OEUserError as err:
        others = sorted((p for p in last.parent.glob("*.ckpt")
                         if p.name != last.name and p.resolve() != last.resolve()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for other in others:
            try:
                checkpoint = read_checkpoint(other)
            except OEUserError:
                continue
            log.warning("%s cannot be read (%s); resuming from the previous good checkpoint %s", last, err, other)
            return other, checkpoint
        raise OEUserError(f"auto_resume found {last}, which cannot be read, and no other readable checkpoint "
                          f"beside it ({err}). Write this run elsewhere with hydra.run.dir=... (a new folder), or "
                          f"remove {last.parent} to start over in this directory.") from err


def resume_checkpoint(cfg: DictConfig) -> tuple[str | None, int]:
    """``(path, global_step)`` of the checkpoint to resume: ``ckpt_path`` if given, else
    (``auto_resume``) the run directory's own ``last.ckpt``; ``(None, 0)`` for a fresh run.

    A requeued SLURM job or a re-run sweep job thereby continues where it stopped (also with a
    larger ``trainer.max_epochs``); a checkpoint of a run with other key settings is refused, and so is
    any run that would write its checkpoints beside checkpoints it does not continue.
    """
    folder = run_dir() / "checkpoints"
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise OEUserError(f"ckpt_path={cfg.ckpt_path!r} does not exist; to resume, pass a "
                              f"checkpoint written by oe-train (RUN_DIR/checkpoints/last.ckpt).")
        refuse_beside_checkpoints(folder, cfg, Path(cfg.ckpt_path))
        return str(cfg.ckpt_path), read_checkpoint(cfg.ckpt_path).get("global_step", 0)
    for partial in folder.glob(".*.partial"):  # a write that was killed: never a checkpoint
        log.warning("removing %s, a checkpoint write that did not finish", partial)
        partial.unlink(missing_ok=True)
    last = newest_checkpoint(folder)
    if not (cfg.get("auto_resume") and last is not None):
        refuse_beside_checkpoints(folder, cfg, None)
        return None, 0
    last, checkpoint = readable_checkpoint(last)
    info = checkpoint.get("oe_lightning") or {}
    if info.get("identity") is not None:  # every key of the resolved config
        stored, now = upgraded_identity(info["identity"]), run_identity(cfg)
        changed = {k: (stored.get(k), now.get(k)) for k in sorted(set(stored) | set(now))
                   if k not in RESUMABLE and stored.get(k) != now.get(k)}
    else:  # a checkpoint from before identities: its key settings
        stored = info.get("run_config") or {}
        changed = {k: (stored.get(k), v) for k, v in key_config(cfg).items()
                   if k not in ("max_epochs",) and k in stored and stored[k] != v}
    if changed:
        diff = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise OEUserError(
            f"{run_dir()} already holds a checkpoint of a different run ({diff}), which "
            f"auto_resume would continue. Write this run elsewhere (hydra.run.dir=... or a new "
            f"hydra.sweep.dir), or remove {folder} to start over in this directory."
        )
    log.info("resuming from %s", last)
    return str(last), checkpoint.get("global_step", 0)
