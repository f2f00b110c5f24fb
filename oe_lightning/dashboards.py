"""Test-time dashboards for W&B: a results table, ROC curves and score histograms per OOD set.

Everything is computed by us (:meth:`oe_lightning.evaluation.OODEvaluation.curves`) and small: at most
201 ROC points and 50 histogram bins per set, never the raw score arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pytorch_lightning.loggers import Logger, WandbLogger

from oe_lightning.report import ood_rows

TABLE_KEY, ROC_KEY, HIST_KEY = "test/results_table", "test/roc", "test/score_hist"


def log_test_dashboard(loggers: list[Logger], results: dict[str, Any],
                       curves: Callable[[], dict[str, dict[str, Any]]]) -> None:
    """Log the results table, ROC curves and histograms to every W&B logger (rank 0 only); the
    curves are computed only if there is one."""
    wandb_loggers = [logger for logger in loggers if isinstance(logger, WandbLogger)]
    if wandb_loggers:
        computed = curves()
        for logger in wandb_loggers:
            _log_wandb(logger, results, computed)


def _log_wandb(logger: WandbLogger, results: dict[str, Any], curves: dict[str, dict[str, Any]]) -> None:
    import wandb

    keys = list(results["mean"])
    rows = [[name, *(metrics[k] for k in keys)] for name, metrics in ood_rows(results)]
    payload: dict[str, Any] = {TABLE_KEY: wandb.Table(columns=["ood_set", *keys], data=rows)}
    if curves:
        points = [[name, fpr, tpr] for name, c in curves.items()
                  for fpr, tpr in zip(c["roc"]["fpr"], c["roc"]["tpr"], strict=True)]
        roc = wandb.Table(columns=["ood_set", "fpr", "tpr"], data=points)
        payload[ROC_KEY] = wandb.plot.line(roc, "fpr", "tpr", stroke="ood_set",
                                           title="ROC per OOD set (OOD = positive)")
        for name, c in curves.items():
            hist = c["histogram"]
            edges = np.asarray(hist["edges"])
            payload[f"{HIST_KEY}/{name}/in"] = wandb.Histogram(np_histogram=(np.asarray(hist["in"]), edges))
            payload[f"{HIST_KEY}/{name}/out"] = wandb.Histogram(np_histogram=(np.asarray(hist["out"]), edges))
    logger.experiment.log(payload)
