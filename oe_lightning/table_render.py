"""oe-table's formats: Markdown, LaTeX (booktabs), rich terminal tables, a tidy CSV and the λ plot;
every name escaped for the format it is written into."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oe_lightning import escaping
from oe_lightning.run_groups import (
    Group,
    baseline_for,
    fpr_names,
    metrics_of,
)
from oe_lightning.table_content import (
    Table3,
    calibration_comparison,
    comparisons,
    detector_tables,
    leaderboard_comparison,
    overview,
    paper_numbers,
)


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


def content_tables(groups: Sequence[Group], extra: Sequence[Table3] = ()) -> list[Table3]:
    """The tables after the overview, in order, as the file formats print them."""
    return [*comparisons(groups), *leaderboard_comparison(groups), *detector_tables(groups),
            *calibration_comparison(groups), *extra]


def render_markdown(groups: Sequence[Group], extra: Sequence[Table3] = ()) -> str:
    """Every table as Markdown, each under its title."""
    parts = ["## Runs (values in %, mean ± std over seeds)\n", markdown_table(*overview(groups))]
    for title, header, rows in content_tables(groups, extra):
        parts += [f"\n## {escaping.markdown(title)}\n", markdown_table(header, rows)]
    return "\n".join(parts)


def render_latex(groups: Sequence[Group], extra: Sequence[Table3] = ()) -> str:
    """Every table as a booktabs LaTeX table."""
    parts = [latex_table("Runs (values in %, mean ± std over seeds)", *overview(groups))]
    parts += [latex_table(title, header, rows) for title, header, rows in content_tables(groups, extra)]
    return "\n".join(parts)


Rows = list[list[str]]


def split_by_metric(title: str, header: list[str], rows: Rows) -> list[tuple[str, list[str], Rows]]:
    """A comparison table as one narrower table per metric (fits an 80-column terminal)."""
    out = []
    names = list(dict.fromkeys(h.split(" ")[0] for h in header[1:]))  # "FPR90", "AUROC", "AUPR"
    for name in names:
        cols = [i for i, h in enumerate(header) if h.split(" ")[0] == name]
        arrow = header[cols[0]].split(" ")[1]
        prefix = f"{name} {arrow} "
        out.append((f"{title} · {name} {arrow}", [header[0], *[header[i][len(prefix):] for i in cols]],
                    [[r[0], *[r[i] for i in cols]] for r in rows]))
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
    tables += leaderboard_comparison(groups)
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
    """Tidy rows: one per group, OOD set (then ``mean`` and each group of sets' ``near mean``) and metric;
    text cells never read as formulas (:func:`oe_lightning.escaping.csv_cell`), numbers as they are."""
    text = escaping.csv_cell
    rows: list[list[object]] = [["data", "group", "group_id", "method", "loss", "lambda_oe", "score", "seeds",
                                 "ood_set", "metric", "mean", "std", "paper", "delta_vs_paper"]]
    for g in groups:
        summaries = [(s, None, s) for s in g.ood_sets()] + [(None, None, "mean")] + \
            [(None, o, f"{o} mean") for o in g.ood_groups()]
        for s, ood_group, label in summaries:
            for m in metrics_of([g]):
                stat = g.stat(s, m, ood_group)
                paper = paper_numbers(g, s, m) if ood_group is None else None
                if stat is None:
                    continue
                delta = "" if paper is None else f"{stat[0] - paper:.4f}"
                rows.append([text(g.data), text(g.label), g.group_id, g.method, text(str(g.config.get("loss") or "")),
                             g.lambda_oe, text(str(g.config.get("score"))), len(g.runs), text(label), m,
                             f"{stat[0]:.4f}", f"{stat[1]:.4f}", "" if paper is None else paper, delta])
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
            points.append((0.0, *base.stat(None, fpr_names([g])[0])))
        points.append((g.lambda_oe, *g.stat(None, fpr_names([g])[0])))
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
