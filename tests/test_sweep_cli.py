"""A λ × loss sweep through the command line (``oe-train -m``, W&B offline, tiny epochs) and what
is read back from it: job directories, the sweep summary, W&B runs, oe-table, oe-eval and DDP
evaluation of its checkpoints.

One file, so that pytest-xdist (``--dist loadfile``) builds the ``lambda_sweep`` fixture once.
"""

import json
import re

import numpy as np
import pytest

from oe_lightning.results import is_complete, read_results
from oe_lightning.table import main as oe_table
from tests.conftest import TINY_EVAL_CLI, results_files, run_cli, run_in_process
from tests.wandb_offline import read_offline_run

ODD_SIZES = ["ood.gaussian.num_samples=501", "ood.uniform.num_samples=333", "ood.blobs.num_samples=77"]


# ---- a λ sweep through the command line -----------------------------------------------------
@pytest.mark.slow
def test_each_sweep_job_has_its_own_directory_with_config_checkpoint_logs_and_results(lambda_sweep):
    assert sorted(lambda_sweep["runs"]) == [0.0, 0.5]
    jobs = lambda_sweep["all"]
    assert len({run["dir"] for run in jobs}) == 4 and len(results_files(lambda_sweep["dir"])) == 4
    for run in jobs:
        d, res = run["dir"], run["results"]
        assert f"loss.lambda_oe:{res['config']['lambda_oe']}" in d.name.split("+") and "+test:tiny" in d.name
        assert (d / ".hydra" / "config.yaml").is_file()
        assert (d / "checkpoints" / "last.ckpt").is_file()
        metrics_csv = (d / "csv" / "metrics.csv").read_text()
        assert "train/loss_oe_epoch" in metrics_csv and "test/mean/fpr95" in metrics_csv
        assert is_complete(res)
        assert res["mean"]["fpr95"] == pytest.approx(sum(m["fpr95"] for m in res["ood"].values()) / 5)
        assert "Seed set to 0" in (d / "train.log").read_text()  # Lightning's messages reach the run's log


@pytest.mark.slow
def test_a_failing_sweep_job_is_reported_and_the_other_jobs_run(lambda_sweep):
    sweep = lambda_sweep["dir"]
    errors = sorted(sweep.rglob("error.txt"))
    assert len(errors) == 2
    summary = {e["job"]: e for e in json.loads((sweep / "sweep_summary.json").read_text())}
    assert [summary[run["dir"].name]["status"] for run in lambda_sweep["all"]] == ["done"] * 4
    for error in errors:
        assert "lambda_oe:-1" in error.parent.name
        assert "must be a number in [0, 1000]" in " ".join(error.read_text().split())
        assert summary[error.parent.name]["status"] == "failed"
        assert "must be a number in [0, 1000]" in " ".join(summary[error.parent.name]["error"].split())
    assert "2 of 6 sweep jobs failed" in lambda_sweep["stderr"]


@pytest.mark.slow
def test_end_of_run_prints_a_results_table_without_third_party_noise(lambda_sweep):
    out, err = lambda_sweep["stdout"], lambda_sweep["stderr"]
    assert out.count("FPR95") >= 3 and "AUPR-Out" in out and "flower_crops" in out
    assert "ID accuracy" in out
    for noise in ("Tip:", "litlogger", "anonymous setting has no effect", "will be deleted"):
        assert noise not in out + err, noise


@pytest.mark.slow
def test_wandb_offline_run_per_job_with_the_logged_metrics(lambda_sweep):
    for run in lambda_sweep["all"]:
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


