"""Shared fixtures: running the CLI in a subprocess, and one embedded λ sweep for many tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
        "WANDB_CONFIG_DIR": str(tmp_path / ".wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / ".wandb-cache"),
        "OE_OUTPUT_DIR": str(tmp_path / "outputs"), "PYTHONPATH": str(REPO),
        "HYDRA_FULL_ERROR": "0", "COLUMNS": "120",
    })
    env.pop("WANDB_API_KEY", None)
    return env


def run_cli(entry: str, *args: str, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``oe-train``/``oe-eval`` (as ``python -m``) in ``tmp_path`` and capture its output."""
    module = {"oe-train": "oe_lightning.train", "oe-eval": "oe_lightning.evaluate"}[entry]
    return subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def results_files(root: Path) -> list[Path]:
    return sorted(root.rglob("results.json"))


@pytest.fixture(scope="session")
def lambda_sweep(tmp_path_factory) -> dict:
    """The default embedded experiment, seed 0, swept over λ = 0, 0.5, 1.0 with W&B offline."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "sweep"
    proc = run_cli("oe-train", "-m", "loss.lambda_oe=0,0.5,1.0", "logger=wandb",
                   f"hydra.sweep.dir={sweep_dir}", tmp_path=tmp, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {}
    for path in results_files(sweep_dir):
        res = json.loads(path.read_text())
        runs[res["config"]["lambda_oe"]] = {"dir": path.parent, "results": res}
    return {"dir": sweep_dir, "runs": runs, "stdout": proc.stdout, "stderr": proc.stderr}
