"""The README's everyday commands run as printed (with tiny epochs appended), each in a subprocess."""

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

from tests.conftest import REPO, SAFETY_TIMEOUT, TINY, cli_env, results_files

pytestmark = pytest.mark.slow

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


def _run(command: str, cwd: Path, run_dir: Path | None, sweep_dir: Path) -> subprocess.CompletedProcess:
    env = cli_env(cwd)
    words = shlex.split(command)
    while "=" in words[0] and not words[0].startswith(("oe-", "-")):  # VAR=value prefixes
        key, value = words.pop(0).split("=", 1)
        env[key] = value if key != "PYTHONPATH" else os.pathsep.join([value, str(REPO)])
    entry, args = words[0], words[1:]
    if run_dir is not None:
        args = [a.replace("RUN/", f"{run_dir}/") for a in args]
    extra = [*TINY, "hydra.sweep.dir=" + str(sweep_dir), "hydra.run.dir=" + str(cwd / "run")]
    if entry == "oe-train" and not any(a.startswith("trainer.max_epochs=") for a in args):
        extra.append("trainer.max_epochs=1")
    if entry == "oe-eval":
        extra = [e for e in extra if not e.startswith(("trainer.limit_train", "callbacks."))]
    executable = shutil.which(entry) or ""
    command_line = [executable] if executable else [sys.executable, "-m", f"oe_lightning.{entry[3:]}"]
    if entry == "oe-eval" and not executable:
        command_line = [sys.executable, "-m", "oe_lightning.evaluate"]
    return subprocess.run([*command_line, *args, *extra], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=SAFETY_TIMEOUT)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run directory for the commands that name RUN (tiny epochs)."""
    tmp = tmp_path_factory.mktemp("readme_run")
    proc = _run("oe-train trainer.max_epochs=2", tmp, None, tmp / "sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


@pytest.mark.parametrize("command", everyday_commands())
def test_an_everyday_command_runs_as_printed(command, trained_run, tmp_path):
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text(MY_NET)
    proc = _run(command, tmp_path, trained_run, tmp_path / "sweep")
    assert proc.returncode == 0, command + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    results = results_files(tmp_path)
    assert results, f"{command}: no results.json"
    for path in results:
        res = json.loads(path.read_text())
        assert "mean" in res and res["test_set_sizes"]["in"] == 539
        if "model=custom" in command:
            assert res["config"]["model"] == "my_pkg.MyNet"
        if "debug=fdr" in command:
            assert res["partial"] is True
