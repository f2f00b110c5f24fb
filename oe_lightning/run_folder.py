"""A run folder's policy: what a command may write where, decided before any work.

The one owner of "whose folder is this": oe-eval never writes over a training run's results, oe-train
never over an evaluation's, and a run never trains beside checkpoints it does not continue (Lightning
would write ``last-v1.ckpt``). Light to import (no torch): the Hydra callback asks it before Hydra
writes anything into a single run's folder; the runner asks it again for in-process use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from oe_lightning.errors import OEUserError
from oe_lightning.results import RESULTS_FILE, read_results_or_none

STEP_CHECKPOINT = "step.ckpt"
PREEMPTION_CHECKPOINT = "preempted.ckpt"
CHECKPOINTS = "checkpoints"


def refuse_foreign_results(task: str, folder: Path) -> None:
    """Refuse to write ``results.json`` and ``scores.npz`` over another command's: oe-eval into a training
    run's directory (its results.json says ``"task": "train"``, or it holds checkpoints), oe-train into an
    evaluation's (``"task": "eval"``)."""
    results = read_results_or_none(folder)
    written_by = results.get("task") if isinstance(results, dict) else None
    if task == "eval" and (checkpoint_names(folder / "checkpoints")
                           or (folder / RESULTS_FILE).exists() and written_by != "eval"):
        raise OEUserError(
            f"hydra.run.dir={str(folder)!r} holds a training run's results (results.json, scores.npz or "
            f"checkpoints/), which oe-eval would replace. Nothing was run. Choose another hydra.run.dir=... for "
            f"the evaluation (or leave it out: each oe-eval writes a new folder under outputs/eval/runs/).")
    if task == "train" and written_by == "eval":
        raise OEUserError(
            f"hydra.run.dir={str(folder)!r} holds the results of an evaluation (oe-eval's results.json), which "
            f"training would replace. Nothing was run. Choose another hydra.run.dir=... for the training run.")


def newest_checkpoint(folder: Path) -> Path | None:
    """The newest of a run's resumable checkpoints: ``last.ckpt`` (end of an epoch), ``step.ckpt``
    (every N steps) and ``preempted.ckpt`` (SIGTERM/SIGUSR1); None if there is none."""
    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # a dangling last.ckpt link: oldest, still tried (and reported) if alone
            return float("-inf")

    found = [folder / name for name in ("last.ckpt", STEP_CHECKPOINT, PREEMPTION_CHECKPOINT)
             if (folder / name).exists() or (folder / name).is_symlink()]
    return max(found, key=mtime) if found else None


def checkpoint_names(folder: Path) -> list[str]:
    """The ``*.ckpt`` entries of ``folder`` (dangling links included); none if it does not exist."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(".ckpt"))
    except OSError:
        return []


def refuse_beside_checkpoints(folder: Path, cfg: DictConfig, source: Path | None) -> None:
    """Refuse to train a run that does not continue from ``folder``'s own checkpoints into a ``folder``
    that holds some: Lightning would keep them and name the new ones ``last-v1.ckpt``,
    ``epoch000-v1.ckpt``, so ``last.ckpt`` would still be the old model while results.json describes
    the new one. ``source``: the checkpoint resumed (``ckpt_path``), None for a fresh start."""
    names = checkpoint_names(folder)
    if not names or source is not None and any(
            _same_folder(parent, folder) for parent in (source.absolute().parent, source.resolve().parent)):
        return
    held = f"{folder} already holds checkpoints ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
    elsewhere = "write this run elsewhere with hydra.run.dir=... (a new folder)"
    if source is not None:
        raise OEUserError(f"{held}, and resuming ckpt_path={source}, a checkpoint from another folder, would write "
                          f"this run's checkpoints beside them under other names. Nothing was run. To resume it, "
                          f"{elsewhere}.")
    if not cfg.get("auto_resume"):
        raise OEUserError(f"{held} of an earlier run, and with auto_resume off this command would train a new model "
                          f"beside them: the old model would stay in last.ckpt and the new one be written under other "
                          f"names. Nothing was run. Continue that run with auto_resume=true (the default), or "
                          f"{elsewhere}.")
    raise OEUserError(f"{held}, none of which continues a run (last.ckpt, {STEP_CHECKPOINT}, "
                      f"{PREEMPTION_CHECKPOINT}), and a new run would be written beside them under other names. "
                      f"Nothing was run. {elsewhere[0].upper() + elsewhere[1:]}, or remove {folder} to start over "
                      f"in this directory.")


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def check_run_folder(cfg: DictConfig | Any, task: str, folder: Path) -> None:
    """Every refusal this module owns, for ``task`` (``train`` / ``eval``) writing into ``folder``."""
    if task not in ("train", "eval"):
        return
    refuse_foreign_results(task, folder)
    if task != "train":
        return
    checkpoints = folder / CHECKPOINTS
    if cfg.get("ckpt_path"):
        if Path(cfg.ckpt_path).is_file():
            refuse_beside_checkpoints(checkpoints, cfg, Path(cfg.ckpt_path))
    elif not (cfg.get("auto_resume") and newest_checkpoint(checkpoints) is not None):
        refuse_beside_checkpoints(checkpoints, cfg, None)
