"""oe-train / oe-eval as a user runs them.

The ``slow`` tests run the CLI in subprocesses (a tiny λ sweep with W&B offline, oe-eval on its
checkpoints) or train the default experiment for real. The others run the entry points' own task
functions in-process (:func:`tests.conftest.run_in_process`): same config, same error reporting
(one paragraph on stderr, exit code 2), without paying the imports of a new process per test.
"""

import json
import re

import pytest
import torch

from oe_lightning.models import SmallCNN
from oe_lightning.results import is_complete
from tests.conftest import TINY_EVAL_CLI, results_files, run_cli, run_in_process, train_in_process
from tests.wandb_offline import read_offline_run


# ---- the default experiment, for real ---------------------------------------------------------
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
    assert oe["scored"] == oe["test_set_sizes"] and is_complete(oe)
    assert oe["run"]["global_step"] == 30 * 9  # 30 epochs of 9 steps (1,132 training digits, batch 128)


@pytest.mark.slow
def test_oe_fine_tuning_starts_from_the_baseline_checkpoint(default_runs, tmp_path):
    baseline = default_runs[0.0]
    ckpt = baseline["dir"] / "checkpoints" / "last.ckpt"
    res = train_in_process(tmp_path / "tune", "experiment=digits_oe_tune", f"module.pretrained={ckpt}",
                           "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                           tiny=False)
    # 5 epochs from scratch reach ~90% accuracy; from the baseline's weights it stays high
    assert res["id_accuracy"] >= 0.95
    assert res["mean"]["fpr95"] < baseline["results"]["mean"]["fpr95"]
    assert res["config"]["pretrained"] == str(ckpt)


# ---- a λ sweep through the command line -----------------------------------------------------
@pytest.mark.slow
def test_each_sweep_job_has_its_own_directory_with_config_checkpoint_logs_and_results(lambda_sweep):
    runs = lambda_sweep["runs"]
    assert sorted(runs) == [0.0, 0.5, 1.0]
    assert len({run["dir"] for run in runs.values()}) == 3 and len(results_files(lambda_sweep["dir"])) == 3
    for lam, run in runs.items():
        d, res = run["dir"], run["results"]
        assert f"loss.lambda_oe:{lam}" in d.name.split("+") and "+test:tiny" in d.name
        assert (d / ".hydra" / "config.yaml").is_file()
        assert (d / "checkpoints" / "last.ckpt").is_file()
        metrics_csv = (d / "csv" / "metrics.csv").read_text()
        assert "train/loss_oe_epoch" in metrics_csv and "test/mean/fpr95" in metrics_csv
        assert is_complete(res) and res["config"]["lambda_oe"] == lam
        assert res["mean"]["fpr95"] == pytest.approx(sum(m["fpr95"] for m in res["ood"].values()) / 5)
        assert "Seed set to 0" in (d / "train.log").read_text()  # Lightning's messages reach the run's log


@pytest.mark.slow
def test_a_failing_sweep_job_is_reported_and_the_other_jobs_run(lambda_sweep):
    sweep = lambda_sweep["dir"]
    (error,) = sweep.rglob("error.txt")
    assert "lambda_oe:-1" in error.parent.name and "must be >= 0" in error.read_text()
    summary = {e["job"]: e for e in json.loads((sweep / "sweep_summary.json").read_text())}
    assert [summary[run["dir"].name]["status"] for run in lambda_sweep["runs"].values()] == ["done"] * 3
    assert summary[error.parent.name]["status"] == "failed"
    assert "must be >= 0" in summary[error.parent.name]["error"]
    assert "1 of 4 sweep jobs failed" in lambda_sweep["stderr"]


@pytest.mark.slow
def test_end_of_run_prints_a_results_table_without_third_party_noise(lambda_sweep):
    out, err = lambda_sweep["stdout"], lambda_sweep["stderr"]
    assert out.count("FPR95") >= 3 and "AUPR-Out" in out and "flower_crops" in out
    assert "ID accuracy" in out
    for noise in ("Tip:", "litlogger", "anonymous setting has no effect", "will be deleted"):
        assert noise not in out + err, noise


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
    proc = run_cli("oe-eval", f"ckpt_path={ckpt}", *TINY_EVAL_CLI, "hydra.run.dir=evalrun", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "evalrun" / "results.json").read_text())
    assert res["task"] == "eval" and res["config"]["lambda_oe"] == 0.5
    assert res["mean"] == pytest.approx(run["results"]["mean"], abs=1e-9)
    assert res["id_accuracy"] == pytest.approx(run["results"]["id_accuracy"])
    assert re.search(r"loaded \d+ weight tensors of SmallCNN from .*last.ckpt", proc.stdout)  # not silently


