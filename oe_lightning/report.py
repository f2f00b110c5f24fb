"""Results files -> readable tables (terminal and Markdown)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from oe_lightning.baseline import is_baseline
from oe_lightning.escaping import markdown, rich_text

METRIC_LABELS = {"fpr95": "FPR95 ↓", "auroc": "AUROC ↑", "aupr_in": "AUPR-In ↑",
                 "aupr_out": "AUPR-Out ↑"}


def _label(key: str) -> str:
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    return f"{key.upper()} ↓" if key.startswith("fpr") else key


def _cell(metrics: dict[str, float], key: str) -> str:
    std = metrics.get(f"{key}_std")
    return f"{100 * metrics[key]:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def ood_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """``(name, metrics)`` per OOD set in suite order, then ``("mean", ...)`` and each group's mean
    (``("near mean", ...)``, OpenOOD's near-OOD and far-OOD)."""
    return [*results["ood"].items(), *((f"{g} mean" if g else "mean", m) for g, m in summary_rows(results))]


def summary_rows(results: dict[str, Any]) -> list[tuple[str | None, dict[str, float]]]:
    """``(None, mean over every OOD set)``, then ``(group, mean over its sets)`` per group."""
    return [(None, results["mean"]), *(results.get("groups") or {}).items()]


def results_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (per OOD set, then the mean) in percent with two decimals."""
    keys = list(results["mean"])
    header = ["OOD set"] + [_label(k) for k in keys]
    return header, [[name] + [_cell(m, k) for k in keys] for name, m in ood_rows(results)]


def _title(results: dict[str, Any]) -> str:
    c = results.get("config", {})
    loss = "baseline" if is_baseline(c.get("lambda_oe")) else c.get("loss")
    parts = [c.get("data"), f"{loss} λ={c.get('lambda_oe')}", c.get("score"), f"seed {c.get('seed')}"]
    return " · ".join(str(p) for p in parts if p)


def _percent_or_na(value: Any) -> str:
    """``12.34`` for a fraction, ``n/a`` where it is undefined (None or nan: too few samples to bin)."""
    return "n/a" if value is None or value != value else f"{100 * value:.2f}"


def calibration_line(results: dict[str, Any]) -> str:
    """ID accuracy and RMS calibration error (ID test data; mixed with OOD sets, the paper's Table 12)."""
    rms = results.get("rms_calibration_error")
    line = f"ID accuracy {100 * results['id_accuracy']:.2f}, RMS calibration error {_percent_or_na(rms)}"
    if rms is None or rms != rms:
        line += " (fewer than 200 test samples: two bins of 100 are needed)"
    calib = results.get("calibration") or {}
    if calib.get("mean"):
        tuned = f"T={calib['temperature']:.3f} tuned on {calib['temperature_tuned_on']} held-out samples" \
            if calib.get("temperature_tuned_on") else "T=1"
        line += f" (ID+OOD mean {_percent_or_na(calib['mean']['rms'])}; {tuned})"
    return line


def results_table(results: dict[str, Any]) -> Table:
    """A rich table of one run's results, with ID accuracy and calibration as its caption."""
    header, rows = results_rows(results)
    title = _title(results)
    table = Table(title=rich_text(title), caption=rich_text(f"values in %; {calibration_line(results)}"),
                  min_width=len(title) + 4)
    for i, h in enumerate(header):
        table.add_column(rich_text(h), justify="left" if i == 0 else "right")
    last_set = len(rows) - len(summary_rows(results)) - 1
    for i, row in enumerate(rows):  # names as Text: never read as markup
        table.add_row(*map(rich_text, row), end_section=i == last_set)
    return table


def detector_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per detector: its mean over the OOD sets (in %), then one per group of sets
    (``msp · near``); empty with one detector and no groups."""
    detectors = results.get("detectors") or {}
    if len(detectors) < 2 and not results.get("groups"):
        return [], []
    keys = list(results["mean"])
    header = ["detector (mean)"] + [_label(k) for k in keys]
    return header, [[f"{name} · {group}" if group else name] + [_cell(m, k) for k in keys]
                    for name, d in detectors.items() for group, m in summary_rows(d)]


def operating_line(results: dict[str, Any]) -> str | None:
    """What the deployed threshold does on the test sets, or None without one."""
    op = results.get("operating_point") or {}
    if op.get("threshold") is None:
        return None
    return (f"deployed: {op['detector']} score > {op['threshold']:.4g} is OOD (kept {100 * op['keep_id']:.0f}% of "
            f"{op['val_images']} ID validation samples): test ID accepted {100 * op['test_id_accepted']:.2f}%, "
            f"OOD rejected {100 * op['mean_ood_rejected']:.2f}% (mean over sets)")


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    """Print one run's results table, the deployed threshold's line (if any) and, with several detectors,
    a table of each one's mean."""
    console = console or Console(width=max(Console().width, 100))
    console.print(results_table(results))
    deployed = operating_line(results)
    if deployed:
        console.print(rich_text(deployed))
    header, rows = detector_rows(results)
    if rows:
        table = Table(title="every detector, from the same forward pass", caption="values in %")
        for i, h in enumerate(header):
            table.add_column(rich_text(h), justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*map(rich_text, row))
        console.print(table)


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(markdown(c) for c in cells) + " |"

    return [line(header), "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|", *map(line, rows)]


def results_markdown(results: dict[str, Any]) -> str:
    """One run's results as a Markdown table (values in %)."""
    lines = _markdown(*results_rows(results))
    d_header, d_rows = detector_rows(results)
    if d_rows:
        lines += ["", *_markdown(d_header, d_rows)]
    lines.append(f"\n{calibration_line(results)} (in %)")
    return "\n".join(lines) + "\n"
