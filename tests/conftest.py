"""Shared fixtures: running the CLI in a subprocess or in-process, and one tiny embedded λ sweep.

Wiring tests run tiny epochs (``TINY``: a few batches); tests that run the CLI as a user does, in
subprocesses, or train for real are marked ``slow`` (``pytest -m "not slow"`` skips them).
No test relies on a wall-clock limit: subprocesses get a generous safety timeout only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per pytest-xdist worker (and its subprocesses): two workers on two cores, not four
    # threads fighting over them (torch reads this when it is first imported)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")



@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_xdist_worker() -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)



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


# a few batches per epoch from a test-only preset (tests/conf/test/tiny.yaml): in a sweep, a job's
# directory name gains one short override ("+test:tiny")
TEST_CONF = REPO / "tests" / "conf"
TINY_CLI = (f"--config-dir={TEST_CONF}", "+test=tiny")
TINY_EVAL_CLI = (f"--config-dir={TEST_CONF}", "+test=tiny_eval")
# the same presets for in-process runs (compose has no --config-dir)
TINY = (f"hydra.searchpath=[file://{TEST_CONF}]", "+test=tiny")
TINY_EVAL = (f"hydra.searchpath=[file://{TEST_CONF}]", "+test=tiny_eval")
SAFETY_TIMEOUT = 1800  # only so that a hung process cannot hang CI; never reached by a working run


def run_cli(entry: str, *args: str, tmp_path: Path, timeout: int = SAFETY_TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run an entry point (``oe-train``, ``oe-eval``, ``oe-predict``, ``oe-export``, as ``python -m``)
    in ``tmp_path`` and capture its output."""
    module = {"oe-train": "oe_lightning.train", "oe-eval": "oe_lightning.evaluate",
              "oe-predict": "oe_lightning.predict", "oe-export": "oe_lightning.export"}[entry]
    return subprocess.run([sys.executable, "-m", module, *cli_order(args)], cwd=tmp_path,
                          env={**cli_env(tmp_path), **(env or {})}, capture_output=True, text=True, timeout=timeout)


def cli_order(args: tuple[str, ...] | list[str]) -> list[str]:
    """Hydra's flags (``--config-dir=...``) before the overrides, as its argument parser needs."""
    return [a for a in args if a.startswith("--")] + [a for a in args if not a.startswith("--")]


def results_files(root: Path) -> list[Path]:
    return sorted(root.rglob("results.json"))


@contextmanager
def hydra_job(config_name: str, overrides: list[str], run_dir: Path) -> Iterator[DictConfig]:
    """A composed config with Hydra's runtime set as ``hydra.main`` would (output dir, choices),
    for running :mod:`oe_lightning.runner` in-process; Hydra's state is cleared afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from oe_lightning.config import config_dir

    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.name = config_name
    run_dir.mkdir(parents=True, exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


def run_in_process(entry: str, run_dir: Path, *overrides: str, tiny: bool = True) -> Any:
    """``oe-train`` / ``oe-eval`` / ``oe-predict`` / ``oe-export`` in this process, through the entry
    point's own task function (user errors print one paragraph and exit 2, as on the command line);
    returns results.json's dict (training and evaluation). ``tiny`` adds the test-only presets
    :data:`TINY` (training) or :data:`TINY_EVAL` (evaluation)."""
    from oe_lightning import evaluate, export, predict, train

    config_name, task = {"oe-train": ("train", train._train), "oe-eval": ("eval", evaluate._evaluate),
                         "oe-predict": ("predict", predict._predict), "oe-export": ("export", export._export)}[entry]
    training = entry in ("oe-train", "oe-eval")
    extra = list(TINY if entry == "oe-train" else TINY_EVAL) if tiny and training else []
    own = [o for o in overrides if o.startswith("hydra.searchpath=[")]
    if extra and own:  # one search path override holding both (Hydra keeps only one)
        extra = extra[1:]
        overrides = tuple(o.replace("hydra.searchpath=[", f"hydra.searchpath=[file://{TEST_CONF},", 1)
                          if o in own else o for o in overrides)
    with hydra_job(config_name, [*(["logger=csv"] if training else []), *extra, *overrides], run_dir) as cfg:
        from oe_lightning.cli import report_user_errors

        returned = report_user_errors(task, cfg)
    results = run_dir / "results.json"
    return json.loads(results.read_text()) if results.exists() else returned


def train_in_process(run_dir: Path, *overrides: str, tiny: bool = True) -> dict:
    """``oe-train`` in this process (tiny epochs unless ``tiny=False``); returns the results dict."""
    return run_in_process("oe-train", run_dir, *overrides, tiny=tiny)


@pytest.fixture(scope="session")
def lambda_sweep(tmp_path_factory) -> dict:
    """``oe-train -m loss=uniform_ce,energy loss.lambda_oe=-1,0,0.5 logger=wandb`` on the embedded
    data (W&B offline, tiny epochs): the two λ = -1 jobs fail on bad input, the sweep runs the
    other four and exits 1. ``runs`` maps λ to the UniformCrossEntropy jobs, ``all`` lists every
    complete job."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "sweep"
    proc = run_cli("oe-train", "-m", "loss=uniform_ce,energy", "loss.lambda_oe=-1,0,0.5", "logger=wandb",
                   "trainer.max_epochs=2", *TINY_CLI, f"hydra.sweep.dir={sweep_dir}", tmp_path=tmp)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    everything = [{"dir": path.parent, "results": json.loads(path.read_text())} for path in results_files(sweep_dir)]
    runs = {r["results"]["config"]["lambda_oe"]: r for r in everything
            if r["results"]["config"]["loss"] == "UniformCrossEntropy"}
    return {"dir": sweep_dir, "runs": runs, "all": everything, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.fixture(scope="session")
def default_runs(tmp_path_factory) -> dict:
    """The default embedded experiment (30 epochs, every default), baseline and OE, seed 0, run
    in-process through oe-train's task function."""
    tmp = tmp_path_factory.mktemp("default")
    return {lam: {"dir": tmp / str(lam), "results": train_in_process(tmp / str(lam), f"loss.lambda_oe={lam}",
                                                                      tiny=False)}
            for lam in (0.0, 0.5)}
