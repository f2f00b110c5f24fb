"""oe-predict's output: predictions as CSV and JSON lines (written atomically) and a console summary."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from oe_lightning import escaping
from oe_lightning.deployment import PREDICTION_FIELDS, Prediction
from oe_lightning.results import write_text_atomic


def prediction_paths(output: str | Path) -> tuple[Path, Path]:
    """The CSV and JSON lines files of oe-predict's ``output``, two names for every suffix: ``x.csv`` or
    ``x.jsonl`` -> ``x.csv`` and ``x.jsonl``; any other name -> itself (CSV) and itself + ``.jsonl``."""
    path = Path(output).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return path, path.with_suffix(".jsonl")
    if suffix == ".jsonl":
        return path.with_suffix(".csv"), path
    return path, path.with_name(path.name + ".jsonl")


def write_predictions(rows: Sequence[Prediction], output: str | Path) -> tuple[Path, Path]:
    """The CSV (one header line, one row per image) and the same rows as JSON lines, named by
    :func:`prediction_paths`; returns both paths."""
    csv_path, jsonl_path = prediction_paths(output)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    # text cells (paths, class names, errors) never read as formulas, numbers stay numbers; the JSON
    # lines hold the names as they are
    table = [PREDICTION_FIELDS, *([escaping.csv_cell(v) for v in asdict(r).values()] for r in rows)]
    write_text_atomic(csv_path, escaping.csv_lines(table))
    write_text_atomic(jsonl_path, "".join(json.dumps(asdict(r)) + "\n" for r in rows))
    return csv_path, jsonl_path


def summary(rows: Sequence[Prediction]) -> dict[str, object]:
    """Counts of the decisions and of the predicted classes among the accepted images."""
    decisions = Counter(r.decision for r in rows)
    return {"images": len(rows), "in": decisions["in"], "ood": decisions["ood"],
            "unreadable": decisions["unreadable"],
            "classes": dict(sorted(Counter(r.predicted_class for r in rows if r.decision == "in").items()))}


def print_summary(rows: Sequence[Prediction], threshold: float, files: Sequence[Path], noun: str = "images") -> None:
    """A short table: how many inputs (``noun``: images, texts) were accepted as each class, rejected as OOD,
    unreadable."""
    from rich.console import Console
    from rich.table import Table

    counts = summary(rows)
    table = Table(title=f"{counts['images']} {noun}, OOD when score > {threshold:.6g}")
    table.add_column("decision")
    table.add_column(noun, justify="right")
    for name, n in counts["classes"].items():
        table.add_row(escaping.rich_text(f"in: {name}"), str(n))  # Text: never read as markup
    table.add_row("ood (none of the classes)", str(counts["ood"]))
    if counts["unreadable"]:
        table.add_row("unreadable (reported, skipped)", str(counts["unreadable"]))
    console = Console()
    console.print(table)
    for path in files:
        console.print(escaping.rich_text(f"written: {path}"))
