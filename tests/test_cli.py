"""oe-train / oe-eval as a user runs them.

The ``slow`` tests run the CLI in subprocesses (a tiny λ sweep with W&B offline, oe-eval on its
checkpoints) or train the default experiment for real. The others run the entry points' own task
functions in-process (:func:`tests.conftest.run_in_process`): same config, same error reporting
(one paragraph on stderr, exit code 2), without paying the imports of a new process per test.
"""


import pytest
import torch

from oe_lightning.models import SmallCNN
from oe_lightning.results import is_complete
from tests.conftest import run_cli, run_in_process, train_in_process


# ---- in-process: the entry points' task functions -------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    return run_dir, train_in_process(run_dir, "trainer.max_epochs=1")


def test_oe_eval_with_another_score_and_the_papers_fpr_rule(tiny_run, tmp_path):
    run_dir, trained = tiny_run
    res = run_in_process("oe-eval", tmp_path / "eval", f"ckpt_path={run_dir}/checkpoints/last.ckpt",
                         "score=energy", "evaluation.fpr_rule=nearest")
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
    assert "loss.lambda_oe=-1 must be a number in [0, 1000]" in err


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
    assert "needs a CUDA GPU, and this machine has none; use trainer=cpu" in err and "trainer=ddp_sim" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fast_dev_run_results_are_marked_partial_and_not_complete(tmp_path):
    res = train_in_process(tmp_path / "run", "debug=fdr")
    assert res["partial"] is True and not is_complete(res)
    assert res["scored"]["in"] == 128 and res["test_set_sizes"]["in"] == 539
