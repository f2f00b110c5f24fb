"""The results file of a run: ``results.json`` in the run directory."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from oe_lightning.baseline import is_baseline, uses_oe_key
from oe_lightning.compat import unresolved_value
from oe_lightning.errors import OEUserError

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1


def group_choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra run (``oe=tiny_images`` -> ``tiny_images``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    value = HydraConfig.get().runtime.choices.get(group)
    return None if value in (None, "null") else str(value)


# Keys that change where and how a run reports, never its numbers: not part of a run's identity.
OUTPUT_ONLY = ("paths", "logger", "hydra", "print_config", "tags", "auto_resume", "skip_complete",
               "optimized_metric", "trainer.default_root_dir", "trainer.enable_progress_bar",
               "trainer.enable_model_summary", "trainer.log_every_n_steps", "data.num_workers",
               "data.pin_memory",
               # a recipe that acts only through the key that uses it (data.batch_augment, resolved)
               "data.device_augment")
OUTPUT_CALLBACKS = ("ModelCheckpoint", "RichModelSummary", "ModelSummary", "RichProgressBar", "TQDMProgressBar",
                    "LearningRateMonitor", "StepCheckpoint", "PreemptionCheckpoint")
# ...and what differs between the seeds (and their checkpoints) of one experiment: not part of its group.
PER_SEED = ("seed", "module.pretrained", "ckpt_path", "trained.seed", "trained.module.pretrained")
RESUMABLE = ("trainer.max_epochs",)  # what may change when a run is continued


def _output_only(path: str, node: Any) -> bool:
    if any(path == o or path.startswith(o + ".") for o in OUTPUT_ONLY):
        return True
    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
    return path.startswith("callbacks.") and path.count(".") == 1 and \
        str(target).rsplit(".", 1)[-1] in OUTPUT_CALLBACKS


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> resolved value; a value that cannot be resolved here (e.g. ``???`` or a Hydra
    runtime interpolation outside a job) is kept as written."""
    if isinstance(node, DictConfig):
        out: dict[str, Any] = {}
        for key in node:
            path = f"{prefix}{key}"
            try:
                child = node[key]
            except Exception:  # noqa: BLE001 - unresolvable here: keep the text
                child = unresolved_value(node, key)
            if not _output_only(path, child):
                out.update(_leaves(child, path + "."))
        return out if out or not prefix else {prefix[:-1]: {}}
    if isinstance(node, ListConfig):
        try:
            return {prefix[:-1]: OmegaConf.to_container(node, resolve=True)}
        except Exception:  # noqa: BLE001
            return {prefix[:-1]: OmegaConf.to_container(node, resolve=False)}
    return {prefix[:-1]: node}


def run_identity(cfg: DictConfig, trained: dict[str, Any] | None = None) -> dict[str, Any]:
    """What identifies a run: its resolved config, flattened to dotted keys, minus output-only keys
    (:data:`OUTPUT_ONLY`, reporting callbacks). oe-train's ``ckpt_path`` (where to resume) is left
    out; oe-eval's is kept (which model), with the identity of the run that trained it (``trained``)
    under ``trained.``."""
    identity = _leaves(cfg)
    if identity.get("task_name") == "train":
        identity.pop("ckpt_path", None)
    identity.update({f"trained.{k}": v for k, v in (trained or {}).items()})
    return dict(sorted(identity.items()))


# keys of earlier config layouts: the module mirrored the evaluation settings; the primary score was a
# config of its own (score._target_, score.temperature) where it is now a name of conf/detector/
RETIRED = ("module.recall", "module.fpr_rule", "module.positive", "module.protocol", "module.num_to_avg")


