"""``oe-table SWEEP_DIR [...]``: many runs' ``results.json`` -> the paper's tables, a CSV and a λ plot.

Runs are grouped by their key config (``results.json`` → ``config``) minus the seed: runs that
differ only in seed are one group, reported as mean ± sample std over seeds. λ = 0 runs are the
baseline of their dataset (their OE loss is irrelevant; repeated runs of one seed count once).
Output:

- an overview with one row per group (dataset, method, loss, λ, seeds, mean FPR95/AUROC/AUPR,
  ID accuracy);
- for every OE group with a baseline on the same data: rows = OOD sets + mean, columns = FPR95,
  AUROC, AUPR for baseline and OE and, where the paper published them (MSP score, the paper's
  loss), its numbers and our difference to them;
- Markdown, LaTeX and a tidy CSV, and ``fpr95_vs_lambda.png`` when λ took several values.

AUPR is AUPR-Out (OOD positive), the paper's AUPR. Values are percentages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oe_lightning import escaping
from oe_lightning.baseline import is_baseline
from oe_lightning.paper_results import (
    CALIBRATION,
    ENERGY_MEAN_FPR95,
    ENERGY_SETS,
    MEAN_SETS,
    MEANS,
    PAPER_FPR_RULE,
    PER_SET,
)
from oe_lightning.rescore import bootstrap_mean_ci, load_scores, paired_difference, parse_settings, rescore
from oe_lightning.results import RESULTS_FILE, group_identity, identity_hash, read_complete, upgraded_identity

METRICS = ("fpr95", "auroc", "aupr_out")
LABELS = {"fpr95": "FPR95 ↓", "auroc": "AUROC ↑", "aupr_out": "AUPR ↑"}
PAPER_LOSS, PAPER_SCORE = "UniformCrossEntropy", "MaxSoftmax"
IGNORED_KEYS = ("seed", "pretrained")
MAX_LABEL_KEYS = 4  # differing config keys named in a group's label


@dataclass
class Group:
    """Runs that differ only in seed."""

    config: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    distinguish: tuple[str, ...] = ()  # config keys shown in the label (they vary between groups)
    identity: dict[str, Any] | None = None  # the group's resolved config (results.group_identity)
    key: str = ""  # what its runs share: their results' group_id, or (older results) their key config

    @property
    def group_id(self) -> str:
        """A short id of the group, the same for every re-run of its experiment."""
        return self.key if len(self.key) <= 16 and self.key.isalnum() else \
            hashlib.sha256(self.key.encode()).hexdigest()[:16]

    @property
    def data(self) -> str:
        return str(self.config.get("data"))

    @property
    def lambda_oe(self) -> float:
        return float(self.config.get("lambda_oe") or 0.0)

    @property
    def method(self) -> str:
        """``baseline``, ``oe_tune`` (fine-tuned from a checkpoint) or ``oe_scratch``."""
        if is_baseline(self.lambda_oe):
            return "baseline"
        return "oe_tune" if self.config.get("tuned") else "oe_scratch"

    @property
    def label(self) -> str:
        if self.method == "baseline":
            text = "baseline"
        else:
            how = "tune" if self.method == "oe_tune" else "scratch"
            text = f"{self.config.get('loss')} λ={self.lambda_oe:g} ({how})"
        source = self.identity if self.identity is not None else self.config
        extra = [f"{k}={_short(source.get(k))}" for k in self.distinguish[:MAX_LABEL_KEYS]]
        if len(self.distinguish) > MAX_LABEL_KEYS:
            extra.append(f"+{len(self.distinguish) - MAX_LABEL_KEYS} more keys")
        return text + (f" [{', '.join(extra)}]" if extra else "")

    @property
    def seeds(self) -> list[Any]:
        return [r["config"].get("seed") for r in self.runs]

    def ood_sets(self) -> list[str]:
        names: list[str] = []
        for run in self.runs:
            names += [n for n in run["ood"] if n not in names]
        return names

    def stat(self, ood_set: str | None, metric: str) -> tuple[float, float] | None:
        """Mean and sample std (0 for one seed) over seeds, in %; ``ood_set=None``: the mean row."""
        values = [100 * (r["mean"] if ood_set is None else r["ood"].get(ood_set, {})).get(metric, math.nan)
                  for r in self.runs]
        return _mean_std([v for v in values if not math.isnan(v)])

    def id_accuracy(self) -> tuple[float, float]:
        return _mean_std([100 * r["id_accuracy"] for r in self.runs])


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample std (0 for a single value) over seeds; None without values."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _short(value: Any) -> str:
    """``oe_lightning.models.SmallCNN`` -> ``SmallCNN``; other values as they are."""
    text = str(value)
    return text.rsplit(".", 1)[-1] if "." in text and not text.replace(".", "").isdigit() else text


def collect_runs(root: str | Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """Complete ``results.json`` files under ``root`` (any depth) and the incomplete ones' paths."""
    from oe_lightning.data.files import list_files, warn_skipped

    complete, incomplete = [], []
    listing = list_files(root, lambda p: Path(p).name == RESULTS_FILE)  # regular files: a FIFO would hang
    warn_skipped([listing], f"runs under {root}")
    for path in sorted(listing.files):
        results = read_complete(path)
        if results is None:
            incomplete.append(path)
        else:
            complete.append({**results, "_dir": str(path.parent)})
    return complete, incomplete


