"""End-to-end: oe-train / oe-eval as a user runs them (subprocesses, W&B offline).

Everything that imports the training stack in a subprocess is ``slow``; config typos are reported
before those imports, so their tests stay in the fast set.
"""

import json

import pytest
import torch

from oe_lightning.models import SmallCNN
from oe_lightning.results import is_complete
from tests.conftest import TINY, results_files, run_cli
from tests.wandb_offline import read_offline_run


@pytest.mark.slow
def test_default_benchmark_accuracy_and_oe_halves_the_baseline_fpr95(default_runs):
    """The README's claim for the default experiment (30 epochs): OE at least halves the mean FPR95."""
    assert sorted(default_runs) == [0.0, 0.5]
    baseline, oe = default_runs[0.0]["results"], default_runs[0.5]["results"]
    assert baseline["id_accuracy"] >= 0.95 and oe["id_accuracy"] >= 0.95
    assert oe["mean"]["fpr95"] <= 0.5 * baseline["mean"]["fpr95"], (baseline["mean"], oe["mean"])
    assert set(oe["ood"]) == {"flower_crops", "gaussian", "rademacher", "blobs", "uniform"}
    assert oe["test_set_sizes"] == {"in": 539, "flower_crops": 500, "gaussian": 500,
                                    "rademacher": 500, "blobs": 500, "uniform": 500}
    assert oe["run"]["global_step"] == 30 * 9  # 30 epochs of 9 steps (1,132 training digits, batch 128)


@pytest.mark.slow
def test_each_sweep_job_has_its_own_directory_with_config_checkpoint_logs_and_results(lambda_sweep):
    dirs = [run["dir"] for run in lambda_sweep["runs"].values()]
    assert len(set(dirs)) == 3 and len(results_files(lambda_sweep["dir"])) == 3
    for lam, run in lambda_sweep["runs"].items():
        d, res = run["dir"], run["results"]
        assert f"loss.lambda_oe:{lam}" in d.name.split("+")
        assert (d / ".hydra" / "config.yaml").is_file()
        assert (d / "checkpoints" / "last.ckpt").is_file()
        metrics_csv = (d / "csv" / "metrics.csv").read_text()
        assert "train/loss_oe_epoch" in metrics_csv and "test/mean/fpr95" in metrics_csv
        assert is_complete(res) and res["config"]["lambda_oe"] == lam
        assert res["mean"]["fpr95"] == pytest.approx(
            sum(m["fpr95"] for m in res["ood"].values()) / 5)


@pytest.mark.slow
def test_end_of_run_prints_a_results_table(lambda_sweep):
    out = lambda_sweep["stdout"]
    assert out.count("FPR95") >= 3 and "AUPR-Out" in out and "flower_crops" in out
    assert "ID accuracy" in out


@pytest.mark.slow
def test_wandb_offline_run_per_job_with_the_logged_metrics(lambda_sweep):
    for run in lambda_sweep["runs"].values():
        offline = list((run["dir"] / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, offline  # one run per job: finished between jobs
        logged = read_offline_run(offline[0])
        assert logged["exit_code"] == 0  # finished, so the next job starts a run of its own
        for name, metrics in run["results"]["ood"].items():
            assert logged["history"][f"test/{name}/auroc"] == pytest.approx(metrics["auroc"])
        assert logged["history"]["test/mean/fpr95"] == pytest.approx(run["results"]["mean"]["fpr95"])
        assert logged["config"]["loss.lambda_oe"] == run["results"]["config"]["lambda_oe"]


@pytest.mark.slow
def test_oe_eval_reproduces_the_training_results_from_the_checkpoint(lambda_sweep, tmp_path):
    run = lambda_sweep["runs"][0.5]
    ckpt = run["dir"] / "checkpoints" / "last.ckpt"
    proc = run_cli("oe-eval", f"ckpt_path={ckpt}", "hydra.run.dir=evalrun", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "evalrun" / "results.json").read_text())
    assert res["task"] == "eval" and res["config"]["lambda_oe"] == 0.5
    assert res["mean"] == pytest.approx(run["results"]["mean"], abs=1e-9)
    assert res["id_accuracy"] == pytest.approx(run["results"]["id_accuracy"])


@pytest.mark.slow
def test_oe_eval_with_another_score_and_the_papers_fpr_rule(lambda_sweep, tmp_path):
    ckpt = lambda_sweep["runs"][0.5]["dir"] / "checkpoints" / "last.ckpt"
    proc = run_cli("oe-eval", f"ckpt_path={ckpt}", "score=energy", "fpr_rule=nearest",
                   "hydra.run.dir=evalrun", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "evalrun" / "results.json").read_text())
    assert res["config"]["score"] == "Energy" and res["config"]["fpr_rule"] == "nearest"