@pytest.mark.slow
def test_lambda_by_loss_sweep_logs_each_job_to_wandb_and_makes_a_table(lambda_sweep, capsys):
    sweep = lambda_sweep["dir"]
    jobs = {run["dir"].name: run["results"] for run in lambda_sweep["all"]}
    assert len(jobs) == 4

    runs = [read_offline_run(d) for d in sorted(sweep.glob("*/wandb/offline-run-*"))]
    assert len(runs) == 4  # one W&B run per job
    for run in runs:
        assert run["exit_code"] == 0
        assert run["run"]["group"] == "sweep" and run["run"]["job_type"] == "train"
        assert run["run"]["name"] in jobs  # named by the job's overrides, as its directory
        results = jobs[run["run"]["name"]]
        assert run["history"]["test/mean/fpr95"] == pytest.approx(results["mean"]["fpr95"], abs=1e-6)
        assert run["config"]["loss.lambda_oe"] == results["config"]["lambda_oe"]  # flat config
        assert results["config"]["oe"] == "china_crops" and results["config"]["ood"] == "digits_suite"
        table = run["tables"]["test/results_table"]
        assert table["columns"][:3] == ["ood_set", "fpr95", "auroc"]
        assert [row[0] for row in table["data"]] == [*results["ood"], "mean"]
        roc = run["tables"]["test/roc_table"]["data"]
        assert {r[0] for r in roc} == set(results["ood"]) and len(roc) <= 201 * len(results["ood"])
        hist = run["histograms"]["test/score_hist/gaussian/out"]
        assert sum(hist["values"]) == results["test_set_sizes"]["gaussian"]

    assert oe_table([str(sweep)]) == 0
    out = capsys.readouterr().out
    overview = [line for line in out.splitlines() if line.startswith("| digits |")]
    # λ = 0 under either loss is the same baseline (one row); each loss at λ = 0.5 is a row
    assert [line.split(" | ")[1] for line in overview] == [
        "baseline", "EnergyMargin λ=0.5 (scratch)", "UniformCrossEntropy λ=0.5 (scratch)"]
    assert "## digits: baseline vs EnergyMargin λ=0.5 (scratch)" in out
    for suffix in ("md", "tex", "csv"):
        assert (sweep / f"table.{suffix}").stat().st_size > 0
    assert (sweep / "fpr95_vs_lambda.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_ddp_evaluation_equals_single_process(lambda_sweep, tmp_path):
    """The paper protocol (sorted, subsampled scores: the strictest on how ranks' scores are gathered)
    under DDP on 2 CPU processes vs in-process on one; every sample is scored exactly once."""
    ckpt = lambda_sweep["runs"][0.5]["dir"] / "checkpoints" / "last.ckpt"
    detectors = "detector=[energy,mahalanobis,knn,vim,react,ash,odin]"
    proc = run_cli("oe-eval", "-m", f"ckpt_path={ckpt}", "trainer=ddp_sim", "evaluation.protocol=paper", *ODD_SIZES,
                   detectors, "logger=none", *TINY_EVAL_CLI, f"hydra.sweep.dir={tmp_path / 'ddp'}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_runs = {r["config"]["protocol"]: r for r in map(read_results, results_files(tmp_path / "ddp"))}
    assert sorted(ddp_runs) == ["paper"]
    for protocol, ddp in ddp_runs.items():
        single = run_in_process("oe-eval", tmp_path / protocol, f"ckpt_path={ckpt}", f"evaluation.protocol={protocol}",
                                *ODD_SIZES, detectors)
        # 539 ID test images and OOD sets of 501, 333 and 77: no size divides by 2, nothing is padded
        assert ddp["test_set_sizes"] == single["test_set_sizes"] == ddp["scored"]
        assert ddp["test_set_sizes"]["in"] == 539 and ddp["test_set_sizes"]["blobs"] == 77
        for name, metrics in single["ood"].items():
            for key, value in metrics.items():
                assert ddp["ood"][name][key] == pytest.approx(value, abs=1e-9), (protocol, name, key)
        assert ddp["id_accuracy"] == pytest.approx(single["id_accuracy"], abs=1e-9)
        assert ddp["rms_calibration_error"] == pytest.approx(single["rms_calibration_error"], abs=1e-9)
        # every detector, fitted on the gathered ID training features, scores every sample as on one process
        assert list(ddp["detectors"]) == ["msp", "energy", "mahalanobis", "knn", "vim", "react", "ash", "odin"]
        for det, res in single["detectors"].items():
            for key, value in res["mean"].items():
                assert ddp["detectors"][det]["mean"][key] == pytest.approx(value, abs=1e-9), (det, key)
        ddp_scores = np.load(results_files(tmp_path / "ddp")[0].parent / "scores.npz")
        one_scores = np.load(tmp_path / protocol / "scores.npz")
        assert sorted(ddp_scores) == sorted(one_scores) and "svhn/knn" not in one_scores
        for key in one_scores:  # per sample, in dataset order
            np.testing.assert_allclose(ddp_scores[key], one_scores[key], rtol=1e-9, atol=1e-9, err_msg=key)
