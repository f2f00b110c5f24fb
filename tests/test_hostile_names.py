"""Names are code somewhere: file names, class names, OOD set names and run labels are written escaped
for each format, through the real writers (oe-predict's CSV, oe-table's Markdown, LaTeX, CSV and
terminal tables, one run's report, the plots), so that a name is shown as written and never runs."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import torch

from oe_lightning import plots
from oe_lightning.deployment import Prediction
from oe_lightning.paper_results import PER_SET
from oe_lightning.predictions import print_summary, write_predictions
from oe_lightning.report import print_results, results_markdown
from oe_lightning.run_groups import collect_runs, group_runs
from oe_lightning.table import main
from oe_lightning.table_render import print_terminal

# name | as a CSV cell | in Markdown | in LaTeX
NAMES = [
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")', '=HYPERLINK("http://x","y")',
     '=HYPERLINK("http://x","y")'),
    ("+1", "'+1", "+1", "+1"),
    ("-cmd", "'-cmd", "-cmd", "-cmd"),
    ("@SUM(A1)", "'@SUM(A1)", "@SUM(A1)", "@SUM(A1)"),
    ("\t=1", "'\t=1", " =1", " =1"),
    ("a|b", "a|b", r"a\|b", r"a\textbar{}b"),
    ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;",
     r"\textless{}img src=x onerror=alert(1)\textgreater{}"),
    ("^^5c", "^^5c", "^^5c", r"\textasciicircum{}\textasciicircum{}5c"),
    ("$x$", "$x$", r"\$x\$", r"\$x\$"),
    ("{}", "{}", "{}", r"\{\}"),
    ("100%", "100%", "100%", r"100\%"),
    ("[bold]x[/bold]", "[bold]x[/bold]", r"\[bold\]x\[/bold\]", "[bold]x[/bold]"),
    ("a\nb", "a\nb", "a b", "a b"),
    ("\\input{x}", "\\input{x}", r"\\input{x}", r"\textbackslash{}input\{x\}"),
    ("`code`", "`code`", r"\`code\`", "`code`"),
    ("&#_~", "&#_~", "&amp;#_~", r"\&\#\_\textasciitilde{}"),
    ("\x1b[31mred", "\x1b[31mred", r" \[31mred", " [31mred"),
]
SETS = [n[0] for n in NAMES]
DATA = "$^$ data_{1}"  # bad mathtext, TeX specials, a Markdown '$'
DATA_MD, DATA_TEX = r"\$^\$ data_{1}", r"\$\textasciicircum{}\$ data\_\{1\}"
MARKUP_OE = "[bold]x[/bold]"  # one OE group's source: shown in its label


def write_run(root: Path, name: str, data: str, sets: list[str], lambda_oe: float, fpr: float,
              oe: str = "tiny", loss: str = "=Loss", score: str = "@score") -> None:
    """A results.json as oe-train writes it; every OOD set gets FPR ``fpr`` (fraction)."""
    ood = {s: {"fpr95": fpr, "auroc": 1 - fpr / 2, "aupr_in": 0.9, "aupr_out": 1 - fpr} for s in sets}
    mean = {k: sum(m[k] for m in ood.values()) / len(ood) for k in ("fpr95", "auroc", "aupr_in", "aupr_out")}
    results = {"schema": 1, "id_accuracy": 0.95, "rms_calibration_error": 0.05, "ood": ood, "mean": mean,
               "config": {"data": data, "oe": oe, "model": "m", "loss": loss, "lambda_oe": lambda_oe,
                          "score": score, "seed": 0, "pretrained": None, "protocol": "paper",
                          "fpr_rule": "nearest"}}
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(results))


@pytest.fixture()
def hostile_sweep(tmp_path) -> Path:
    """A baseline and two OE groups (their OE sources differ, one is rich markup) on a data set and
    OOD sets with hostile names; and a cifar10 baseline that beats the paper (a negative difference)."""
    sweep = tmp_path / "sweep"
    write_run(sweep, "base", DATA, SETS, 0.0, 0.4)
    write_run(sweep, "oe_markup", DATA, SETS, 0.5, 0.1, oe=MARKUP_OE)
    write_run(sweep, "oe_tiny", DATA, SETS, 0.5, 0.2)
    write_run(sweep, "paper", "cifar10", list(PER_SET["cifar10"]["baseline"]), 0.0, 0.1, score="MaxSoftmax")
    return sweep


def unescaped_pipes(line: str) -> int:
    return re.sub(r"\\.", "", line).count("|")


# ---- CSV -----------------------------------------------------------------------------------
def test_predictions_csv_text_cells_are_never_formulas_and_keep_their_names_in_jsonl(tmp_path):
    rows = [Prediction(path=name, predicted_class=name, confidence=0.9, ood_score=0.25, decision="in",
                       threshold=0.5) for name, *_ in NAMES]
    rows.append(Prediction(path="\r=1.png", predicted_class=None, confidence=None, ood_score=None,
                           decision="unreadable", threshold=0.5, error="-x: cannot identify image file"))
    csv_path, jsonl_path = write_predictions(rows, tmp_path / "p.csv")
    with csv_path.open(newline="") as file:
        read = list(csv.DictReader(file))
    assert [(r["path"], r["predicted_class"]) for r in read[:-1]] == [(cell, cell) for _, cell, *_ in NAMES]
    assert read[-1]["path"] == "'\r=1.png" and read[-1]["error"] == "'-x: cannot identify image file"
    assert read[-1]["ood_score"] == read[-1]["predicted_class"] == ""
    assert [json.loads(line)["path"] for line in jsonl_path.read_text().splitlines()] == [*SETS, "\r=1.png"]


def test_a_negative_score_stays_a_plain_number_beside_a_quoted_text_cell(tmp_path):
    row = Prediction(path="-photo.png", predicted_class="-1", confidence=0.75, ood_score=-0.58, decision="in",
                     threshold=-1.5)
    csv_path, _ = write_predictions([row], tmp_path / "p.csv")
    assert csv_path.read_text().splitlines()[1] == "'-photo.png,'-1,0.75,-0.58,in,-1.5,"
    (read,) = csv.DictReader(csv_path.open(newline=""))
    assert float(read["ood_score"]) == -0.58 and float(read["threshold"]) == -1.5


def test_table_csv_quotes_text_cells_only(hostile_sweep, capsys):
    assert main([str(hostile_sweep), "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (hostile_sweep / "table.csv").read_text().strip()
    rows = list(csv.DictReader(io.StringIO(printed)))
    hostile = [r for r in rows if r["data"] != "cifar10"]
    assert {r["data"] for r in hostile} == {DATA}
    assert {r["loss"] for r in hostile if r["method"] != "baseline"} == {"'=Loss"}
    assert {r["score"] for r in hostile} == {"'@score"}
    assert list(dict.fromkeys(r["ood_set"] for r in hostile)) == [cell for _, cell, *_ in NAMES] + ["mean"]
    # a number below zero stays a number: cifar10's FPR95 of 10% is 18.8 points under the paper's SVHN 28.8
    svhn = next(r for r in rows if r["data"] == "cifar10" and r["ood_set"] == "svhn" and r["metric"] == "fpr95")
    assert svhn["delta_vs_paper"] == "-18.8000" and svhn["lambda_oe"] == "0.0"


# ---- Markdown ------------------------------------------------------------------------------
def test_markdown_tables_keep_their_columns_and_render_no_html(hostile_sweep, capsys):
    assert main([str(hostile_sweep), "--format", "md"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (hostile_sweep / "table.md").read_text().strip()
    for block in printed.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        assert len({unescaped_pipes(line) for line in lines}) <= 1, block  # every row as many columns
    assert all(line == "" or line.startswith(("|", "## ")) for line in printed.splitlines())  # no broken row
    assert "<" not in printed and ">" not in printed
    lines = printed.splitlines()
    for _, _, md, _ in NAMES:
        assert any(line.startswith(f"| {md} | ") for line in lines), md
    assert rf"## {DATA_MD}: baseline vs =Loss λ=0.5 (scratch) \[oe=\[bold\]x\[/bold\]\], 1 seed" in printed
    assert any(line.startswith(f"| {DATA_MD} | baseline | 1 |") for line in lines)


def test_one_runs_markdown_escapes_set_and_detector_names():
    text = results_markdown(one_run())
    assert "| \\[red\\]x\\[/red\\] | " in text and "| a\\|b | " in text and "| &lt;i&gt;knn | " in text
    assert all(unescaped_pipes(line) == 6 for line in text.splitlines() if line.startswith("|"))


# ---- LaTeX ---------------------------------------------------------------------------------
def test_latex_escapes_every_name_so_none_becomes_a_macro(hostile_sweep, capsys):
    assert main([str(hostile_sweep), "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert tex.strip() == (hostile_sweep / "table.tex").read_text().strip()
    lines = tex.splitlines()
    for _, _, _, escaped in NAMES:
        assert any(line.startswith(f"{escaped} & ") for line in lines), escaped
    assert "^" not in tex and "\x1b" not in tex  # ^^5c (TeX's notation for a backslash) cannot form
    plain = re.sub(r"\\[{}$&#%_\\]", "", tex)
    assert plain.count("{") == plain.count("}") and plain.count("$") % 2 == 0
    assert rf"\caption{{{DATA_TEX}: baseline vs =Loss $\lambda$=0.5 (scratch) [oe=[bold]x[/bold]], 1 seed}}" in tex
    assert r"\caption{Runs (values in \%, mean $\pm$ std over seeds)}" in tex
    assert any(line.startswith(f"{DATA_TEX} & baseline & 1 & ") for line in lines)
    rows = tex.split(r"\midrule")
    assert all(line.endswith(r" \\") or line.startswith("\\") for part in rows[1:] for line in part.split("\n")
               if line and not line.startswith(r"\bottomrule"))  # a newline in a name never splits a row


# ---- terminal ------------------------------------------------------------------------------
def test_terminal_tables_print_markup_and_control_characters_as_written(hostile_sweep):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=400, color_system=None)
    print_terminal(group_runs(collect_runs(hostile_sweep)[0]), console)
    text = console.file.getvalue()
    assert f"=Loss λ=0.5 (scratch) [oe={MARKUP_OE}]" in text  # a label's [key=value] part is not a style
    assert "[bold]x[/bold] " in text and "a\\nb " in text and "\\x1b[31mred " in text
    assert "\x1b" not in text


def test_predict_summary_prints_class_names_and_paths_as_written(capsys):
    rows = [Prediction(path="x.png", predicted_class="[bold]cat[/bold]", confidence=0.9, ood_score=0.1,
                       decision="in", threshold=0.5)]
    print_summary(rows, 0.5, [Path("[/]out.csv")])  # '[/]' was a markup error
    out = capsys.readouterr().out
    assert "in: [bold]cat[/bold]" in out and "written: [/]out.csv" in out


def one_run() -> dict:
    metrics = {"fpr95": 0.5, "auroc": 0.8, "aupr_in": 0.7, "aupr_out": 0.6}
    return {"ood": {"[red]x[/red]": metrics, "a|b": metrics}, "mean": metrics, "id_accuracy": 0.9,
            "rms_calibration_error": 0.05, "detector": "<i>knn",
            "config": {"data": "[bold]d[/bold]", "lambda_oe": 0.0, "score": "s", "seed": 0},
            "detectors": {"<i>knn": {"mean": metrics}, "[i]msp": {"mean": metrics}},
            "operating_point": {"detector": "[i]msp", "threshold": -1.5, "keep_id": 0.95, "val_images": 10,
                                "test_id_accepted": 0.9, "mean_ood_rejected": 0.8}}


def test_one_runs_report_prints_names_as_written():
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_results(one_run(), console)
    text = console.file.getvalue()
    assert "[bold]d[/bold]" in text and "[red]x[/red]" in text and "deployed: [i]msp score" in text
    assert "[i]msp " in text.split("every detector")[1]


# ---- plots ---------------------------------------------------------------------------------
PLOT_NAMES = ["$^$", "$x$", r"$\frac{$", "a$b", "_hidden"]  # bad mathtext raised; _ left the legend


@pytest.fixture()
def figures(monkeypatch) -> list:
    """Every figure a plot closes, kept open for inspection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed: list = []
    real = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: closed.append(fig))
    yield closed
    for fig in closed:
        real(fig)