def _assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    for fragment in fragments:
        assert fragment in err, err[-3000:]


def test_unknown_config_option_is_a_clean_error(tmp_path):
    proc = run_cli("oe-train", "trainer.max_epoch=3", tmp_path=tmp_path)
    _assert_clean_error(proc, "max_epoch")
    proc = run_cli("oe-train", "loss=focal", tmp_path=tmp_path)
    _assert_clean_error(proc, "loss/focal", "uniform_ce")


@pytest.mark.slow
def test_negative_lambda_is_a_clean_error(tmp_path):
    proc = run_cli("oe-train", "loss.lambda_oe=-1", tmp_path=tmp_path)
    assert proc.returncode == 2
    _assert_clean_error(proc, "loss.lambda_oe must be >= 0", "got -1")


@pytest.mark.slow
def test_missing_checkpoints_are_clean_errors(tmp_path):
    proc = run_cli("oe-eval", "ckpt_path=/no/such/last.ckpt", tmp_path=tmp_path)
    assert proc.returncode == 2
    _assert_clean_error(proc, "/no/such/last.ckpt", "does not exist")
    proc = run_cli("oe-train", "module.pretrained=/no/such/base.pt", tmp_path=tmp_path)
    assert proc.returncode == 2
    _assert_clean_error(proc, "/no/such/base.pt")
    proc = run_cli("oe-train", "ckpt_path=/no/such/resume.ckpt", tmp_path=tmp_path)
    assert proc.returncode == 2
    _assert_clean_error(proc, "/no/such/resume.ckpt")


@pytest.mark.slow
def test_checkpoint_with_another_number_of_classes_is_a_clean_error(tmp_path):
    ckpt = tmp_path / "cifar100_like.pt"
    torch.save(SmallCNN(num_classes=100).state_dict(), ckpt)
    proc = run_cli("oe-train", f"module.pretrained={ckpt}", tmp_path=tmp_path)
    assert proc.returncode == 2
    _assert_clean_error(proc, "100 output classes but the data has 10")


@pytest.mark.slow
def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    # 3 steps an epoch (TINY): NaN logits from the 5th training forward, in the second epoch
    proc = run_cli("oe-train", "model._target_=tests.helpers.NaNAfterSteps", "+model.nan_after=4",
                   "trainer.max_epochs=5", *TINY, "hydra.run.dir=nanrun", tmp_path=tmp_path)
    assert proc.returncode == 2
    _assert_clean_error(proc, "loss became nan at epoch 1", "last good checkpoint")
    ckpt = tmp_path / "nanrun" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "nanrun" / "results.json").exists()


@pytest.mark.slow
def test_oe_fine_tuning_starts_from_the_baseline_checkpoint(default_runs, tmp_path):
    baseline = default_runs[0.0]
    ckpt = baseline["dir"] / "checkpoints" / "last.ckpt"
    proc = run_cli("oe-train", "experiment=digits_oe_tune", f"module.pretrained={ckpt}",
                   "logger=none", "hydra.run.dir=tune", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "tune" / "results.json").read_text())
    # 5 epochs from scratch reach ~90% accuracy; from the baseline's weights it stays high
    assert res["id_accuracy"] >= 0.95
    assert res["mean"]["fpr95"] < baseline["results"]["mean"]["fpr95"]
    assert res["config"]["pretrained"] == str(ckpt)


@pytest.mark.slow
def test_a_failing_sweep_job_is_reported_and_the_other_jobs_run(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("oe-train", "-m", "loss.lambda_oe=-1,0", "trainer.max_epochs=1", *TINY, "logger=none",
                   f"hydra.sweep.dir={sweep}", tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]  # the sweep ran on but reports the failure
    (error,) = sweep.rglob("error.txt")
    assert "lambda_oe:-1" in error.parent.name and "must be >= 0" in error.read_text()
    (results,) = results_files(sweep)
    assert "lambda_oe:0" in results.parent.name
    summary = {e["job"]: e for e in json.loads((sweep / "sweep_summary.json").read_text())}
    assert summary[results.parent.name]["status"] == "done"
    assert summary[error.parent.name]["status"] == "failed"
    assert "must be >= 0" in summary[error.parent.name]["error"]
    assert "1 of 2 sweep jobs failed" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_names_the_cpu_alternatives(tmp_path, trainer):
    proc = run_cli("oe-train", f"trainer={trainer}", "logger=none", *TINY, f"hydra.run.dir={tmp_path / 'run'}",
                   tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "needs a CUDA GPU, and this machine has none. Use trainer=cpu, or trainer=ddp_sim" in \
        " ".join(proc.stderr.split())
