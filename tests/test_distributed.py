"""DDP on 2 CPU processes (gloo): exact evaluation, sharded training, one directory per sweep job."""

from __future__ import annotations

import json

import pytest

from oe_lightning.distributed import config_source_args
from oe_lightning.results import read_results
from tests.conftest import TINY_EVAL_CLI, results_files, run_cli, run_in_process

ODD_SIZES = ["ood.gaussian.num_samples=501", "ood.uniform.num_samples=333", "ood.blobs.num_samples=77"]


@pytest.mark.slow
def test_ddp_evaluation_equals_single_process(lambda_sweep, tmp_path):
    """Both protocols under DDP (one oe-eval sweep, 2 CPU processes per job) vs in-process, single."""
    ckpt = lambda_sweep["runs"][0.5]["dir"] / "checkpoints" / "last.ckpt"
    proc = run_cli("oe-eval", "-m", f"ckpt_path={ckpt}", "trainer=ddp_sim", "protocol=full,paper", *ODD_SIZES,
                   "logger=none", *TINY_EVAL_CLI, f"hydra.sweep.dir={tmp_path / 'ddp'}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_runs = {r["config"]["protocol"]: r for r in map(read_results, results_files(tmp_path / "ddp"))}
    assert sorted(ddp_runs) == ["full", "paper"]
    for protocol, ddp in ddp_runs.items():
        single = run_in_process("oe-eval", tmp_path / protocol, f"ckpt_path={ckpt}", f"protocol={protocol}",
                                *ODD_SIZES)
        # 539 ID test images and OOD sets of 501, 333 and 77: no size divides by 2, nothing is padded
        assert ddp["test_set_sizes"] == single["test_set_sizes"] == ddp["scored"]
        assert ddp["test_set_sizes"]["in"] == 539 and ddp["test_set_sizes"]["blobs"] == 77
        for name, metrics in single["ood"].items():
            for key, value in metrics.items():
                assert ddp["ood"][name][key] == pytest.approx(value, abs=1e-9), (protocol, name, key)
        assert ddp["id_accuracy"] == pytest.approx(single["id_accuracy"], abs=1e-9)
        assert ddp["rms_calibration_error"] == pytest.approx(single["rms_calibration_error"], abs=1e-9)


@pytest.mark.slow
def test_ddp_sweep_shards_both_loaders_keeps_one_directory_per_job_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "trainer=ddp_sim", "loss.lambda_oe=0,0.5", "trainer.max_epochs=1", "logger=none",
            "callbacks.progress_bar=null", "print_config=false", f"hydra.sweep.dir={sweep}"]
    proc = run_cli("oe-train", *args, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = results_files(sweep)
    assert len(files) == 2
    # one directory per job, each holding both ranks' logs; nothing written anywhere else
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(f.parent.name for f in files)
    assert not (tmp_path / "outputs").exists()
    for f in files:
        res = json.loads(f.read_text())
        assert (f.parent / "train_rank1.log").is_file()
        run = res["run"]
        assert run["world_size"] == 2
        # 1132 ID training images: 566 per rank, 5 steps of 128 (9 in one process); OE: 256 per
        # rank and step, so each rank draws 5 * 256 of the shared epoch stream
        assert run["train_samples_per_rank"]["in"] == 566
        assert run["global_step"] == 5
        if res["config"]["lambda_oe"] > 0:
            assert run["train_samples_per_rank"]["oe"] == 5 * 256
        else:
            assert "oe" not in run["train_samples_per_rank"]
    stamps = {f: f.stat().st_mtime_ns for f in files}

    again = run_cli("oe-train", *args, tmp_path=tmp_path)  # re-running the sweep skips both jobs
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("its results.json is complete") == 2
    assert {f: f.stat().st_mtime_ns for f in files} == stamps


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