def group_key(config: dict[str, Any]) -> dict[str, Any]:
    key = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
    key["tuned"] = bool(config.get("pretrained"))
    if is_baseline(config.get("lambda_oe")):  # no OE term, so its OE loss and data do not matter
        key["loss"] = key["oe"] = None
        key["lambda_oe"] = 0.0
    return key


# identity keys never shown as a distinguishing label: the title already says them, or they follow
# from one that is shown
LABELLED = ("loss.lambda_oe", "module.lambda_oe", "loss.fn._target_", "data.name", "tuned", "task_name")


def _varying(groups: list[Group], keys: Iterable[str], value: Any) -> list[str]:
    """Keys whose value differs among ``groups``, one per pattern of values (co-varying keys such
    as an interpolated copy are shown once)."""
    shown, patterns = [], set()
    for k in sorted(keys):
        values = tuple(json.dumps(value(g, k), sort_keys=True, default=str) for g in groups)
        if len(set(values)) > 1 and values not in patterns:
            patterns.add(values)
            shown.append(k)
    return shown


def group_runs(runs: Iterable[dict[str, Any]]) -> list[Group]:
    """Runs of one experiment (equal ``group_id``: the resolved config up to seed and checkpoint
    paths) form a group, in first-seen order; a seed seen twice counts once (the first run). Older
    results without an identity are grouped by their key config values."""
    groups: dict[str, Group] = {}
    for run in runs:
        identity = upgraded_identity(run["identity"]) if run.get("identity") is not None else None
        renamed = identity is not None and identity != run["identity"]  # recorded under an earlier layout
        key = identity_hash(group_identity(identity)) if renamed else run.get("group_id") or \
            json.dumps(group_key(run.get("config", {})), sort_keys=True, default=str)
        group = groups.setdefault(key, Group(group_key(run.get("config", {})), key=key))
        if identity is not None and group.identity is None:
            group.identity = group_identity(identity)
        if run["config"].get("seed") not in group.seeds:
            group.runs.append(run)
    for g in groups.values():  # label each group by what varies among its dataset's groups
        peers = [p for p in groups.values() if p.data == g.data]
        if all(p.identity is not None for p in peers):
            candidates = [p for p in peers if p.method != "baseline"] if g.method != "baseline" else peers
            # keys every candidate has (a key only some have comes with a differing choice shown anyway)
            keys = {k for k in set.intersection(*(set(p.identity) for p in candidates))
                    if k.removeprefix("trained.") not in LABELLED}
            if g.method == "baseline":  # a baseline has no OE source or loss
                keys = {k for k in keys if not k.removeprefix("trained.").startswith(("oe.", "loss."))}
            g.distinguish = tuple(_varying(candidates, keys, lambda p, k: p.identity.get(k)))
            continue
        oe_peers = [p for p in peers if p.method != "baseline"]

        def varies(key: str, among: list[Group]) -> bool:
            return len({json.dumps(p.config.get(key), default=str) for p in among}) > 1

        g.distinguish = tuple(
            k for k in sorted({k for p in peers for k in p.config})
            if k not in ("data", "loss", "lambda_oe", "tuned")
            and (varies(k, oe_peers) if k == "oe" else varies(k, peers))
            and not (k == "oe" and g.method == "baseline"))
    return sorted(groups.values(), key=lambda g: (g.data, not is_baseline(g.lambda_oe), str(g.config.get("loss")),
                                                  g.lambda_oe, g.method, g.label))


