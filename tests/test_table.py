"""oe-table: grouping over seeds, the paper's numbers side by side, Markdown/LaTeX/CSV, the λ plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from oe_lightning.paper_results import PER_SET
from oe_lightning.run_groups import collect_runs, group_runs
from oe_lightning.table import main
from oe_lightning.table_content import comparisons
from oe_lightning.table_render import render_csv, render_latex

SETS = list(PER_SET["cifar10"]["baseline"])


def fake_results(root: Path, name: str, lambda_oe: float, seed: int, fpr: float, pretrained: str | None = None,
                 loss: str = "UniformCrossEntropy", complete: bool = True, oe: str = "tiny_images",
                 fpr_rule: str = "nearest", calibration: dict | None = None) -> None:
    """A results.json as oe-train writes it; every OOD set gets FPR ``fpr`` (fraction)."""
    ood = {s: {"fpr95": fpr, "auroc": 1 - fpr / 2, "aupr_in": 0.9, "aupr_out": 1 - fpr} for s in SETS}
    mean = {k: sum(m[k] for m in ood.values()) / len(ood) for k in ood[SETS[0]]}
    results = {"schema": 1, "id_accuracy": 0.95, "rms_calibration_error": 0.05, "ood": ood,
               "mean": mean if complete else {},
               "config": {"data": "cifar10", "oe": oe, "model": "oe_lightning.models.wrn_40_2", "loss": loss,
                          "lambda_oe": lambda_oe, "score": "MaxSoftmax", "seed": seed,
                          "pretrained": pretrained, "protocol": "paper", "fpr_rule": fpr_rule}}
    if calibration is not None:
        results["calibration"] = calibration
        results["config"]["val_size"] = 5000
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(results))


@pytest.fixture()
def paper_sweep(tmp_path) -> Path:
    for seed, fpr in ((0, 0.30), (1, 0.40)):
        fake_results(tmp_path / "baseline", f"seed_{seed}", 0.0, seed, fpr)
        fake_results(tmp_path / "oe_tune", f"seed_{seed}", 0.5, seed, fpr / 4, pretrained=f"b/seed_{seed}.ckpt")
    fake_results(tmp_path / "broken", "seed_0", 0.5, 0, 0.1, complete=False)
    return tmp_path


def test_seeds_become_mean_and_std_and_incomplete_runs_are_skipped(paper_sweep):
    runs, incomplete = collect_runs(paper_sweep)
    assert len(runs) == 4 and len(incomplete) == 1
    groups = group_runs(runs)
    assert [(g.method, len(g.runs)) for g in groups] == [("baseline", 2), ("oe_tune", 2)]
    mean, std = groups[0].stat(None, "fpr95")
    assert mean == pytest.approx(35.0) and std == pytest.approx(7.0710678)  # sample std of 30, 40


def test_comparison_sits_beside_the_papers_numbers_with_the_difference(paper_sweep):
    (title, header, rows), = comparisons(group_runs(collect_runs(paper_sweep)[0]))
    assert title == "cifar10: baseline vs UniformCrossEntropy λ=0.5 (tune), 2 seeds"
    assert header[:6] == ["OOD set", "FPR95 ↓ base", "FPR95 ↓ OE", "FPR95 ↓ paper base",
                          "FPR95 ↓ paper OE", "FPR95 ↓ Δ OE"]
    by_set = {row[0]: row for row in rows}
    assert list(by_set) == [*SETS, "mean"]
    # ours: 8.75 ± 1.77 on every set; the paper's OE tune on SVHN (Table 7, 1 decimal): FPR95 4.8 -> Δ +3.95
    assert by_set["svhn"][1:6] == ["35.00 ± 7.07", "8.75 ± 1.77", "28.8", "4.8", "+3.95"]
    assert by_set["mean"][3:6] == ["34.94", "9.50", "-0.75"]


def test_latex_and_csv_renderings(paper_sweep):
    groups = group_runs(collect_runs(paper_sweep)[0])
    latex = render_latex(groups)
    assert latex.count(r"\begin{tabular}") == 2 and r"35.00 $\pm$ 7.07" in latex and r"$\lambda$=0.5" in latex
    rows = list(csv.DictReader(io.StringIO(render_csv(groups))))
    svhn_oe = next(r for r in rows if r["method"] == "oe_tune" and r["ood_set"] == "svhn" and r["metric"] == "fpr95")
    assert float(svhn_oe["mean"]) == pytest.approx(8.75) and float(svhn_oe["paper"]) == 4.8
    assert float(svhn_oe["delta_vs_paper"]) == pytest.approx(3.95)
    assert int(svhn_oe["seeds"]) == 2


def test_only_the_papers_own_loss_is_compared_with_its_oe_numbers(tmp_path):
    fake_results(tmp_path, "base", 0.0, 0, 0.3)
    fake_results(tmp_path, "energy", 0.1, 0, 0.1, loss="EnergyMargin")
    (_, header, rows), = comparisons(group_runs(collect_runs(tmp_path)[0]))
    paper_oe, paper_base = header.index("FPR95 ↓ paper OE"), header.index("FPR95 ↓ paper base")
    assert all(row[paper_oe] == "" for row in rows)  # the energy loss is not the paper's OE
    assert rows[-1][paper_base] == "34.94"  # the MSP baseline still is the paper's baseline


def test_cli_writes_tables_and_a_lambda_plot_when_lambda_was_swept(tmp_path, capsys):
    for lam, fpr in ((0.0, 0.6), (0.1, 0.3), (0.5, 0.2)):
        fake_results(tmp_path, f"lam_{lam}", lam, 0, fpr)
    assert main([str(tmp_path), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("data,group,group_id,method,loss,lambda_oe")
    assert (tmp_path / "fpr95_vs_lambda.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cifar10 | baseline |" in (tmp_path / "table.md").read_text()


def test_oe_sources_are_separate_groups_labelled_by_source(tmp_path):
    fake_results(tmp_path, "base", 0.0, 0, 0.3, oe="tiny_images")
    fake_results(tmp_path, "tiny", 0.5, 0, 0.1, oe="tiny_images")
    fake_results(tmp_path, "300k", 0.5, 0, 0.2, oe="random_300k")
    labels = [g.label for g in group_runs(collect_runs(tmp_path)[0])]
    assert labels == ["baseline", "UniformCrossEntropy λ=0.5 (scratch) [oe=random_300k]",
                      "UniformCrossEntropy λ=0.5 (scratch) [oe=tiny_images]"]


def test_several_directories_make_one_table(paper_sweep, capsys):
    assert main([str(paper_sweep / "oe_tune"), str(paper_sweep / "baseline"), "--no-files"]) == 0
    out = capsys.readouterr().out
    assert "## cifar10: baseline vs UniformCrossEntropy λ=0.5 (tune), 2 seeds" in out
    assert not (paper_sweep / "oe_tune" / "table.md").exists()


def test_cli_errors_name_the_bad_directory(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no complete results.json" in capsys.readouterr().err


def test_terminal_rendering_fits_80_columns_with_every_number_whole(paper_sweep):
    from rich.console import Console

    from oe_lightning.table_render import print_terminal

    console = Console(record=True, width=80)
    print_terminal(group_runs(collect_runs(paper_sweep)[0]), console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing truncated
    assert "cifar10: baseline vs UniformCrossEntropy λ=0.5 (tune), 2 seeds · FPR95 ↓" in text
    svhn = next(line for line in text.splitlines() if "│ svhn " in line)  # the FPR95 table comes first
    cells = [c.strip() for c in svhn.split("│")[1:7]]
    assert cells == ["svhn", "35.00 ± 7.07", "8.75 ± 1.77", "28.8", "4.8", "+3.95"]
    assert text.count("│ svhn ") == 3  # one row in each metric's table


def test_fpr95_read_with_another_rule_or_a_mean_over_other_sets_is_not_compared_with_the_paper(tmp_path):
    for seed in (0, 1):
        fake_results(tmp_path / "b", f"s{seed}", 0.0, seed, 0.3, fpr_rule="first")
        fake_results(tmp_path / "t", f"s{seed}", 0.5, seed, 0.1, pretrained=f"b{seed}", fpr_rule="first")
    ((title, header, rows),) = comparisons(group_runs(collect_runs(tmp_path)[0]))
    assert "FPR95 read with rule 'first', not compared with the paper's 'nearest'" in title
    col = header.index("FPR95 ↓ paper OE")
    assert all(row[col] == "" for row in rows)  # no paper FPR95 next to a 'first'-rule number
    assert rows[0][header.index("AUROC ↑ paper OE")] == "99.6"  # AUROC does not depend on the rule

    sub = tmp_path / "subset"
    for seed in (0, 1):
        fake_results(sub / "b", f"s{seed}", 0.0, seed, 0.3)
        fake_results(sub / "t", f"s{seed}", 0.5, seed, 0.1, pretrained=f"b{seed}")
    for f in sub.rglob("results.json"):  # a suite without the paper's LSUN set
        res = json.loads(f.read_text())
        del res["ood"]["lsun"]
        f.write_text(json.dumps(res))
    ((title, header, rows),) = comparisons(group_runs(collect_runs(sub)[0]))
    assert "mean over other sets than the paper's: not compared" in title
    assert rows[-1][0] == "mean" and rows[-1][header.index("AUROC ↑ paper OE")] == ""


def test_an_energy_fine_tune_read_as_the_energy_paper_is_compared_with_its_mean(tmp_path):
    from oe_lightning.paper_results import ENERGY_SETS
    from oe_lightning.table_content import paper_numbers

    def energy_run(name, lam, pretrained, positive="in"):
        ood = {s: {"fpr95": 0.05, "auroc": 0.98, "aupr_in": 0.9, "aupr_out": 0.9} for s in ENERGY_SETS}
        res = {"schema": 1, "id_accuracy": 0.95, "rms_calibration_error": 0.05, "ood": ood, "mean": ood["svhn"],
               "config": {"data": "cifar10", "oe": "tiny_images", "model": "wrn_40_2", "loss": "EnergyMargin",
                          "lambda_oe": lam, "score": "Energy", "seed": 0, "pretrained": pretrained,
                          "protocol": "paper", "fpr_rule": "nearest", "positive": positive}}
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "results.json").write_text(json.dumps(res))

    energy_run("base", 0.0, None)
    energy_run("tune", 0.1, "b.ckpt")
    energy_run("tune_out", 0.1, "b.ckpt", positive="out")
    groups = group_runs(collect_runs(tmp_path)[0])
    tune = next(g for g in groups if g.lambda_oe > 0 and g.config["positive"] == "in")
    other = next(g for g in groups if g.lambda_oe > 0 and g.config["positive"] == "out")
    assert paper_numbers(tune, None, "fpr95") == 3.32  # wetliu/energy_ood README: Energy with fine-tune
    assert paper_numbers(other, None, "fpr95") is None  # OOD-positive FPR is another number
    assert paper_numbers(tune, "svhn", "fpr95") is None and paper_numbers(tune, None, "auroc") is None


def test_calibration_runs_are_tabulated_beside_the_papers_table_12(tmp_path, capsys):
    def calib(rms, tuned_on=5000):
        return {"temperature": 1.5, "temperature_tuned_on": tuned_on, "in": {"rms": 0.03},
                "mean": {"rms": rms, "mad": rms / 2, "soft_f1": 0.5}}

    for seed, rms in ((0, 0.19), (1, 0.21)):
        fake_results(tmp_path / "base", f"seed_{seed}", 0.0, seed, 0.3, calibration=calib(rms))
        fake_results(tmp_path / "tune", f"seed_{seed}", 0.5, seed, 0.1, pretrained="b.ckpt",
                     calibration=calib(rms / 2))
    fake_results(tmp_path / "untuned", "seed_0", 0.5, 0, 0.1, oe="other", calibration=calib(0.5, tuned_on=0))
    from oe_lightning.table_content import calibration_comparison

    ((title, header, rows),) = calibration_comparison(group_runs(collect_runs(tmp_path)[0]))
    assert "paper Table 12" in title and header[:3] == ["method", "RMS ↓ ours", "RMS ↓ paper"]
    by_method = {r[0].split(" ")[0]: r for r in rows}
    assert len(rows) == 2  # the run with T = 1 (nothing held out) is not a calibration run
    assert by_method["baseline"][1:3] == ["20.00 ± 1.41", "19.4"]  # Table 12, CIFAR-10, Temperature
    assert by_method["UniformCrossEntropy"][1:3] == ["10.00 ± 0.71", "9.3"]  # Table 12, CIFAR-10, +OE
    assert main([str(tmp_path), "--no-files"]) == 0
    assert "19.4" in capsys.readouterr().out


def test_training_method_by_detector_table(tmp_path, capsys):
    """Runs scored by several detectors give a method × detector table (means over the OOD sets)."""
    from oe_lightning.table_content import detector_matrix

    def with_detectors(path, fprs):
        res = json.loads(path.read_text())
        res["detectors"] = {d: {"ood": {}, "mean": {"fpr95": f, "auroc": 1 - f}} for d, f in fprs.items()}
        path.write_text(json.dumps(res))

    for seed, shift in ((0, 0.0), (1, 0.02)):
        fake_results(tmp_path / "base", f"s{seed}", 0.0, seed, 0.3)
        fake_results(tmp_path / "oe", f"s{seed}", 0.5, seed, 0.1, pretrained="b.ckpt")
        with_detectors(tmp_path / "base" / f"s{seed}" / "results.json", {"msp": 0.30 + shift, "knn": 0.20 + shift})
        with_detectors(tmp_path / "oe" / f"s{seed}" / "results.json", {"msp": 0.10 + shift, "knn": 0.12 + shift})
    ((title, header, rows),) = detector_matrix(group_runs(collect_runs(tmp_path)[0]))
    assert header == ["method", "msp", "knn"] and "training method × detector" in title
    assert rows[0] == ["baseline", "31.00 ± 1.41", "21.00 ± 1.41"]
    assert rows[1][1:] == ["11.00 ± 1.41", "13.00 ± 1.41"]
    assert main([str(tmp_path), "--no-files", "--format", "md"]) == 0
    assert "| baseline | 31.00 ± 1.41 | 21.00 ± 1.41 |" in capsys.readouterr().out


def test_groups_that_differ_only_in_a_nested_key_are_told_apart_in_every_format(tmp_path):
    """Two energy runs that differ only in loss.fn.m_out: the CSV carries each row's group label and
    group id (it used to give two groups identical columns), and table.md / table.tex name the key."""
    for m_out, fpr in ((-3, 0.2), (-5, 0.1)):
        fake_results(tmp_path, f"m{m_out}", 0.1, 0, fpr, loss="EnergyMargin")
        path = tmp_path / f"m{m_out}" / "results.json"
        results = json.loads(path.read_text())
        identity = {"data.name": "cifar10", "loss.lambda_oe": 0.1, "loss.fn.m_out": m_out, "seed": 0}
        results.update(identity=identity, group_id=f"g{-m_out}")
        path.write_text(json.dumps(results))
    groups = group_runs(collect_runs(tmp_path)[0])
    rows = list(csv.DictReader(io.StringIO(render_csv(groups))))
    mean_fpr = {(r["group"], r["group_id"]): float(r["mean"]) for r in rows
                if r["ood_set"] == "mean" and r["metric"] == "fpr95"}
    assert mean_fpr == {("EnergyMargin λ=0.1 (scratch) [loss.fn.m_out=-3]", "g3"): pytest.approx(20.0),
                        ("EnergyMargin λ=0.1 (scratch) [loss.fn.m_out=-5]", "g5"): pytest.approx(10.0)}
    assert main([str(tmp_path), "--format", "csv", "--out", str(tmp_path)]) == 0  # writes md, tex, csv
    for name in ("table.md", "table.tex", "table.csv"):
        text = (tmp_path / name).read_text()
        assert "m_out=-3" in text.replace(r"\_", "_") and "m_out=-5" in text.replace(r"\_", "_"), name
