"""What oe-train and oe-eval share: build the pieces from a composed config, fit, test, write the run dir.

Imported by the entry points only after Hydra has composed (and validated) the config, so a typo
in an override is reported before torch, Lightning and the loggers are imported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from oe_lightning.baseline import is_baseline
from oe_lightning.checkpoint_writing import add_to_checkpoint, with_atomic_checkpoints
from oe_lightning.checkpoints import checked_model_config, load_backbone_weights, read_checkpoint
from oe_lightning.config import flat_config
from oe_lightning.dashboards import log_test_dashboard
from oe_lightning.data import OEDataModule
from oe_lightning.deployment import Preprocessing
from oe_lightning.distributed import distributed_job
from oe_lightning.errors import NonFiniteLossError, OEUserError
from oe_lightning.evaluation import OODEvaluation
from oe_lightning.evaluation_settings import EvaluationSettings
from oe_lightning.loggers import build_loggers, continue_logs, finished_on_exit, instantiate_group
from oe_lightning.module import OutlierExposureModule
from oe_lightning.quiet import quiet_third_party
from oe_lightning.report import print_results
from oe_lightning.results import (
    RESUMABLE,
    build_results,
    identity_fields,
    identity_hash,
    key_config,
    read_complete,
    run_identity,
    write_results,
    write_scores,
)
from oe_lightning.run_folder import (
    newest_checkpoint,
    refuse_beside_checkpoints,
    refuse_foreign_results,
)
from oe_lightning.run_lock import run_dir_lock

log = logging.getLogger("oe_lightning")
quiet_third_party()


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint the run wrote (``last.ckpt``), if any; for a run resumed after its last epoch
    (nothing left to train), the ``last.ckpt`` it resumed from."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") if callback else ""
    if not path and isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
        path = str(Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
    return path if path and Path(path).exists() else None


def deployed_values(results: dict[str, Any]) -> dict[str, Any]:
    """What oe-train stores in its final checkpoint for oe-predict and oe-export: the calibrated temperature
    and the operating point (threshold) chosen on validation data."""
    deployed = {"temperature": (results.get("calibration") or {}).get("temperature", 1.0)}
    operating = results.get("operating_point") or {}
    if operating.get("threshold") is not None:
        deployed["operating_point"] = operating
    return deployed


def build_datamodule(cfg: DictConfig, with_oe: bool) -> OEDataModule:
    """The DataModule of ``cfg.data`` with the OE set (only if used) and the OOD suite."""
    return instantiate(cfg.data, oe=cfg.oe if with_oe else None, ood=cfg.get("ood"),
                       val_ood=cfg.get("val_ood"), _convert_="all")


def build_module(cfg: DictConfig) -> OutlierExposureModule:
    module = instantiate(cfg.module, backbone=cfg.model, oe_loss=cfg.loss.fn, score=cfg.score,
                         evaluation=evaluation_settings(cfg))
    module.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    module.run_config = key_config(cfg)
    module.identity = run_identity(cfg)
    names = OmegaConf.select(cfg, "data.class_names", default=None)
    module.class_names = [str(n) for n in names] if names else None
    # what oe-predict and oe-export rebuild the deployed classifier from (plain values)
    module.preprocessing = (Preprocessing.from_data_config(cfg.data).to_dict() if "image_shape" in cfg.data
                            else None)  # a data config of your own without image_shape: not deployable
    module.score_config = OmegaConf.to_container(cfg.score, resolve=True)
    return module


def completed_results(cfg: DictConfig) -> dict[str, Any] | None:
    """The run directory's complete ``results.json`` when ``skip_complete`` is on (resumable sweeps)."""
    results = read_complete(run_dir()) if cfg.get("skip_complete") else None
    if results is None:
        return None
    if "run_id" in results:  # the same resolved config (output-only keys aside)
        return results if results["run_id"] == identity_hash(run_identity(cfg)) else None
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
        stored, now = info["identity"], run_identity(cfg)
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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and write ``results.json``; returns the results dict. The run directory is locked
    first: a second oe-train writing it at the same time is refused before any work."""
    with run_dir_lock(run_dir()):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    refuse_foreign_results("train", run_dir())
    done = completed_results(cfg)
    if done is not None:
        log.info("skipping %s: its results.json is complete (skip_complete=true)", run_dir())
        print_results(done)
        return done
    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path, resumed_step = resume_checkpoint(cfg)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg, with_oe=not is_baseline(module.lambda_oe))
    check_objective(cfg.get("optimized_metric"), datamodule, module)
    check_accelerator(cfg)
    loggers = build_loggers(cfg.get("logger"))
    continue_logs(loggers, resumed_step)
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    plugins = with_atomic_checkpoints(list(instantiate(cfg.trainer.get("plugins") or [])))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=plugins)
    for logger in loggers:
        logger.log_hyperparams(flat_config(cfg))
    with distributed_job(), finished_on_exit(loggers):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except NonFiniteLossError as err:
            last = last_checkpoint(trainer)
            kept = (f"The last good checkpoint is {last}." if last
                    else "No epoch finished, so no checkpoint was written.")
            raise NonFiniteLossError(f"{err} {kept}") from err
        extra = {"val": validation_metrics(trainer, module), "run": run_info(trainer, datamodule)}
        evaluation = build_evaluation(cfg, module.backbone)
        checkpoint = last_checkpoint(trainer)

        def complete_checkpoint(results: dict[str, Any]) -> None:
            if checkpoint:  # what oe-predict and oe-export apply; a failed write (a full disk) leaves no results.json
                add_to_checkpoint(checkpoint, deployed_values(results))

        return test_and_write(trainer, evaluation, datamodule, cfg, started, checkpoint,
                              before_results=complete_checkpoint, **extra)


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without CUDA: say which trainer to use instead."""
    import torch

    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise OEUserError(
            f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu/ddp/slurm) needs a CUDA GPU, and "
            f"this machine has none. Use trainer=cpu, or trainer=ddp_sim for DDP on 2 CPU processes."
        )