def drawn(text) -> str:
    """What matplotlib draws for a Text: its string after mathtext handling; fails if it is mathtext."""
    shown, is_math = text._preprocess_math(text.get_text())
    assert not is_math, text.get_text()
    return shown


def test_plots_draw_names_as_written(tmp_path, figures):
    histograms = {n: {"in": [1, 2], "out": [2, 1], "edges": [0.0, 0.5, 1.0]} for n in PLOT_NAMES}
    plots.histogram_figure(histograms, 0.5, "$e$", tmp_path / "h.png")
    plots.gallery_figure(r"$\frac{$", torch.rand(4, 3, 8, 8), [0.9, 0.8, 0.2, 0.1], 0.5, tmp_path / "g.png")
    hist, gallery = figures
    axes = hist.axes[:len(PLOT_NAMES)]
    assert [drawn(ax.title) for ax in axes] == PLOT_NAMES
    assert [drawn(ax.get_legend().get_texts()[1]).strip() for ax in axes] == PLOT_NAMES
    assert drawn(axes[0].xaxis.label).startswith("$e$ score")
    assert drawn(gallery._suptitle).startswith(r"$\frac{$: most and least")


def test_lambda_plot_draws_names_as_written(hostile_sweep, figures):
    assert main([str(hostile_sweep), "--format", "csv"]) == 0
    (fig,) = figures
    labels = [drawn(t) for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"{DATA} · =Loss (scratch) [oe={MARKUP_OE}]", f"{DATA} · =Loss (scratch) [oe=tiny]"]


def test_the_sweep_summary_shows_job_names_and_errors_as_written():
    """A failed job's error names the user's paths and values: ``[/data/x]`` was rich markup (a crash at the
    end of a multirun), ``[bold]`` vanished."""
    from pathlib import Path

    from rich.console import Console

    from oe_lightning.sweep import summary_table

    entries = [{"job": "data:[bold]x[/bold]", "status": "failed", "mean_fpr95": None,
                "error": "paths.data_dir=[/data/x] does not exist"},
               {"job": "ok", "status": "done", "mean_fpr95": 0.5, "error": None}]
    console = Console(width=200, record=True)
    console.print(summary_table(entries, Path("/tmp/[red]sweep")))
    text = console.export_text()
    assert "data:[bold]x[/bold]" in text and "[/data/x]" in text and "/tmp/[red]sweep" in text