def upgraded_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """An identity recorded under an earlier config layout, as the current layout records the same run
    (so a run from before the change resumes, is skipped when complete and groups with its peers).
    A score config becomes the name of the detector file with the same settings; if none has them,
    the identity is left as it is (then it matches no current run)."""
    from oe_lightning.detector_registry import group_config, names

    for prefix in ("", "trained."):
        old = {k.removeprefix(f"{prefix}score."): v for k, v in identity.items() if k.startswith(f"{prefix}score.")}
        if not old and not any(f"{prefix}{k}" in identity for k in RETIRED):
            continue
        identity = {k: v for k, v in identity.items() if k.removeprefix(prefix) not in RETIRED}
        if old:
            match = next((n for n in names() if group_config(n) == old), None)
            if match is None:
                continue
            identity = {k: v for k, v in identity.items() if not k.startswith(f"{prefix}score.")}
            identity[f"{prefix}score"] = match
    return dict(sorted(identity.items()))


def identity_hash(identity: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """A short, stable hash of an identity (``ignore``: keys left out, e.g. :data:`PER_SEED`)."""
    import hashlib

    kept = {k: v for k, v in identity.items() if k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def group_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity shared by every seed of an experiment: :data:`PER_SEED` left out, whether a
    checkpoint was fine-tuned kept (``tuned``); for a λ = 0 baseline, the OE loss and data it never
    uses are left out too."""
    kept = {k: v for k, v in identity.items() if k not in PER_SEED}
    for prefix in ("", "trained."):
        if f"{prefix}loss.lambda_oe" in kept and is_baseline(kept[f"{prefix}loss.lambda_oe"]):
            kept = {k: v for k, v in kept.items() if k == f"{prefix}loss.lambda_oe"
                    or not (k.startswith(prefix) and uses_oe_key(k.removeprefix(prefix)))}
    kept["tuned"] = bool(identity.get("module.pretrained") or identity.get("trained.module.pretrained"))
    return kept


def identity_fields(cfg: DictConfig, trained: dict[str, Any] | None = None) -> dict[str, Any]:
    """``identity``, ``run_id`` and ``group_id`` for results.json."""
    identity = run_identity(cfg, upgraded_identity(trained) if trained is not None else None)
    return {"identity": identity, "run_id": identity_hash(identity),
            "group_id": identity_hash(group_identity(identity))}


def primary_class_name(cfg: DictConfig) -> str | None:
    """The primary detector's class name (``MaxSoftmax``, ``Energy``, ``KNN``): how tables name scores."""
    from oe_lightning.detector_registry import primary_config

    target = str(primary_config(cfg).get("_target_") or "")
    return target.rsplit(".", 1)[-1] or None


def key_config(cfg: DictConfig) -> dict[str, Any]:
    """The config values a results table groups by."""
    def get(path: str, default: Any = None) -> Any:
        value = OmegaConf.select(cfg, path, default=default, throw_on_missing=False)
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value

    fn = get("loss.fn._target_", "")
    return {
        "data": get("data.name"),
        "oe": group_choice("oe"),
        "ood": group_choice("ood"),
        "model": get("model._target_"),
        "loss": fn.rsplit(".", 1)[-1] if fn else None,
        **({"mining": mining.rsplit(".", 1)[-1]} if (mining := get("loss.mining._target_")) else {}),
        "lambda_oe": get("loss.lambda_oe"),
        "score": primary_class_name(cfg),
        "seed": get("seed"),
        "max_epochs": get("trainer.max_epochs"),
        "lr": get("module.optimizer.lr"),
        "pretrained": get("module.pretrained"),
        "fpr_rule": get("evaluation.fpr_rule"),
        "recall": get("evaluation.recall"),
        "protocol": get("evaluation.protocol"),
        "positive": get("evaluation.positive"),
        "val_size": get("data.val_size"),  # calibration=paper runs hold out a fixed count
    }


def build_results(test_results: dict[str, Any], cfg: DictConfig,
                  trained_with: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Everything a table needs about one run: metrics, sizes, key config values, overrides.

    ``trained_with`` (the key config stored in a checkpoint) fills what an evaluation config
    does not know, such as the loss and λ the checkpoint was trained with.
    """
    config = {k: v for k, v in (trained_with or {}).items()}
    config.update({k: v for k, v in key_config(cfg).items() if v is not None})
    return {"schema": SCHEMA_VERSION, "task": cfg.get("task_name"), **test_results,
            "config": config, **extra}


def current_umask() -> int:
    """This process's umask, read without changing it (Linux), else the usual 0o022."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0o022


@contextmanager
def replacing_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A new temporary file beside ``path`` for the block to write by name, that replaces ``path`` when the
    block ends: a reader never sees a partial file and a kill leaves the previous one. The temporary file is
    created exclusively under a fresh random name (``mkstemp``: ``O_EXCL``, never through a link or over a
    file planted there) with the mode ``open`` would give (0o666 minus the umask); it is removed if the
    block fails. A link at ``path`` itself is replaced, its target left alone."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


@contextmanager
def replacing(path: str | Path, mode: str = "w", suffix: str = ".tmp", **kwargs: Any) -> Iterator[IO[Any]]:
    """:func:`replacing_path`'s temporary file, opened for writing (``mode``, ``open``'s ``kwargs``); it is
    closed before it replaces ``path``."""
    with replacing_path(path, suffix) as tmp, open(tmp, mode, **kwargs) as file:
        yield file


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, through an exclusively created temporary file beside it
    (:func:`replacing`)."""
    with replacing(path, "w", encoding="utf-8") as file:
        file.write(text)
    return Path(path)


def write_results(results: dict[str, Any], run_dir: str | Path) -> Path:
    """Write ``results.json`` atomically (a partial file never looks complete)."""
    return write_text_atomic(Path(run_dir) / RESULTS_FILE,
                             json.dumps(results, indent=2, sort_keys=False, allow_nan=True) + "\n")


SCORES_FILE = "scores.npz"


def write_scores(scores: dict[str, Any], run_dir: str | Path) -> Path:
    """Per-sample scores (``"<set>/<detector>"``), ID labels and predictions (``"in/labels"``,
    ``"in/predictions"``) as ``scores.npz`` in dataset order, written atomically; read back with
    ``numpy.load(path)`` (no pickle) to recompute any metric without the model."""
    import numpy

    path = Path(run_dir) / SCORES_FILE
    with replacing(path, "wb") as f:
        numpy.savez_compressed(f, **{k: numpy.asarray(v.cpu() if hasattr(v, "cpu") else v)
                                     for k, v in scores.items()})
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    """The parsed ``results.json`` (file or run directory); raises if it is missing or not JSON."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    return json.loads(path.read_text())


def read_results_or_none(path: str | Path) -> Any:
    """The parsed ``results.json`` (file or run directory), or None if missing or damaged."""
    path = Path(path)
    path = path / RESULTS_FILE if path.is_dir() else path
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device: opening it could block forever
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or damaged by a crash
        return None


def read_complete(path: str | Path) -> dict[str, Any] | None:
    """A ``results.json`` (file or run directory) if it exists, parses and :func:`is_complete`."""
    results = read_results_or_none(path)
    return results if is_complete(results) else None


def is_complete(results: dict[str, Any]) -> bool:
    """A results dict with ID accuracy and a finite mean for every metric, over whole test sets
    (not ``partial``: fast_dev_run or limit_test_batches scored only some batches)."""
    if not isinstance(results, dict) or results.get("partial"):
        return False
    mean = results.get("mean")
    return isinstance(mean, dict) and bool(mean) and isinstance(results.get("config"), dict) \
        and isinstance(results.get("ood"), dict) and isinstance(results.get("id_accuracy"), int | float) \
        and all(isinstance(v, int | float) and math.isfinite(v) for v in mean.values())


def objective(results: dict[str, Any], metric: str | None) -> float | None:
    """The value at a dotted path of a results dict (``mean.fpr95``, ``val.fpr95``), for sweepers.

    A missing path raises a user error naming the keys there are.
    """
    if not metric:
        return None
    node: Any = results
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            have = sorted(node) if isinstance(node, dict) else []
            raise OEUserError(
                f"optimized_metric={metric!r} is not in results.json: at {part!r} the keys are "
                f"{have}. Use e.g. optimized_metric=val.fpr95 (validation, held-out OE) or mean.fpr95."
            )
        node = node[part]
    return float(node)
