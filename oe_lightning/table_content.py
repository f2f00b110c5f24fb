"""What each oe-table table holds, as ``(title, header, rows)`` of text cells: the overview, baseline vs OE
beside the paper's published numbers, detectors, calibration, seed-paired differences and bootstrap
intervals. Values are percentages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oe_lightning.baseline import is_baseline
from oe_lightning.openood_leaderboard import METHODS, SUITES, leaderboard_row
from oe_lightning.paper_results import (
    CALIBRATION,
    ENERGY_MEAN_FPR95,
    ENERGY_SETS,
    MEAN_DIGITS,
    MEAN_SETS,
    MEANS,
    PAPER_FPR_RULE,
    PER_SET,
)
from oe_lightning.rescore import bootstrap_mean_ci, load_scores, paired_difference, rescore
from oe_lightning.run_groups import (
    PAPER_LOSS,
    Group,
    _mean_std,
    baseline_for,
    fpr_names,
    label,
    metrics_of,
)

PAPER_SCORE = "MaxSoftmax"


def paper_numbers(group: Group, ood_set: str | None, metric: str) -> float | None:
    """The paper's value for this group's dataset and method (MSP, the paper's loss only), where
    ours is comparable: FPR95 only when read with the paper's rule, the mean only over its sets."""
    if group.config.get("loss") == "EnergyMargin" and not is_baseline(group.lambda_oe):
        return energy_paper_number(group, ood_set, metric)
    if group.config.get("score") != PAPER_SCORE:
        return None
    if group.method != "baseline" and group.config.get("loss") != PAPER_LOSS:
        return None
    if group.config.get("positive", "out") != "out":
        return None
    if metric.startswith("fpr") and group.config.get("fpr_rule") != PAPER_FPR_RULE:
        return None
    if ood_set is None and tuple(group.ood_sets()) != MEAN_SETS.get(group.data):
        return None
    if ood_set is None:
        return MEANS.get(group.data, {}).get(group.method, {}).get(metric)
    return PER_SET.get(group.data, {}).get(group.method, {}).get(ood_set, {}).get(metric)


def energy_paper_number(group: Group, ood_set: str | None, metric: str) -> float | None:
    """The energy paper's mean FPR95 (its only published number), for an energy fine-tune scored by
    energy, read as that paper does: ID positive, the nearest rule, the mean over its 6 sets."""
    comparable = (ood_set is None and metric == "fpr95" and group.method == "oe_tune"
                  and group.config.get("score") == "Energy" and group.config.get("positive") == "in"
                  and group.config.get("fpr_rule") == PAPER_FPR_RULE and tuple(group.ood_sets()) == ENERGY_SETS)
    return ENERGY_MEAN_FPR95.get(group.data) if comparable else None


# ---- the comparison table ------------------------------------------------------------------
def fmt(stat: tuple[float, float] | float | None, seeds: int = 1) -> str:
    """``mean ± std`` (std only over several seeds) with 2 decimals; empty for no value."""
    if stat is None:
        return ""
    if isinstance(stat, tuple):
        mean, std = stat
        return f"{mean:.2f} ± {std:.2f}" if seeds > 1 else f"{mean:.2f}"
    return f"{stat:.2f}"


def fmt_paper(value: float | None, digits: int) -> str:
    """A published number with the paper's ``digits`` decimals; empty where it has none."""
    return "" if value is None else f"{value:.{digits}f}"


def comparison(baseline: Group, oe: Group) -> tuple[list[str], list[list[str]]]:
    """Header and rows (OOD sets, then mean) of baseline vs OE, with the paper's numbers if any."""
    rows_sets: list[str | None] = [*[s for s in oe.ood_sets()], None]
    metrics = metrics_of([baseline, oe])
    with_paper = any(paper_numbers(g, s, m) is not None for g in (baseline, oe)
                     for s in rows_sets for m in metrics)
    header = ["OOD set"]
    for m in metrics:
        header += [f"{label(m)} base", f"{label(m)} OE"]
        if with_paper:
            header += [f"{label(m)} paper base", f"{label(m)} paper OE", f"{label(m)} Δ OE"]
    rows = []
    for s in rows_sets:
        row = [s or "mean"]
        for m in metrics:
            ours_base, ours_oe = baseline.stat(s, m), oe.stat(s, m)
            row += [fmt(ours_base, len(baseline.runs)), fmt(ours_oe, len(oe.runs))]
            if with_paper:
                p_base, p_oe = paper_numbers(baseline, s, m), paper_numbers(oe, s, m)
                delta = ours_oe[0] - p_oe if ours_oe is not None and p_oe is not None else None
                digits = MEAN_DIGITS.get(oe.data, 2) if s is None else 1  # as printed (Table 7's means: 2)
                row += [fmt_paper(p_base, digits), fmt_paper(p_oe, digits),
                        "" if delta is None else f"{delta:+.2f}"]
        rows.append(row)
    return header, rows


def overview(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    """One row per group: data, label, seeds, mean FPR95 / AUROC / AUPR, ID accuracy."""
    metrics = metrics_of(groups)
    header = ["data", "method", "seeds", *[f"mean {label(m)}" for m in metrics], "ID acc ↑"]
    rows = [[g.data, g.label, str(len(g.runs)), *[fmt(g.stat(None, m), len(g.runs)) for m in metrics],
             fmt(g.id_accuracy(), len(g.runs))] for g in groups]
    return header, rows


def comparisons(groups: Sequence[Group]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` for every OE group that has a baseline."""
    out = []
    for g in groups:
        base = baseline_for(g, groups) if g.method != "baseline" else None
        if base is not None:
            seeds = f"{len(g.runs)} seed{'s' if len(g.runs) > 1 else ''}"
            notes = [f"FPR95 read with rule {r!r}, not compared with the paper's {PAPER_FPR_RULE!r}"
                     for r in {x.config.get("fpr_rule") for x in (base, g)} - {PAPER_FPR_RULE}
                     if g.data in MEANS]
            if g.data in MEAN_SETS and tuple(g.ood_sets()) != MEAN_SETS[g.data]:
                notes.append("mean over other sets than the paper's: not compared")
            title = f"{g.data}: baseline vs {g.label}, {seeds}" + "".join(f" ({n})" for n in notes)
            out.append((title, *comparison(base, g)))
    return out


def detector_stat(group: Group, detector: str, metric: str, ood_group: str | None = None) -> tuple[float, float] | None:
    """Mean ± std over seeds (in %) of a detector's mean over the OOD sets (or over one group's sets, e.g.
    OpenOOD's ``near``); None unless every seed has it."""
    def value(run: dict[str, Any]) -> float | None:
        results = (run.get("detectors") or {}).get(detector) or {}
        means = results.get("mean") if ood_group is None else (results.get("groups") or {}).get(ood_group)
        return (means or {}).get(metric)

    values = [100 * v for r in group.runs if (v := value(r)) is not None]
    return _mean_std(values) if len(values) == len(group.runs) else None


def detector_matrix(groups: Sequence[Group], metric: str = "fpr95") -> list[tuple[str, list[str], list[list[str]]]]:
    """Per D_in whose runs scored several detectors (or grouped their OOD sets): training method (rows) ×
    detector (columns), each cell the mean over the OOD sets, or one column per detector and group (near,
    far): the layout of OOD leaderboards."""
    out = []
    for data in dict.fromkeys(g.data for g in groups):
        mine = [g for g in groups if g.data == data]
        detectors = list(dict.fromkeys(d for g in mine for r in g.runs for d in (r.get("detectors") or {})))
        ood_groups = list(dict.fromkeys(name for g in mine for r in g.runs for name in (r.get("ood_groups") or {})))
        if len(detectors) < 2 and not ood_groups:
            continue
        columns = [(d, o) for d in detectors for o in ood_groups] if ood_groups else [(d, None) for d in detectors]
        rows = [[g.label, *[fmt(detector_stat(g, d, metric, o), len(g.runs)) for d, o in columns]] for g in mine]
        over = "each group's OOD sets" if ood_groups else "the OOD sets"
        out.append((f"{data}: training method × detector, mean {label(metric)} over {over}",
                    ["method", *[d if o is None else f"{d} {o}" for d, o in columns]], rows))
    return out


def leaderboard_comparison(groups: Sequence[Group]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Runs on an OpenOOD v1.5 suite scored by MSP beside its published leaderboard (near / far AUROC, ID
    accuracy), with our difference: the baseline, OE (the paper's loss) and MixOE, where it has the row."""
    rows_by_data: dict[str, list[list[str]]] = {}
    for g in groups:
        method = "baseline" if g.method == "baseline" else METHODS.get(str(g.config.get("loss")))
        if g.config.get("ood") != SUITES.get(g.data) or g.config.get("score") != PAPER_SCORE or method is None:
            continue
        published = leaderboard_row(g.data, method)
        near, far = g.stat(None, "auroc", "near"), g.stat(None, "auroc", "far")
        if published is None or near is None or far is None:
            continue
        acc = g.id_accuracy()
        cells = []
        for ours, theirs in ((near, published["near_auroc"]), (far, published["far_auroc"]),
                             (acc, published["id_accuracy"])):
            cells += [fmt(ours, len(g.runs)), f"{theirs:.2f}", f"{ours[0] - theirs:+.2f}"]
        rows_by_data.setdefault(g.data, []).append([g.label, *cells])
    header = ["method", "near AUROC ↑", "OpenOOD", "Δ", "far AUROC ↑", "OpenOOD", "Δ", "ID acc ↑", "OpenOOD", "Δ"]
    return [(f"{data}: OpenOOD v1.5 near / far (MSP) beside its published leaderboard (results/{data}.csv)",
             header, rows) for data, rows in rows_by_data.items()]


CALIBRATION_KEYS = (("rms", "RMS ↓"), ("mad", "MAD ↓"), ("soft_f1", "Soft F1 ↑"))


def detector_tables(groups: Sequence[Group]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Training method × detector tables, the FPR and AUROC."""
    return [t for m in (*fpr_names(groups), "auroc") for t in detector_matrix(groups, m)]


def calibration_stat(group: Group, key: str) -> tuple[float, float] | None:
    """Mean ± std over seeds (in %) of an ID+OOD calibration measure at the tuned temperature."""
    values = [100 * r["calibration"]["mean"][key] for r in group.runs
              if (r.get("calibration") or {}).get("mean") and r["calibration"].get("temperature_tuned_on")]
    return _mean_std(values) if len(values) == len(group.runs) else None


def calibration_comparison(groups: Sequence[Group]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per D_in, the calibration of every group whose temperature was tuned on held-out images
    (calibration=paper), with the paper's Table 12 where comparable: its loss, over its OOD sets."""
    out = []
    for data in dict.fromkeys(g.data for g in groups if g.data in CALIBRATION):
        tuned = [g for g in groups if g.data == data and calibration_stat(g, "rms") is not None]
        if not tuned:
            continue
        header = ["method", *[f"{label} {w}" for _, label in CALIBRATION_KEYS for w in ("ours", "paper")]]
        rows = []
        for g in tuned:
            comparable = (tuple(g.ood_sets()) == MEAN_SETS.get(data)
                          and (g.method == "baseline" or g.config.get("loss") == PAPER_LOSS))
            paper = CALIBRATION.get(data, {}).get(g.method, {}) if comparable else {}
            row = [g.label]
            for key, _ in CALIBRATION_KEYS:
                row += [fmt(calibration_stat(g, key), len(g.runs)), fmt_paper(paper.get(key), 1)]
            rows.append(row)
        out.append((f"{data}: calibration on ID test + OOD images, temperature tuned on held-out images "
                    f"(paper Table 12)", header, rows))
    return out


Table3 = tuple[str, list[str], list[list[str]]]


def rescore_runs(runs: list[dict[str, Any]], settings: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run recomputed from its scores.npz under ``settings``; the directories without one."""
    done, missing = [], []
    for run in runs:
        scores = load_scores(run["_dir"]) if run.get("detectors") else None
        if scores is None:
            missing.append(run["_dir"])
        else:
            done.append(rescore(run, scores, **settings))
    return done, missing


def paired_tables(groups: Sequence[Group]) -> list[Table3]:
    """For each OE group and its baseline with at least two common seeds: the seed-paired difference
    (OE − baseline) of the mean FPR95 and AUROC, with its paired t statistic."""
    rows = []
    for g in groups:
        base = baseline_for(g, groups) if g.method != "baseline" else None
        if base is None:
            continue
        for m in (*fpr_names([g]), "auroc"):
            diff = paired_difference({r["config"].get("seed"): 100 * r["mean"][m] for r in base.runs},
                                     {r["config"].get("seed"): 100 * r["mean"][m] for r in g.runs})
            if diff is not None:
                rows.append([f"{g.data}: {g.label} − baseline", label(m), f"{diff['mean']:+.2f} ± {diff['std']:.2f}",
                             str(diff["n"]), f"{diff['t']:+.1f}"])
    if not rows:
        return []
    return [("Seed-paired differences (mean over OOD sets, % points; t: paired t statistic)",
             ["comparison", "metric", "Δ mean ± std", "seeds", "t"], rows)]


def ci_tables(groups: Sequence[Group], resamples: int) -> list[Table3]:
    """Bootstrap 95% intervals of each group's mean FPR95 / AUROC over the OOD sets, from its first
    seed's saved scores (primary detector): ID and each OOD set resampled with replacement."""
    rows = []
    for g in groups:
        run = g.runs[0]
        scores = load_scores(run["_dir"]) if run.get("_dir") else None
        det = run.get("detector")
        if scores is None or det is None or f"in/{det}" not in scores:
            continue
        cells = []
        for m in ("fpr95", "auroc"):
            lo, hi = bootstrap_mean_ci(scores, list(run["ood"]), det, m, resamples,
                                       run["config"].get("fpr_rule", "first"))
            cells.append(f"{100 * run['mean'][m]:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]")
        rows.append([f"{g.data}: {g.label} (seed {run['config'].get('seed')})", *cells])
    if not rows:
        return []
    return [(f"Bootstrap 95% intervals, {resamples} resamples (primary detector, one seed)",
             ["run", "mean FPR95 ↓ [95% CI]", "mean AUROC ↑ [95% CI]"], rows)]
