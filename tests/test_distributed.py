"""DDP on 2 CPU processes (gloo): exact evaluation, sharded training, one directory per sweep job."""

from __future__ import annotations

import json
import shlex

import pytest

from oe_lightning.distributed import config_source_args
from tests.conftest import REPO, TINY_CLI, results_files, run_cli

ODD_SIZES = ["ood.gaussian.num_samples=501", "ood.uniform.num_samples=333", "ood.blobs.num_samples=77"]


@pytest.mark.slow
def test_ddp_sweep_shards_both_loaders_keeps_one_directory_per_job_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "trainer=ddp_sim", "loss.lambda_oe=0.5", "trainer.max_epochs=1", *TINY_CLI,
            f"hydra.sweep.dir={sweep}"]
    proc = run_cli("oe-train", *args, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the default callbacks: rank 0 draws the progress bar, the other rank's (disabled) bar reads nothing
    assert "Testing" in proc.stdout and "Traceback" not in proc.stderr
    (f,) = results_files(sweep)
    # one directory per job, holding both ranks' logs; nothing written anywhere else
    assert [p.name for p in sweep.iterdir() if p.is_dir()] == [f.parent.name]
    assert not (tmp_path / "outputs").exists()
    res = json.loads(f.read_text())
    assert (f.parent / "train_rank1.log").is_file()
    run = res["run"]
    assert run["world_size"] == 2
    # 1132 ID training images: 566 per rank (5 batches of 128, 9 in one process); OE: 256 per rank and
    # step, so each rank draws 5 * 256 of the shared epoch stream; tiny epochs stop after 3 steps
    assert run["train_samples_per_rank"] == {"in": 566, "oe": 5 * 256}
    assert run["global_step"] == 3
    stamp = f.stat().st_mtime_ns

    again = run_cli("oe-train", *args, tmp_path=tmp_path)  # re-running the sweep skips the job
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("its results.json is complete") == 1
    assert f.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_the_readme_ddp_sim_command_runs_as_printed_with_the_default_callbacks(tmp_path):
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if "trainer=ddp_sim " in line)
    command = shlex.split(line.split("#", 1)[0])
    assert command == ["oe-train", "trainer=ddp_sim"]
    proc = run_cli(command[0], *command[1:], "trainer.max_epochs=1", *TINY_CLI, f"hydra.run.dir={tmp_path / 'run'}",
                   tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "AssertionError" not in proc.stderr
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["run"]["world_size"] == 2
    # progress bar, model summary, config tree and plots were all there, as a user gets them
    assert "Epoch 0/0" in proc.stdout and "Testing" in proc.stdout and "Total params" in proc.stdout
    assert (tmp_path / "run" / "config_tree.log").is_file()
    assert (tmp_path / "run" / "plots" / "score_histograms.png").is_file()


def test_children_recreate_the_jobs_config_sources():
    from omegaconf import OmegaConf

    hydra_cfg = OmegaConf.create({"job": {"config_name": "train"}, "runtime": {"config_sources": [
        {"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
        {"path": "/site/oe_lightning/conf", "schema": "file", "provider": "main"},
        {"path": "/my/conf", "schema": "file", "provider": "command-line"}]}})
    assert config_source_args(hydra_cfg) == ["--config-path=/site/oe_lightning/conf", "--config-dir=/my/conf",
                                             "--config-name=train"]


def test_a_rank_of_a_sweep_job_is_started_as_a_single_run_of_that_job(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from oe_lightning.config import config_dir
    from oe_lightning.distributed import child_command, set_entry_module

    overrides = ["hparams_search=optuna_lambda", "trainer=ddp_sim", "loss.lambda_oe=0.3"]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "job")
        cfg.hydra.job.config_name = "train"
    HydraConfig.instance().set_config(cfg)
    try:
        set_entry_module("oe_lightning.train")
        command = child_command(1)
    finally:  # other tests run without a Hydra job
        HydraConfig.instance().cfg = None
    assert command[1:3] == ["-m", "oe_lightning.train"] and "-m" not in command[3:]
    assert [a for a in command if a in overrides] == overrides  # the job's own values
    # its directory, no config copy of its own, and never a sweep (optuna_lambda sets MULTIRUN)
    assert f'hydra.run.dir="{tmp_path / "job"}"' in command and "hydra.output_subdir=null" in command
    assert command.index("hydra.mode=RUN") > command.index("hparams_search=optuna_lambda")
    assert any(a.startswith("--config-path=") for a in command) and "--config-name=train" in command