def baseline_for(group: Group, groups: Sequence[Group]) -> Group | None:
    """The baseline on the same data whose config agrees most with ``group``'s (model and score
    first, then every other key)."""
    candidates = [g for g in groups if g.method == "baseline" and g.data == group.data]
    if not candidates:
        return None

    def agreement(g: Group) -> tuple[int, int]:
        same = [k for k in group.config if g.config.get(k) == group.config.get(k)]
        return sum(k in ("model", "score") for k in same), len(same)

    return max(candidates, key=agreement)


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
    if metric == "fpr95" and group.config.get("fpr_rule") != PAPER_FPR_RULE:
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
    if stat is None:
        return ""
    if isinstance(stat, tuple):
        mean, std = stat
        return f"{mean:.2f} ± {std:.2f}" if seeds > 1 else f"{mean:.2f}"
    return f"{stat:.2f}"


def fmt_paper(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def comparison(baseline: Group, oe: Group) -> tuple[list[str], list[list[str]]]:
    """Header and rows (OOD sets, then mean) of baseline vs OE, with the paper's numbers if any."""
    rows_sets: list[str | None] = [*[s for s in oe.ood_sets()], None]
    with_paper = any(paper_numbers(g, s, m) is not None for g in (baseline, oe)
                     for s in rows_sets for m in METRICS)
    header = ["OOD set"]
    for m in METRICS:
        header += [f"{LABELS[m]} base", f"{LABELS[m]} OE"]
        if with_paper:
            header += [f"{LABELS[m]} paper base", f"{LABELS[m]} paper OE", f"{LABELS[m]} Δ OE"]
    rows = []
    for s in rows_sets:
        row = [s or "mean"]
        for m in METRICS:
            ours_base, ours_oe = baseline.stat(s, m), oe.stat(s, m)
            row += [fmt(ours_base, len(baseline.runs)), fmt(ours_oe, len(oe.runs))]
            if with_paper:
                p_base, p_oe = paper_numbers(baseline, s, m), paper_numbers(oe, s, m)
                delta = ours_oe[0] - p_oe if ours_oe is not None and p_oe is not None else None
                digits = 2 if s is None else 1  # as printed: Table 7's means 2 decimals, its set rows 1
                row += [fmt_paper(p_base, digits), fmt_paper(p_oe, digits),
                        "" if delta is None else f"{delta:+.2f}"]
        rows.append(row)
    return header, rows


def overview(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    header = ["data", "method", "seeds", *[f"mean {LABELS[m]}" for m in METRICS], "ID acc ↑"]
    rows = [[g.data, g.label, str(len(g.runs)), *[fmt(g.stat(None, m), len(g.runs)) for m in METRICS],
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


def detector_stat(group: Group, detector: str, metric: str) -> tuple[float, float] | None:
    """Mean ± std over seeds (in %) of a detector's mean over the OOD sets; None unless every seed has it."""
    values = [100 * r["detectors"][detector]["mean"][metric] for r in group.runs
              if detector in (r.get("detectors") or {}) and metric in r["detectors"][detector]["mean"]]
    return _mean_std(values) if len(values) == len(group.runs) else None


def detector_matrix(groups: Sequence[Group], metric: str = "fpr95") -> list[tuple[str, list[str], list[list[str]]]]:
    """Per D_in whose runs scored several detectors: training method (rows) × detector (columns),
    each cell the mean over the OOD sets: the layout of OOD leaderboards."""
    out = []
    for data in dict.fromkeys(g.data for g in groups):
        mine = [g for g in groups if g.data == data]
        detectors = list(dict.fromkeys(d for g in mine for r in g.runs for d in (r.get("detectors") or {})))
        if len(detectors) < 2:
            continue
        rows = [[g.label, *[fmt(detector_stat(g, d, metric), len(g.runs)) for d in detectors]] for g in mine]
        out.append((f"{data}: training method × detector, mean {LABELS.get(metric, metric)} over the OOD sets",
                    ["method", *detectors], rows))
    return out


CALIBRATION_KEYS = (("rms", "RMS ↓"), ("mad", "MAD ↓"), ("soft_f1", "Soft F1 ↑"))


def detector_tables(groups: Sequence[Group]) -> list[tuple[str, list[str], list[list[str]]]]:
    return [t for m in ("fpr95", "auroc") for t in detector_matrix(groups, m)]


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
        for m in ("fpr95", "auroc"):
            diff = paired_difference({r["config"].get("seed"): 100 * r["mean"][m] for r in base.runs},
                                     {r["config"].get("seed"): 100 * r["mean"][m] for r in g.runs})
            if diff is not None:
                rows.append([f"{g.data}: {g.label} − baseline", LABELS[m], f"{diff['mean']:+.2f} ± {diff['std']:.2f}",
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


# ---- renderers -----------------------------------------------------------------------------
def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, every cell escaped (:func:`oe_lightning.escaping.markdown`)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(escaping.markdown(c) for c in cells) + " |"

    lines = [line(header), "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + [line(r) for r in rows]) + "\n"


def latex_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A booktabs table; the caption and every cell escaped (:func:`oe_lightning.escaping.latex`)."""
    cols = "l" + "r" * (len(header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{escaping.latex(title)}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(escaping.latex(h) for h in header) + r" \\",
             r"\midrule"]
    for i, row in enumerate(rows):
        if i == len(rows) - 1 and row[0] == "mean":
            lines.append(r"\midrule")
        lines.append(" & ".join(escaping.latex(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render_markdown(groups: Sequence[Group], extra: Sequence[Table3] = ()) -> str:
    parts = ["## Runs (values in %, mean ± std over seeds)\n", markdown_table(*overview(groups))]
    for title, header, rows in [*comparisons(groups), *detector_tables(groups), *calibration_comparison(groups),
                                *extra]:
        parts += [f"\n## {escaping.markdown(title)}\n", markdown_table(header, rows)]
    return "\n".join(parts)


def render_latex(groups: Sequence[Group], extra: Sequence[Table3] = ()) -> str:
    parts = [latex_table("Runs (values in %, mean ± std over seeds)", *overview(groups))]
    parts += [latex_table(title, header, rows)
              for title, header, rows in [*comparisons(groups), *detector_tables(groups),
                                          *calibration_comparison(groups), *extra]]
    return "\n".join(parts)


Rows = list[list[str]]


def split_by_metric(title: str, header: list[str], rows: Rows) -> list[tuple[str, list[str], Rows]]:
    """A comparison table as one narrower table per metric (fits an 80-column terminal)."""
    out = []
    for m in METRICS:
        cols = [i for i, h in enumerate(header) if h.startswith(f"{LABELS[m]} ")]
        if cols:
            sub_header = [header[0], *[header[i][len(LABELS[m]) + 1:] for i in cols]]
            out.append((f"{title} · {LABELS[m]}", sub_header, [[r[0], *[r[i] for i in cols]] for r in rows]))
    return out


def print_terminal(groups: Sequence[Group], console: Any = None, extra: Sequence[Table3] = ()) -> None:
    """The overview, then each comparison split into one table per metric, as rich tables: label
    columns wrap, numbers never do, so the tables fit an 80-column terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    tables = [("Runs (values in %, mean ± std over seeds)", *overview(groups))]
    for title, header, rows in comparisons(groups):
        tables += split_by_metric(title, header, rows)
    for title, header, rows in detector_tables(groups):  # transposed: detectors down, methods across
        tables.append((title, ["detector", *[r[0] for r in rows]],
                       [[d, *[r[i] for r in rows]] for i, d in enumerate(header[1:], start=1)]))
    tables += list(extra)
    for title, header, rows in calibration_comparison(groups):  # one table per measure: 80 columns
        for i in range(1, len(header), 2):
            tables.append((f"{title} · {header[i].rsplit(' ', 1)[0]}", ["method", "ours", "paper"],
                           [[r[0], r[i], r[i + 1]] for r in rows]))
    for title, header, rows in tables:
        table = Table(title=escaping.rich_text(title), title_justify="left")
        labels = 2 if header[0] == "data" else 1
        for i, h in enumerate(header):
            table.add_column(escaping.rich_text(h), justify="left" if i < labels else "right", no_wrap=i >= labels,
                             overflow="fold")
        for i, row in enumerate(rows):  # names as Text: never read as markup ("[oe=...]" in a label)
            table.add_row(*map(escaping.rich_text, row), end_section=i == len(rows) - 2 and rows[-1][0] == "mean")
        console.print(table)


def render_csv(groups: Sequence[Group]) -> str:
    """Tidy rows: one per group, OOD set (``mean`` last) and metric; text cells never read as
    formulas (:func:`oe_lightning.escaping.csv_cell`), numbers as they are."""
    text = escaping.csv_cell
    rows: list[list[object]] = [["data", "group", "group_id", "method", "loss", "lambda_oe", "score", "seeds",
                                 "ood_set", "metric", "mean", "std", "paper", "delta_vs_paper"]]
    for g in groups:
        for s in [*g.ood_sets(), None]:
            for m in METRICS:
                stat, paper = g.stat(s, m), paper_numbers(g, s, m)
                if stat is None:
                    continue
                delta = "" if paper is None else f"{stat[0] - paper:.4f}"
                rows.append([text(g.data), text(g.label), g.group_id, g.method, text(str(g.config.get("loss") or "")),
                             g.lambda_oe,
                             text(str(g.config.get("score"))), len(g.runs), text(s or "mean"), m, f"{stat[0]:.4f}",
                             f"{stat[1]:.4f}", "" if paper is None else paper, delta])
    return escaping.csv_lines(rows)


def plot_lambda(groups: Sequence[Group], path: Path) -> Path | None:
    """Mean FPR95 against λ, one line per dataset and loss (the baseline as λ = 0); None if λ
    took fewer than two values anywhere."""
    series: dict[str, list[tuple[float, float, float]]] = {}
    for g in groups:
        if g.method == "baseline":
            continue
        name = f"{g.data} · " + g.label.replace(f" λ={g.lambda_oe:g}", "")
        base = baseline_for(g, groups)
        points = series.setdefault(name, [])
        if base is not None and not any(p[0] == 0 for p in points):
            points.append((0.0, *base.stat(None, "fpr95")))
        points.append((g.lambda_oe, *g.stat(None, "fpr95")))
    series = {k: sorted(v) for k, v in series.items() if len({p[0] for p in v}) > 1}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, points in series.items():
        lam, mean, std = zip(*points, strict=True)
        ax.errorbar(lam, mean, yerr=std, marker="o", capsize=3, label=escaping.mathtext(name, legend=True))
    ax.set_xlabel("λ (weight of the OE term)")
    ax.set_ylabel("mean FPR95 over OOD sets (%) ↓")
    ax.set_title("FPR95 against λ (error bars: std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oe-table", description="Collect results.json files under SWEEP_DIR into paper-style tables.")
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="SWEEP_DIR",
                        help="sweep (or any) directories holding results.json files, e.g. a baseline "
                             "sweep and an OE sweep")
    parser.add_argument("--format", choices=("term", "md", "latex", "csv"), default=None,
                        help="what to print: rich tables (default on a terminal), md (default otherwise), "
                             "latex or csv")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write table.md, table.tex, table.csv and fpr95_vs_lambda.png here "
                             "(default: the first SWEEP_DIR)")
    parser.add_argument("--no-files", action="store_true", help="print only, write nothing")
    parser.add_argument("--rescore", metavar="SETTINGS", default=None,
                        help="recompute every metric from the runs' scores.npz under other settings, e.g. "
                             "fpr_rule=nearest,protocol=paper (keys: fpr_rule, recall, protocol, num_to_avg, "
                             "positive)")
    parser.add_argument("--ci", type=int, metavar="RESAMPLES", default=0,
                        help="add bootstrap 95%% intervals of each group's mean FPR95 and AUROC (primary "
                             "detector, first seed's scores.npz), from RESAMPLES seeded resamples")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``oe-table``."""
    args = build_parser().parse_args(argv)
    for d in args.sweep_dirs:
        if not d.is_dir():
            print(f"Error: oe-table got {str(d)!r}, which is not a directory. Pass the sweep directory "
                  f"of an oe-train -m run (outputs/train/multirun/<time>) or any folder holding "
                  f"results.json files.", file=sys.stderr)
            return 2
    runs, incomplete = [], []
    for d in args.sweep_dirs:
        found, broken = collect_runs(d)
        runs += found
        incomplete += broken
    if not runs:
        where = ", ".join(escaping.printable(str(d)) for d in args.sweep_dirs)
        print(f"Error: no complete results.json under {where} ({len(incomplete)} incomplete). "
              f"Run oe-train there first, or point oe-table at the directory that holds the runs.",
              file=sys.stderr)
        return 2
    if args.rescore:
        try:
            settings = parse_settings(args.rescore)
        except ValueError as err:
            print(f"Error: {err}", file=sys.stderr)
            return 2
        runs, unscored = rescore_runs(runs, settings)
        if unscored:
            print(f"({len(unscored)} runs have no scores.npz and are left out of the rescored tables: "
                  f"{', '.join(map(escaping.printable, unscored[:3]))}{' ...' if len(unscored) > 3 else ''})",
                  file=sys.stderr)
        if not runs:
            print("Error: no run under these directories has a scores.npz to rescore.", file=sys.stderr)
            return 2
    groups = group_runs(runs)
    extra = [*paired_tables(groups), *(ci_tables(groups, args.ci) if args.ci else [])]
    rendered = {"md": render_markdown(groups, extra), "latex": render_latex(groups, extra),
                "csv": render_csv(groups)}
    fmt_out = args.format or ("term" if sys.stdout.isatty() else "md")
    if fmt_out == "term":
        print_terminal(groups, extra=extra)
    else:
        print(rendered[fmt_out])
    if incomplete:
        names = ", ".join(escaping.printable(str(p)) for p in incomplete[:5]) + (" ..." if len(incomplete) > 5 else "")
        print(f"({len(incomplete)} incomplete results.json skipped: unfinished, partial or malformed: {names})",
              file=sys.stderr)
    if not args.no_files:
        out = args.out or args.sweep_dirs[0]
        out.mkdir(parents=True, exist_ok=True)
        for fmt_name, suffix in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
            (out / f"table.{suffix}").write_text(rendered[fmt_name])
        plot = plot_lambda(groups, out / "fpr95_vs_lambda.png")
        print(f"wrote {escaping.printable(str(out))}/table.md, table.tex, table.csv"
              + (f", {plot.name}" if plot else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