def check_objective(metric: str | None, datamodule: OEDataModule, module: OutlierExposureModule) -> None:
    """Refuse, before training, a ``val.*`` objective that this run cannot produce."""
    if not metric or not metric.startswith("val."):
        return
    if datamodule.val_fraction <= 0:
        raise OEUserError(
            f"optimized_metric={metric} needs a validation split, but data.val_fraction=0. Set "
            f"data.val_fraction=0.1 (hparams_search=optuna_lambda does), or optimize mean.fpr95."
        )
    if metric in ("val.fpr95", "val.auroc") and is_baseline(module.lambda_oe) and datamodule.val_ood_factory is None:
        raise OEUserError(
            f"optimized_metric={metric} compares the ID validation split with held-out OE images, "
            f"and loss.lambda_oe=0 loads no OE data. Search λ over values > 0 (e.g. interval(0.01, 2)), "
            f"or give the validation an OOD set of its own (val_ood=...)."
        )


def validation_metrics(trainer: pl.Trainer, module: OutlierExposureModule) -> dict[str, float]:
    """The last epoch's ``val/*`` values (ID accuracy and loss, FPR95/AUROC vs held-out OE; these two
    in float64, as the module computed them)."""
    logged = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {**logged, **module.last_val_ood}


def run_info(trainer: pl.Trainer, datamodule: OEDataModule) -> dict[str, Any]:
    """How the run was spread: processes, and the samples each rank drew per epoch (sharding)."""
    return {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
            "train_samples_per_rank": datamodule.train_samples_per_rank,
            "global_step": trainer.global_step}


def evaluation_settings(cfg: DictConfig) -> EvaluationSettings:
    """The ``evaluation`` group as one checked settings object (conf/evaluation/)."""
    return EvaluationSettings.of(OmegaConf.to_container(cfg.evaluation, resolve=True) if cfg.get("evaluation")
                                 else None)


