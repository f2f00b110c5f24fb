"""The README's everyday commands run as printed, with tiny epochs appended.

Commands that need a process of their own (``-m`` sweeps, ``VAR=value`` prefixes such as
``PYTHONPATH=.``) run as subprocesses through the installed console script; the others run the
entry point's task function in-process with the same overrides.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    SAFETY_TIMEOUT,
    TINY_CLI,
    TINY_EVAL_CLI,
    cli_env,
    cli_order,
    results_files,
    run_in_process,
    train_in_process,
)

MY_NET = '''
import torch
from torch import nn


class MyNet(nn.Module):
    """A user's own backbone: only num_classes comes from the config, depth from +model.depth."""

    def __init__(self, num_classes: int, depth: int = 2):
        super().__init__()
        layers = [nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
'''


def everyday_commands() -> list[str]:
    """The command lines of the README's "Everyday commands" block (comments stripped)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Everyday commands\n.*?```bash\n(.*?)```", text, re.S).group(1)
    lines = []
    for line in block.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command and not command.startswith("#"):
            lines.append(command)
    return lines


def test_the_readme_lists_the_everyday_commands():
    commands = everyday_commands()
    assert len(commands) >= 10
    assert any("model=custom" in c for c in commands) and any(c.startswith("oe-eval") for c in commands)


def _run(command: str, cwd: Path, run_dir: Path | None, monkeypatch) -> tuple[list[Path], list[str]]:
    """Run a README command line in ``cwd`` (``RUN`` is a copy of ``run_dir``) with tiny epochs (one,
    or three to continue RUN's one); returns the results.json files it wrote and the overrides it ran."""
    env = cli_env(cwd)
    words = shlex.split(command)
    prefixed = False
    while "=" in words[0] and not words[0].startswith(("oe-", "-")):  # VAR=value prefixes
        key, value = words.pop(0).split("=", 1)
        env[key] = os.pathsep.join([value, str(REPO)]) if key == "PYTHONPATH" else value
        prefixed = True
    entry, args = words[0], words[1:]
    if run_dir is not None and any("RUN" in a for a in args):
        shutil.copytree(run_dir, cwd / "RUN")
        args = [a.replace("=RUN", f"={cwd / 'RUN'}") for a in args]
    if entry == "oe-train":  # a continued run needs more epochs than the one it continues
        args.append("trainer.max_epochs=3" if "hydra.run.dir=RUN" in command else "trainer.max_epochs=1")
    if prefixed or "-m" in args:
        tiny = TINY_CLI if entry == "oe-train" else TINY_EVAL_CLI
        extra = [*tiny, f"hydra.sweep.dir={cwd / 'sweep'}"]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            extra.append(f"hydra.run.dir={cwd / 'run'}")
        module = {"oe-train": "oe_lightning.train", "oe-eval": "oe_lightning.evaluate"}[entry]
        executable = [shutil.which(entry)] if shutil.which(entry) else [sys.executable, "-m", module]
        proc = subprocess.run([*executable, *cli_order([*args, *extra])], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=SAFETY_TIMEOUT)
        assert proc.returncode == 0, command + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    else:
        monkeypatch.chdir(cwd)
        out = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("hydra.run.dir=")), cwd / "run")
        run_in_process(entry, out, *[a for a in args if not a.startswith("hydra.run.dir=")])
    own = [p for p in results_files(cwd) if "hydra.run.dir=RUN" in command or (cwd / "RUN") not in p.parents]
    return own, [a for a in args if a != "-m"]


def _identity_of(entry: str, overrides: list[str]) -> dict:
    """The run identity the printed overrides compose to (what results.json must record)."""
    from hydra import compose, initialize_config_dir

    from oe_lightning.config import config_dir
    from oe_lightning.results import run_identity

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return run_identity(compose({"oe-train": "train", "oe-eval": "eval"}[entry],
                                    overrides=[o for o in overrides if not o.startswith("hydra.")]))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run directory (one tiny epoch) for the commands that name RUN."""
    run_dir = tmp_path_factory.mktemp("readme_run") / "run"
    train_in_process(run_dir, "trainer.max_epochs=1")
    return run_dir


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if ("-m " in c or c.startswith(
    "PYTHONPATH") or "resnet18" in c) else c for c in everyday_commands()])
def test_an_everyday_command_runs_as_printed(command, trained_run, tmp_path, monkeypatch):
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text(MY_NET)
    results, overrides = _run(command, tmp_path, trained_run, monkeypatch)
    assert results, f"{command}: no results.json"
    entry = next(w for w in shlex.split(command) if w.startswith("oe-"))
    default = _identity_of(entry, [])
    for path in results:
        res = json.loads(path.read_text())
        assert "mean" in res and res["test_set_sizes"]["in"] == 539
        # every printed override took effect: the run recorded the config those overrides compose to
        # (a swept key: this job's own value of it)
        swept = " -m " in f" {command} "
        job = [o.split("=")[0] + "=" + str(res["identity"][o.split("=")[0]]) if swept and "," in o else o
               for o in overrides]
        changed = {k: v for k, v in _identity_of(entry, job).items()
                   if default.get(k) != v and not k.startswith(("ckpt_path", "module.pretrained"))}
        assert changed or command.startswith(("oe-train logger=", "oe-train hydra.run.dir")), command
        assert {k: res["identity"].get(k) for k in changed} == changed, command
        if "model=custom" in command:
            assert res["config"]["model"] == "my_pkg.MyNet"
        if "debug=fdr" in command:
            assert res["partial"] is True
        if "tags=" in command:
            assert res["tags"] == ["first_try", "digits"]
        if "hydra.run.dir=RUN" in command:  # continued: 3 epochs of 3 steps, the first one's CSV rows kept
            assert res["run"]["global_step"] == 9
            assert (tmp_path / "RUN" / "csv" / "metrics.csv").read_text().count("\n0,") >= 1


def block_commands(heading: str) -> list[list[str]]:
    """The command lines of the first bash block under a README heading, continuations joined."""
    text = (REPO / "README.md").read_text()
    block = re.search(rf"{re.escape(heading)}\n.*?```bash\n(.*?)```", text, re.S).group(1)
    joined, lines = "", []
    for line in block.splitlines():
        code = line.split("  #", 1)[0].rstrip()
        if not code.strip():
            continue
        joined += code.rstrip("\\").strip() + " "
        if not code.endswith("\\"):
            lines.append(shlex.split(joined))
            joined = ""
    return lines


def own_classifier_commands() -> list[list[str]]:
    """The command lines of the README's "Use it on your own classifier" block, continuations joined."""
    return block_commands("## Use it on your own classifier")


@pytest.mark.slow
def test_the_own_classifier_block_runs_as_printed(tmp_path):
    """oe-demo, oe-train on the folders, oe-predict and oe-export, as printed (one epoch instead of ten),
    through the installed console scripts, in one folder as a user would."""
    commands = own_classifier_commands()
    assert [c[0] for c in commands] == ["oe-demo", "oe-train", "oe-predict", "oe-export"]
    env = cli_env(tmp_path)
    for words in commands:
        words = ["trainer.max_epochs=1" if w == "trainer.max_epochs=10" else w for w in words]
        executable = shutil.which(words[0])
        assert executable, f"{words[0]} is not installed as a console script"
        proc = subprocess.run([executable, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=SAFETY_TIMEOUT)
        assert proc.returncode == 0, " ".join(words) + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    assert len(list((tmp_path / "demo" / "digits" / "train").rglob("*.png"))) == 1258
    res = json.loads((tmp_path / "runs" / "digits_oe" / "results.json").read_text())
    assert res["config"]["data"] == "image_folder" and res["run"]["global_step"] > 0
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("path,predicted_class") and len(rows) == 201
    assert (tmp_path / "predictions.jsonl").is_file()
    assert (tmp_path / "export" / "digits.onnx").is_file() and (tmp_path / "export" / "digits.json").is_file()


@pytest.mark.slow
def test_the_near_far_benchmark_block_runs_as_printed(tmp_path):
    """The OE family sweep as printed (3 steps an epoch): a baseline, ≥ 6 methods fine-tuning it, and oe-table's
    method × detector × {near, far} table, each cell the run's own group mean."""
    commands = block_commands("## The OE family, near and far")
    assert [c[0] for c in commands] == ["oe-train", "oe-train", "oe-table"]
    methods = next(w for w in commands[1] if w.startswith("loss=")).split("=")[1].split(",")
    assert len(methods) >= 6
    env = cli_env(tmp_path)
    for words in commands:
        args = cli_order([*words[1:], *TINY_CLI]) if words[0] == "oe-train" else [*words[1:], "--format", "md"]
        proc = subprocess.run([shutil.which(words[0]), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=SAFETY_TIMEOUT)
        assert proc.returncode == 0, " ".join(words) + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    runs = [json.loads(p.read_text()) for p in results_files(tmp_path / "outputs" / "benchmark")]
    assert len(runs) == 1 + len(methods)
    assert all(r["ood_groups"] == {"near": ["rotated", "overlaid"],
                                   "far": ["flower_crops", "gaussian", "rademacher", "blobs", "uniform"]} for r in runs)
    table = proc.stdout.split("mean AUROC ↑ over each group's OOD sets")[1]
    header, _, *rows = [line for line in table.splitlines() if line.startswith("|")][: 2 + len(runs)]
    assert header.split(" | ")[1:3] == ["msp near", "msp far"] and "mahalanobis far" in header
    assert len(rows) == len(runs)
    mixoe = next(r for r in runs if r["config"]["loss"] == "MixOE")
    row = next(r for r in rows if r.startswith("| MixOE")).strip(" |").split(" | ")
    assert row[1:3] == [f"{100 * mixoe['detectors']['msp']['groups'][g]['auroc']:.2f}" for g in ("near", "far")]
    assert mixoe["identity"]["module.pretrained"].endswith("outputs/benchmark/baseline/checkpoints/last.ckpt")


@pytest.mark.slow
def test_the_text_benchmark_block_runs_as_printed_and_oe_lowers_the_fpr90(tmp_path):
    """The embedded text benchmark as printed, 2 epochs each (the README's numbers are 5): OE's mean FPR90 (MSP)
    is below the baseline's, and oe-table compares them in FPR90."""
    commands = block_commands("## Text classifiers")
    assert [c[0] for c in commands] == ["oe-train", "oe-train", "oe-table"]
    env = cli_env(tmp_path)
    for words in commands:
        args = [*words[1:], "trainer.max_epochs=2"] if words[0] == "oe-train" else [*words[1:], "--format", "md"]
        proc = subprocess.run([shutil.which(words[0]), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=SAFETY_TIMEOUT)
        assert proc.returncode == 0, " ".join(words) + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    base, oe = (json.loads((tmp_path / "outputs" / "text" / name / "results.json").read_text())
                for name in ("baseline", "oe"))
    assert list(oe["ood"]) == ["movie_plots", "speeches", "hamlet"] and oe["config"]["protocol"] == "paper_text"
    assert oe["mean"]["fpr90"] < base["mean"]["fpr90"] - 0.02  # measured: 0.7945 -> 0.7183 at 2 epochs
    assert "| mean | " in proc.stdout and "FPR90 ↓ base" in proc.stdout
    assert (tmp_path / "outputs" / "text" / "oe" / "plots" / "gallery_hamlet.md").is_file()
