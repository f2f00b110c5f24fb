"""Sweeps end to end: datasets/losses × λ multiruns with W&B offline and oe-table, launchers
(submitit_local, joblib), the SLURM config mapping, Optuna, resumable and requeued jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from oe_lightning.config import config_dir
from tests.conftest import TINY_CLI, results_files, run_cli, train_in_process


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("oe-train", "-m", "hydra/launcher=submitit_local", "loss.lambda_oe=0,0.5",
                   "trainer.max_epochs=1", *TINY_CLI, "logger=none", f"hydra.sweep.dir={sweep}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(json.loads(f.read_text())["config"]["lambda_oe"] for f in results_files(sweep)) == [0, 0.5]
    assert list((sweep / ".submitit").iterdir())  # the jobs really went through submitit


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_with_dataloader_workers(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("oe-train", "-m", "hydra/launcher=local_parallel", "loss.lambda_oe=0,0.5",
                   "data.num_workers=1", "trainer.max_epochs=1", *TINY_CLI, "logger=none", f"hydra.sweep.dir={sweep}",
                   tmp_path=tmp_path)
    # loky's default start method cannot start DataLoader workers; the DataModule picks one that can
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(results_files(sweep)) == 2
    assert "Joblib.Parallel" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads other processes' environments in /proc")
def test_a_parallel_sweep_leaves_no_worker_process_behind(tmp_path):
    """joblib keeps idle workers for 300 s; they held the command's output open, so a caller reading it
    to its end (``| tee log``, a CI step) waited five minutes after the sweep was done."""
    import subprocess
    import sys
    import time
    import uuid

    from tests.conftest import cli_env, cli_order

    mark = uuid.uuid4().hex
    env = {**cli_env(tmp_path), "OE_TEST_PROCESS_MARK": mark}
    with open(tmp_path / "out.log", "w") as out:
        code = subprocess.call([sys.executable, "-m", "oe_lightning.train", *cli_order(
            ["-m", "hydra/launcher=local_parallel", "loss.lambda_oe=0,0.5", "trainer.max_epochs=1", *TINY_CLI,
             f"hydra.sweep.dir={tmp_path / 'sweep'}"])], cwd=tmp_path, env=env, stdout=out, stderr=out)
    assert code == 0, (tmp_path / "out.log").read_text()[-3000:]

    def marked() -> list[str]:
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if f"OE_TEST_PROCESS_MARK={mark}".encode() in environ.read_bytes():
                    found.append((environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
            except OSError:  # ended meanwhile, or not ours to read
                continue
        return found

    # resource trackers end within moments of the command; idle joblib workers stayed 300 s
    for _ in range(60):
        if not marked():
            break
        time.sleep(1)
    assert marked() == []


def test_slurm_ddp_launcher_maps_gpus_to_tasks_and_nodes():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm_ddp", "trainer=slurm", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.max_num_timeout > 0  # preempted / timed-out jobs are requeued
    assert cfg.trainer.strategy._target_ == "oe_lightning.distributed.HydraDDPStrategy"
    assert cfg.trainer.plugins[0].auto_requeue is False  # submitit requeues, not Lightning as well
    assert cfg.auto_resume is True  # ... and the requeued job resumes from its last.ckpt
    with initialize_config_dir(config_dir(), version_base="1.3"):
        one = compose("train", return_hydra_config=True, overrides=["hydra/launcher=slurm_1gpu", "trainer=gpu"])
    assert (one.hydra.launcher.tasks_per_node, one.hydra.launcher.gpus_per_node) == (1, 1)


@pytest.mark.slow
def test_optuna_searches_lambda_on_the_validation_metric(tmp_path):
    sweep = tmp_path / "search"
    proc = run_cli("oe-train", "hparams_search=optuna_lambda", "hydra.sweeper.n_trials=2",
                   "trainer.max_epochs=2", *TINY_CLI, "logger=none", f"hydra.sweep.dir={sweep}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads(f.read_text()) for f in results_files(sweep)]
    assert len(trials) == 2
    # the objective is the validation FPR95 (ID split vs held-out OE), never the OOD test sets
    assert best["best_value"] == pytest.approx(min(t["val"]["fpr95"] for t in trials), abs=1e-6)
    best_lambdas = [t["config"]["lambda_oe"] for t in trials if t["val"]["fpr95"] == pytest.approx(best["best_value"])]
    assert any(best["best_params"]["loss.lambda_oe"] == pytest.approx(lam) for lam in best_lambdas)
    assert 0.01 <= best["best_params"]["loss.lambda_oe"] <= 2.0
    assert "Best parameters" in proc.stdout + proc.stderr


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_an_interrupted_job_resumes_from_its_last_checkpoint_and_keeps_its_logs(tmp_path, caplog, capsys):
    run_dir = tmp_path / "run"
    first = train_in_process(run_dir, "trainer.max_epochs=1")
    assert first["run"]["global_step"] == 3  # TINY: 3 steps an epoch
    first_rows = [r for r in _csv_rows(run_dir) if r["epoch"] == "0"]
    assert first_rows and any(r.get("test/mean/fpr95") for r in _csv_rows(run_dir))
    (run_dir / "results.json").unlink()  # as if the job had been preempted before testing
    with caplog.at_level("INFO", logger="oe_lightning"):
        again = train_in_process(run_dir, "trainer.max_epochs=2")
    assert "resuming from" in caplog.text
    assert again["run"]["global_step"] == 6
    rows = _csv_rows(run_dir)
    # epoch 0's rows are kept as they were; then epoch 1, and one test (the first run's is replaced)
    assert [r for r in rows if r["epoch"] == "0"] == [{k: r.get(k, "") for k in rows[0]} for r in first_rows]
    assert {r["epoch"] for r in rows if r.get("train/loss_step")} == {"0", "1"}
    assert [r["epoch"] for r in rows if r.get("test/mean/fpr95")] == ["2"]  # one test, after epoch 1
    assert [float(r["step"]) for r in rows] == sorted(float(r["step"]) for r in rows)

    # the same directory with another λ: neither its results nor its checkpoint are taken as ours
    with pytest.raises(SystemExit):
        train_in_process(run_dir, "trainer.max_epochs=2", "loss.lambda_oe=0.1")
    assert "already holds a checkpoint of a different run (loss.lambda_oe: 0.5 there, 0.1 now" in \
        " ".join(capsys.readouterr().err.split())


def test_optuna_energy_search_composes_lambda_and_margin():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=["hparams_search=optuna_energy"])
    assert cfg.loss.fn._target_.endswith("EnergyMargin")
    assert set(cfg.hydra.sweeper.params) == {"loss.lambda_oe", "loss.fn.m_out"}
    assert cfg.optimized_metric == "val.fpr95"


@pytest.mark.parametrize("script,env", [
    ("reproduce_paper.sh cifar10", {"SCRATCH": "1", "CALIBRATION": "1", "SEEDS": "0,1"}),
    ("reproduce_paper.sh svhn", {}),
    ("reproduce_paper.sh nlp", {"SEEDS": "0,1"}),
    ("reproduce_paper.sh tiny_imagenet", {"LAUNCHER": "slurm_1gpu"}),
    ("sweep_lambda.sh", {}),
    ("search_lambda.sh", {}),
    ("reproduce_ablations.sh", {"DATA": "cifar100", "SEEDS": "0,1"}),
])
def test_recipe_scripts_compose_every_job_they_would_run(script, env, tmp_path):
    """Each oe-train command of a recipe (printed by DRY_RUN=1) composes, for every swept value."""
    import itertools
    import os
    import shlex
    import subprocess

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    name, *args = script.split()
    proc = subprocess.run(["bash", str(scripts / name), *args], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "OE_OUTPUT_DIR": str(tmp_path), **env})
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if line.startswith(("oe-train", "oe-eval"))]
    assert commands and any(line.startswith("oe-table") or line.startswith("cat")
                            for line in proc.stdout.splitlines())
    for command in commands:
        overrides = [a for a in command[1:] if a != "-m"]
        choices = [[f"{o.split('=', 1)[0]}={v}" for v in o.split("=", 1)[1].split(",")]
                   if "," in o and not o.startswith("hydra.") and "=[" not in o else [o] for o in overrides]
        for job in itertools.product(*choices):
            config_name = "eval" if command[0] == "oe-eval" else "train"
            with initialize_config_dir(config_dir(), version_base="1.3"):
                cfg = compose(config_name, overrides=list(job), return_hydra_config=True)
            if "experiment=paper/cifar10_oe_tune" in job:
                assert cfg.module.pretrained.endswith("baseline/seed_0/checkpoints/last.ckpt") or \
                    cfg.module.pretrained.endswith("baseline/seed_1/checkpoints/last.ckpt")


@pytest.mark.parametrize("args,message", [
    (["data.val_fraction=0"], "needs a validation split, but data.val_fraction=0"),
    (["loss.lambda_oe=0"], "loss.lambda_oe=0 loads no OE data"),
])
def test_a_validation_objective_the_run_cannot_produce_is_refused_before_training(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(tmp_path / "run", "optimized_metric=val.fpr95", *args)
    assert exit_info.value.code == 2 and message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained


def test_lambda_search_on_a_paper_preset_gets_a_validation_split():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper/cifar10_oe_tune", "module.pretrained=b.ckpt",
                                          "hparams_search=optuna_lambda"])
    assert cfg.data.val_fraction == 0.1 and cfg.optimized_metric == "val.fpr95"


def test_a_validation_ood_set_of_its_own_scores_even_the_baseline(tmp_path, capsys):
    extra = tmp_path / "my_conf" / "val_ood"
    extra.mkdir(parents=True)
    (extra / "val_noise.yaml").write_text(
        "_target_: oe_lightning.data.synthetic.noise\n_partial_: true\nkind: gaussian\nnum_samples: 101\n"
        "shape: ${data.image_shape}\nvalue_range: [0, 1]\nseed: 99\n")
    run_dir = tmp_path / "run"
    args = [f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "val_ood=val_noise", "loss.lambda_oe=0",
            "optimized_metric=val.fpr95", "trainer.max_epochs=1"]
    # Gaussian noise is also a test set: refused before any training
    with pytest.raises(SystemExit):
        train_in_process(run_dir, *args)
    assert "val_ood is configured like the OOD test set 'gaussian'" in " ".join(capsys.readouterr().err.split())
    assert not (run_dir / "checkpoints").exists()
    val = train_in_process(run_dir, *args, "~ood.gaussian")["val"]
    assert {"fpr95", "auroc", "acc"} <= set(val) and 0.0 <= val["fpr95"] <= 1.0


def test_tiny_imagenet_validation_ood_set_composes_for_cifar():
    from oe_lightning.building import build_datamodule

    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper/cifar10_oe_tune", "module.pretrained=b.ckpt",
                                          "val_ood=tiny_imagenet_val", "paths.data_dir=/data"])
    assert cfg.val_ood.root == "/data/tiny-imagenet-200/val" and cfg.val_ood.resize == 32
    assert build_datamodule(cfg, with_oe=True).val_ood_factory.keywords["name"] == "tiny_imagenet_val"


@pytest.mark.slow
def test_a_crashing_sweep_job_is_summarised_and_the_sweep_goes_on(tmp_path):
    """A job that crashes (a bug, not bad input) writes error.txt (the traceback goes to its log),
    the other job still runs, and the summary table and sweep_summary.json list both; exit 1."""
    import json

    from tests.conftest import TINY_CLI, run_cli

    sweep = tmp_path / "sweep"
    proc = run_cli("oe-train", "-m", "model=custom", "model._target_=tests.helpers.CrashingCNN", "+model.in_channels=1",
                   "+model.crash=true,false", "trainer.max_epochs=1", "logger=csv", *TINY_CLI,
                   f"hydra.sweep.dir={sweep}", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    summary = {e["job"].split("+model.crash:")[-1].split("+")[0].lower(): e
               for e in json.loads((sweep / "sweep_summary.json").read_text())}
    assert summary["true"]["status"] == "failed" and "crashed: RuntimeError: simulated bug" in summary["true"]["error"]
    assert summary["false"]["status"] == "done"
    assert "1 of 2 sweep jobs failed" in proc.stderr