def build_evaluation(cfg: DictConfig, backbone: Any) -> OODEvaluation:
    """The evaluation of ``backbone``: the ``score`` config as the primary detector (named by its
    group choice, e.g. ``msp``), then every ``detector=[...]`` entry; metric settings from the
    ``evaluation`` group, shared by oe-train and oe-eval."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    primary = str(choices.get("score") or "score")
    detectors = {primary: instantiate(cfg.score)}
    for name, node in (cfg.get("detector") or {}).items():
        detectors.setdefault(str(name), instantiate(node))
    return OODEvaluation(backbone, detectors, primary=primary, settings=evaluation_settings(cfg),
                         seed=cfg.get("seed", 0))


def test_and_write(trainer: pl.Trainer, evaluation: OODEvaluation, datamodule: OEDataModule,
                   cfg: DictConfig, started: float, checkpoint: str | None,
                   trained_with: dict[str, Any] | None = None, trained_identity: dict[str, Any] | None = None,
                   before_results: Callable[[dict[str, Any]], None] | None = None, **extra: Any) -> dict[str, Any]:
    """Evaluate, then (on rank 0) run ``before_results`` (what must be written before the run counts as
    complete: the final checkpoint), write ``scores.npz`` and, last, ``results.json`` into the run directory,
    and print the table."""
    datamodule.fit_loader = bool(evaluation.fit_detectors)
    trainer.test(evaluation, datamodule=datamodule, verbose=False)
    sizes = datamodule.test_set_sizes()
    if evaluation.results.get("scored", sizes) != sizes:  # fast_dev_run, limit_test_batches
        extra["partial"] = True
        log.warning("only part of the test sets was scored (%s of %s): results.json is marked partial and "
                    "is neither skipped on re-runs nor tabulated", evaluation.results["scored"], sizes)
    results = build_results(evaluation.results, cfg, trained_with, **identity_fields(cfg, trained_identity),
                            test_set_sizes=sizes, overrides=overrides(),
                            checkpoint=checkpoint, tags=list(cfg.get("tags") or []), **extra,
                            wall_time_s=round(time.perf_counter() - started, 2))
    if trainer.is_global_zero:
        log_test_dashboard(trainer.loggers, results, evaluation.curves)
        if before_results is not None:
            before_results(results)
        write_scores(evaluation.sample_scores, run_dir())
        path = write_results(results, run_dir())
        print_results(results)
        log.info("results: %s", path)
        if evaluation.settings.plots:
            try:  # pictures come after the results are safe: a plotting failure never loses them
                write_plots(run_dir() / "plots", evaluation, datamodule, results, cfg)
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                log.warning("the evaluation plots could not be drawn (%s: %s); results.json is complete",
                            type(err).__name__, err)
    return results


def write_plots(folder: Path, evaluation: OODEvaluation, datamodule: OEDataModule, results: dict[str, Any],
                cfg: DictConfig) -> list[Path]:
    """``score_histograms.png`` (ID vs each OOD set, the deployed threshold drawn) and a
    ``gallery_<set>.png`` per OOD set (its most and least OOD-looking images, with their scores)."""
    import torch

    from oe_lightning import plots

    scores = evaluation.primary_scores
    if len(scores) < 2:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    threshold = (results.get("operating_point") or {}).get("threshold")
    histograms = {name: c["histogram"] for name, c in evaluation.curves().items()}
    written = [plots.histogram_figure(histograms, threshold, str(results.get("detector")),
                                      folder / "score_histograms.png")]
    preprocessing = Preprocessing.from_data_config(cfg.data)  # mean and std (none: 0 and 1)
    for name, values in scores.items():
        dataset = datamodule.ood_sets.get(name)
        if dataset is None or not len(values):
            continue
        top, bottom = plots.extremes(values)
        items = [dataset[i] for i in top + bottom]
        images = torch.stack([item[0] if isinstance(item, tuple | list) else item for item in items]).float()
        images = plots.unnormalize(images, preprocessing.mean, preprocessing.std)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        written.append(plots.gallery_figure(name, images, [float(values[i]) for i in top + bottom], threshold,
                                            folder / f"gallery_{safe}.png"))
    log.info("plots: %s", folder)
    return written


def model_config_for(cfg: DictConfig, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The backbone config stored in an oe-train checkpoint (checked to be plain data naming an
    allowed factory), else ``cfg.model``."""
    stored = (checkpoint.get("oe_lightning") or {}).get("model_config")
    also_allowed = [OmegaConf.select(cfg, "model._target_", default=""), *(cfg.get("model_allowlist") or [])]
    model_cfg = checked_model_config(stored, also_allowed, str(cfg.ckpt_path)) if stored else \
        OmegaConf.to_container(cfg.model, resolve=True)
    trained_classes = model_cfg.get("num_classes")
    if trained_classes is not None and trained_classes != cfg.data.num_classes:
        raise OEUserError(
            f"Checkpoint {cfg.ckpt_path!r} was trained with {trained_classes} classes but "
            f"data={cfg.data.name} has {cfg.data.num_classes}. Evaluate it with the data it was "
            f"trained on (data=...), or pass a checkpoint trained on {cfg.data.name}."
        )
    return model_cfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on the ID test set and the OOD suite; returns the results dict."""
    started = time.perf_counter()
    refuse_foreign_results("eval", run_dir())
    pl.seed_everything(cfg.seed, workers=True)
    checkpoint = read_checkpoint(cfg.ckpt_path)
    backbone = instantiate(model_config_for(cfg, checkpoint))
    load_backbone_weights(backbone, cfg.ckpt_path, cfg.data.num_classes, checkpoint)
    evaluation = build_evaluation(cfg, backbone)
    datamodule = build_datamodule(cfg, with_oe=cfg.get("oe") is not None)  # oe=: held-out OE validates
    check_accelerator(cfg)
    loggers = build_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False)
    info = checkpoint.get("oe_lightning") or {}
    with distributed_job(), finished_on_exit(loggers):
        return test_and_write(trainer, evaluation, datamodule, cfg, started, str(cfg.ckpt_path),
                              info.get("run_config"), info.get("identity"))


def _classifier(cfg: DictConfig) -> Any:
    """The deployed classifier of ``cfg.ckpt_path`` (threshold and allow-list from the config)."""
    from oe_lightning.deployment import OODClassifier

    return OODClassifier.from_checkpoint(cfg.ckpt_path, device=str(cfg.get("device", "cpu")),
                                         threshold=cfg.get("threshold"),
                                         model_allowlist=list(cfg.get("model_allowlist") or []))


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image of ``cfg.input``; write predictions.csv/.jsonl, print a summary, return its counts."""
    from oe_lightning.deployment import image_paths
    from oe_lightning.predictions import prediction_paths, print_summary, summary, write_predictions
    from oe_lightning.validate import check_output_files

    inputs = cfg.input
    inputs = [str(inputs)] if isinstance(inputs, str) else [str(i) for i in inputs]
    check_output_files("output", cfg.output, prediction_paths(cfg.output),
                       lambda: [Path(cfg.ckpt_path).expanduser(), *image_paths(inputs)], bool(cfg.get("overwrite")))
    classifier = _classifier(cfg)
    rows = classifier.predict(inputs, batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=True)
    files = write_predictions(rows, cfg.output)
    print_summary(rows, classifier.threshold, files)
    return {**summary(rows), "files": [str(f) for f in files]}


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the deployed classifier as ``cfg.format`` with its JSON sidecar."""
    from oe_lightning.exporting import export_classifier, export_paths
    from oe_lightning.validate import check_output_files

    check_output_files("output", cfg.output, export_paths(cfg.output, cfg.format),
                       lambda: [Path(cfg.ckpt_path).expanduser()], bool(cfg.get("overwrite")))
    model_path, json_path = export_classifier(_classifier(cfg), cfg.format, cfg.output, source=str(cfg.ckpt_path))
    log.info("exported %s and %s", model_path, json_path)
    print(f"written: {model_path}\nwritten: {json_path}")
    return {"files": [str(model_path), str(json_path)]}