# ---- in-process: the entry points' task functions -------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    return run_dir, train_in_process(run_dir, "trainer.max_epochs=1")


def test_oe_eval_with_another_score_and_the_papers_fpr_rule(tiny_run, tmp_path):
    run_dir, trained = tiny_run
    res = run_in_process("oe-eval", tmp_path / "eval", f"ckpt_path={run_dir}/checkpoints/last.ckpt",
                         "score=energy", "fpr_rule=nearest")
    assert res["config"]["score"] == "Energy" and res["config"]["fpr_rule"] == "nearest"
    assert res["config"]["lambda_oe"] == trained["config"]["lambda_oe"]  # from the checkpoint
    assert res["id_accuracy"] == pytest.approx(trained["id_accuracy"])


def _user_error(capsys, entry, run_dir, *overrides) -> str:
    """Run in-process; assert exit code 2 and no traceback; return stderr as one line."""
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(entry, run_dir, *overrides)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("Error:")
    return " ".join(err.split())


def _assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    for fragment in fragments:
        assert fragment in err, err[-3000:]


def test_unknown_config_option_is_a_clean_error_before_any_heavy_import(tmp_path):
    proc = run_cli("oe-train", "trainer.max_epoch=3", tmp_path=tmp_path)
    _assert_clean_error(proc, "max_epoch")
    proc = run_cli("oe-train", "loss=focal", tmp_path=tmp_path)
    _assert_clean_error(proc, "loss/focal", "uniform_ce")


def test_negative_lambda_is_a_clean_error(capsys, tmp_path):
    err = _user_error(capsys, "oe-train", tmp_path / "run", "loss.lambda_oe=-1")
    assert "loss.lambda_oe must be >= 0" in err and "got -1" in err


def test_missing_checkpoints_are_clean_errors(capsys, tmp_path):
    err = _user_error(capsys, "oe-eval", tmp_path / "a", "ckpt_path=/no/such/last.ckpt")
    assert "/no/such/last.ckpt" in err and "does not exist" in err
    assert "/no/such/base.pt" in _user_error(capsys, "oe-train", tmp_path / "b", "module.pretrained=/no/such/base.pt")
    assert "/no/such/resume.ckpt" in _user_error(capsys, "oe-train", tmp_path / "c", "ckpt_path=/no/such/resume.ckpt")


def test_checkpoint_with_another_number_of_classes_is_a_clean_error(capsys, tmp_path):
    ckpt = tmp_path / "cifar100_like.pt"
    torch.save(SmallCNN(num_classes=100).state_dict(), ckpt)
    err = _user_error(capsys, "oe-train", tmp_path / "run", f"module.pretrained={ckpt}")
    assert "100 output classes but the data has 10" in err


def test_a_backbone_that_cannot_be_imported_names_pythonpath(capsys, tmp_path):
    err = _user_error(capsys, "oe-train", tmp_path / "run", "model=custom", "model._target_=no_such_pkg.Net")
    assert "no_such_pkg.Net" in err and "PYTHONPATH=." in err


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(capsys, tmp_path):
    # 3 steps an epoch (TINY): NaN logits from the 5th training forward, in the second epoch
    err = _user_error(capsys, "oe-train", tmp_path / "nanrun", "model._target_=tests.helpers.NaNAfterSteps",
                      "+model.nan_after=4", "trainer.max_epochs=5")
    assert "loss became nan at epoch 1" in err and "last good checkpoint" in err
    ckpt = tmp_path / "nanrun" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "nanrun" / "results.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_names_the_cpu_alternatives(capsys, tmp_path, trainer):
    err = _user_error(capsys, "oe-train", tmp_path / "run", f"trainer={trainer}")
    assert "needs a CUDA GPU, and this machine has none. Use trainer=cpu, or trainer=ddp_sim" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fast_dev_run_results_are_marked_partial_and_not_complete(tmp_path):
    res = train_in_process(tmp_path / "run", "debug=fdr")
    assert res["partial"] is True and not is_complete(res)
    assert res["scored"]["in"] == 128 and res["test_set_sizes"]["in"] == 539
