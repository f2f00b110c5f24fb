"""Metrics again from a run's saved per-sample scores (``scores.npz``), without the model: another
FPR rule, recall, protocol or positive class, bootstrap confidence intervals, paired comparisons."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from oe_lightning.evaluation_settings import check_settings
from oe_lightning.metrics import ood_metrics, protocol_metrics, sort_scores
from oe_lightning.ood_groups import summarised
from oe_lightning.results import SCORES_FILE

SETTINGS = ("fpr_rule", "recall", "protocol", "num_to_avg", "positive")


def load_scores(run_dir: str | Path) -> dict[str, torch.Tensor] | None:
    """The run's ``scores.npz`` as float64 tensors (labels as int64), or None without one."""
    import numpy

    path = Path(run_dir) / SCORES_FILE
    if not path.is_file():
        return None
    with numpy.load(path, allow_pickle=False) as saved:
        return {k: torch.from_numpy(saved[k]) for k in saved.files}


def parse_settings(text: str) -> dict[str, Any]:
    """``"fpr_rule=nearest,protocol=paper"`` -> checked settings (a bad key or value: ValueError)."""
    out: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if key not in SETTINGS:
            raise ValueError(f"--rescore got {key!r}; it takes {', '.join(SETTINGS)} (e.g. fpr_rule=nearest).")
        out[key] = float(value) if key == "recall" else int(value) if key == "num_to_avg" else value
    check_settings("--rescore ", **out)
    return out


def rescore(results: dict[str, Any], scores: dict[str, torch.Tensor], **settings: Any) -> dict[str, Any]:
    """``results`` with every detector's per-set metrics and means recomputed from ``scores`` under
    ``settings`` (missing ones: as the run was evaluated), recorded in ``results["config"]`` and
    ``results["rescored"]``."""
    config = dict(results.get("config") or {})
    s = {k: settings.get(k, config.get(k, default)) for k, default in
         (("fpr_rule", "first"), ("recall", 0.95), ("protocol", "full"), ("num_to_avg", 10), ("positive", "out"))}
    detectors = {}
    for name, old in (results.get("detectors") or {}).items():
        per_set = {ood: protocol_metrics(scores[f"in/{name}"], scores[f"{ood}/{name}"], s["protocol"], s["num_to_avg"],
                                         0, s["recall"], s["fpr_rule"], s["positive"]) for ood in old["ood"]}
        detectors[name] = {**old, "ood": per_set, **summarised(per_set, results.get("ood_groups") or {})}
    out = {**results, "detectors": detectors, "config": {**config, **s}, "rescored": s}
    primary = results.get("detector")
    if primary in detectors:
        out.update({k: detectors[primary][k] for k in ("ood", "mean", "groups") if k in detectors[primary]})
    return out


def bootstrap_mean_ci(scores: dict[str, torch.Tensor], sets: list[str], detector: str, metric: str = "fpr95",
                      resamples: int = 200, fpr_rule: str = "first", level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric's mean over OOD sets: each resample draws the ID
    scores and every set's OOD scores with replacement from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    s_in = scores[f"in/{detector}"]
    values = []
    for _ in range(resamples):
        a = sort_scores(s_in[torch.randint(len(s_in), (len(s_in),), generator=g)], "ID scores")  # once per resample
        per_set = []
        for name in sets:
            s_out = scores[f"{name}/{detector}"]
            per_set.append(ood_metrics(a, s_out[torch.randint(len(s_out), (len(s_out),), generator=g)],
                                       fpr_rule=fpr_rule)[metric])
        values.append(sum(per_set) / len(per_set))
    return _percentile_interval(values, level)


def _percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[int(math.floor((1 - level) / 2 * (n - 1)))], ordered[int(math.ceil((1 + level) / 2 * (n - 1)))]


def paired_difference(a: dict[Any, float], b: dict[Any, float]) -> dict[str, float] | None:
    """Seed-paired difference b - a over the seeds both have: mean, sample std, n and the paired t
    statistic (mean / (std / sqrt(n))); None with fewer than 2 common seeds."""
    common = [k for k in a if k in b]
    if len(common) < 2:
        return None
    diffs = torch.tensor([b[k] - a[k] for k in common], dtype=torch.float64)
    mean, std = float(diffs.mean()), float(diffs.std())
    return {"mean": mean, "std": std, "n": len(common), "t": mean / (std / math.sqrt(len(common))) if std else math.inf}
