"""What a run leaves in its folder after fitting: the evaluation's results.json (last), scores.npz,
the final checkpoint's deployed values, the printed table and the plots."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from oe_lightning.config import overrides, run_dir
from oe_lightning.dashboards import log_test_dashboard
from oe_lightning.data import OEDataModule
from oe_lightning.evaluation import OODEvaluation
from oe_lightning.module import OutlierExposureModule
from oe_lightning.report import print_results
from oe_lightning.results import (
    build_results,
    identity_fields,
    write_results,
    write_scores,
)

log = logging.getLogger("oe_lightning")


def deployed_values(results: dict[str, Any]) -> dict[str, Any]:
    """What oe-train stores in its final checkpoint for oe-predict and oe-export: the calibrated temperature
    and the operating point (threshold) chosen on validation data."""
    deployed = {"temperature": (results.get("calibration") or {}).get("temperature", 1.0)}
    operating = results.get("operating_point") or {}
    if operating.get("threshold") is not None:
        deployed["operating_point"] = operating
    return deployed


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
                write_plots(run_dir() / "plots", evaluation, datamodule, results)
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                log.warning("the evaluation plots could not be drawn (%s: %s); results.json is complete",
                            type(err).__name__, err)
    return results


def write_plots(folder: Path, evaluation: OODEvaluation, datamodule: OEDataModule,
                results: dict[str, Any]) -> list[Path]:
    """``score_histograms.png`` (ID vs each OOD set, the deployed threshold drawn) and a
    ``gallery_<set>.png`` per OOD set (its most and least OOD-looking images, with their scores; for text,
    ``gallery_<set>.md``, a table of the texts)."""

    from oe_lightning import plots

    scores = evaluation.primary_scores
    if len(scores) < 2:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    threshold = (results.get("operating_point") or {}).get("threshold")
    histograms = {name: c["histogram"] for name, c in evaluation.curves().items()}
    written = [plots.histogram_figure(histograms, threshold, str(results.get("detector")),
                                      folder / "score_histograms.png")]
    for name, values in scores.items():  # the family draws it: images as a picture, texts as a table
        dataset = datamodule.ood_sets.get(name)
        if dataset is not None and len(values):
            written.append(datamodule.family.gallery(name, dataset, values, threshold, folder))
    log.info("plots: %s", folder)
    return written
