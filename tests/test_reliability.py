"""Bad input is refused before any work, with one paragraph naming it; checkpoints are data, never code."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
import torch

from oe_lightning.table import main as oe_table
from tests.conftest import run_in_process, train_in_process


def _refused(capsys, entry, run_dir, *overrides) -> str:
    """Run in-process: exit code 2, no traceback, nothing trained; stderr as one line."""
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(entry, run_dir, *overrides)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().startswith("Error:"), err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()
    return " ".join(err.split())


# (overrides, what the message must name): each refused before any data is read
BAD_TRAIN_CONFIGS = [
    (["data.oe_batch_size=-5"], "data.oe_batch_size=-5"),
    (["data.oe_batch_size=0"], "data.oe_batch_size=0"),  # used to become 2 x batch size silently
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0"),
    (["seed=abc"], "seed='abc'"),
    (["data.num_workers=-1"], "data.num_workers=-1"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["module.optimizer.lr=-1"], "module.optimizer.lr=-1"),
    (["module.optimizer.lr=0"], "module.optimizer.lr=0"),
    (["module.optimizer.momentum=1.5"], "module.optimizer.momentum=1.5"),
    (["module.optimizer.weight_decay=-0.1"], "module.optimizer.weight_decay=-0.1"),
    (["evaluation.recall=1.5"], "evaluation.recall=1.5"),
    (["evaluation.recall=0"], "evaluation.recall=0"),
    (["evaluation.protocol=bogus"], "evaluation.protocol='bogus'"),
    (["evaluation.num_to_avg=0"], "evaluation.num_to_avg=0"),
    (["evaluation.fpr_rule=last"], "evaluation.fpr_rule='last'"),
    (["evaluation.positive=both"], "evaluation.positive='both'"),
    (["loss.lambda_oe=abc"], "loss.lambda_oe='abc'"),
    (["loss.lambda_oe=-1"], "loss.lambda_oe=-1"),
    (["data.val_fraction=1.0"], "data.val_fraction=1.0"),
    (["data.val_split=last"], "data.val_split='last'"),
    (["data.val_size=-3"], "data.val_size=-3"),
    (["module.pretrained=/no/such/base.pt"], "/no/such/base.pt"),
    (["ckpt_path=/no/such/resume.ckpt"], "/no/such/resume.ckpt"),
    (["score=energy", "score.temperature=0"], "score.temperature=0"),
    (["detector=[knn]", "detector.knn.k=0"], "detector.knn.k=0"),
    (["detector=[react]", "detector.react.percentile=90"], "detector.react.percentile=90"),
    (["detector=[odin]", "detector.odin.eps=-1"], "detector.odin.eps=-1"),
    (["oe=tiny_images", "oe.exclude_file=/no/such/idxs.txt"], "/no/such/idxs.txt"),
]


@pytest.mark.parametrize("overrides,named", BAD_TRAIN_CONFIGS, ids=[" ".join(o) for o, _ in BAD_TRAIN_CONFIGS])
def test_a_bad_value_is_refused_before_any_work_naming_key_and_value(capsys, tmp_path, overrides, named):
    err = _refused(capsys, "oe-train", tmp_path / "run", *overrides)
    assert named in err and "must be" in err


def test_every_problem_is_reported_at_once(capsys, tmp_path):
    err = _refused(capsys, "oe-train", tmp_path / "run", "seed=abc", "trainer.max_epochs=-1",
                   "evaluation.recall=2", "loss.lambda_oe=-1")
    assert "The config has 4 problems" in err
    for named in ("seed='abc'", "trainer.max_epochs=-1", "evaluation.recall=2", "loss.lambda_oe=-1"):
        assert named in err


@pytest.mark.parametrize("overrides,named", [
    (["evaluation.recall=2"], "evaluation.recall=2"),
    (["evaluation.protocol=bogus"], "evaluation.protocol='bogus'"),
    (["ckpt_path=/no/such/last.ckpt"], "/no/such/last.ckpt"),
])
def test_oe_eval_refuses_bad_values_before_scoring(capsys, tmp_path, overrides, named):
    assert named in _refused(capsys, "oe-eval", tmp_path / "run", *overrides)


# ---- checkpoints are data --------------------------------------------------------------------
class _TouchOnLoad:
    """Unpickling this creates a file: what a weights-only load must refuse."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train_in_process(run_dir, "trainer.max_epochs=1")
    return run_dir / "checkpoints" / "last.ckpt"


def test_a_checkpoint_whose_unpickling_runs_code_is_refused_by_every_load_path(capsys, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _TouchOnLoad(marker)}, evil)
    for entry, override in (("oe-train", f"ckpt_path={evil}"), ("oe-train", f"module.pretrained={evil}"),
                            ("oe-eval", f"ckpt_path={evil}")):
        err = _refused(capsys, entry, tmp_path / entry / override.split("=")[0], override)
        assert str(evil) in err and "could not be read as weights" in err
    assert not marker.exists()


@pytest.mark.parametrize("model_config", [
    {"_target_": "shutil.copyfile", "src": "SRC", "dst": "MARKER"},
    {"_target_": "oe_lightning.models.SmallCNN", "num_classes": 10, "in_channels": 1,
     "width": {"_target_": "shutil.copyfile", "src": "SRC", "dst": "MARKER"}},
    {"_target_": "oe_lightning.models.SmallCNN", "num_classes": 10, "_args_": ["SRC"]},
    {"_target_": "oe_lightning.models.SmallCNN", "num_classes": 10, "width": "${oc.env:HOME}"},
], ids=["file-writing target", "nested target", "positional args", "interpolation"])
def test_a_checkpoint_naming_code_in_its_model_config_is_refused_and_runs_nothing(capsys, tmp_path, trained,
                                                                                 model_config):
    marker = tmp_path / "copied"
    text = json.dumps(model_config).replace("SRC", str(trained)).replace("MARKER", str(marker))
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["oe_lightning"]["model_config"] = json.loads(text)
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    err = _refused(capsys, "oe-eval", tmp_path / "eval", f"ckpt_path={evil}")
    assert "stores a model config that is not plain data" in err and "never chooses what code runs" in err
    assert not marker.exists()


def test_a_trusted_factory_can_be_allowed_by_the_config_never_by_the_file(capsys, tmp_path, trained):
    checkpoint = torch.load(trained, weights_only=True)
    assert checkpoint["oe_lightning"]["model_config"]["_target_"] == "oe_lightning.models.SmallCNN"
    res = run_in_process("oe-eval", tmp_path / "eval", f"ckpt_path={trained}")  # an allowed factory
    training = json.loads((trained.parent.parent / "results.json").read_text())
    assert res["id_accuracy"] == training["id_accuracy"]  # the same model, rebuilt from plain data
    # a factory of the user's own (same weights): refused until the config, not the file, allows it
    checkpoint["oe_lightning"]["model_config"]["_target_"] = "tests.helpers.CrashingCNN"
    own = tmp_path / "own.ckpt"
    torch.save(checkpoint, own)
    err = _refused(capsys, "oe-eval", tmp_path / "refused", f"ckpt_path={own}")
    assert "+model_allowlist=[tests.helpers.CrashingCNN]" in err
    allowed = run_in_process("oe-eval", tmp_path / "allowed", f"ckpt_path={own}",
                             "+model_allowlist=[tests.helpers.CrashingCNN]")
    assert allowed["id_accuracy"] == training["id_accuracy"]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"], ids=["empty", "garbage",
                                                                                         "truncated"])
def test_unreadable_checkpoints_are_named_for_every_load_path(capsys, tmp_path, trained, content):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(trained.read_bytes()[:2000] if content == "truncated" else content)
    for entry, override in (("oe-train", f"ckpt_path={bad}"), ("oe-train", f"module.pretrained={bad}"),
                            ("oe-eval", f"ckpt_path={bad}")):
        err = _refused(capsys, entry, tmp_path / entry / override.split("=")[0], override)
        assert str(bad) in err


# ---- results files ----------------------------------------------------------------------------
def test_oe_table_skips_malformed_results_naming_them_and_prints_the_rest(tmp_path, capsys, trained):
    good = trained.parent.parent / "results.json"
    shutil.copytree(good.parent, tmp_path / "good", ignore=shutil.ignore_patterns("checkpoints", "*.npz"))
    bad = {"list": [1, 2], "no_config": {k: v for k, v in json.loads(good.read_text()).items() if k != "config"},
           "string_mean": {**json.loads(good.read_text()), "mean": {"fpr95": "high"}}, "not_json": "{"}
    for name, content in bad.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(content if isinstance(content, str) else json.dumps(content))
    assert oe_table([str(tmp_path), "--no-files", "--format", "md"]) == 0
    out, err = capsys.readouterr()
    assert "| baseline" in out or "UniformCrossEntropy" in out
    assert "4 incomplete results.json skipped" in err and "string_mean/results.json" in err


# ---- resume = uninterrupted ------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_killed_mid_epoch_and_resumed_ends_exactly_as_the_uninterrupted_run(tmp_path):
    """SIGKILL in the middle of the second epoch, then the same command again (auto_resume from the
    last epoch's checkpoint): the same ID and OE batches, augmentations and dropout masks are drawn
    (each a function of seed, epoch and index), so every metric and weight equals the run that was
    never interrupted, to the last bit."""
    import numpy as np

    from tests.conftest import TINY_CLI, run_cli

    common = ("trainer.max_epochs=3", "logger=csv", "model.dropout=0.3", *TINY_CLI,
              "+callbacks.kill._target_=tests.helpers.KillAtStep")
    straight = run_cli("oe-train", *common, f"hydra.run.dir={tmp_path / 'straight'}", tmp_path=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run_cli("oe-train", *common, f"hydra.run.dir={tmp_path / 'killed'}", tmp_path=tmp_path,
                     env={"OE_TEST_KILL_AT": "5"})  # mid-epoch 2 (3 steps an epoch)
    assert killed.returncode == -9 and not (tmp_path / "killed" / "results.json").exists()
    resumed = run_cli("oe-train", *common, f"hydra.run.dir={tmp_path / 'killed'}", tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    b = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert b["run"]["global_step"] == a["run"]["global_step"] == 9
    assert b["ood"] == a["ood"] and b["mean"] == a["mean"] and b["id_accuracy"] == a["id_accuracy"]
    wa = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = np.load(tmp_path / "straight" / "scores.npz"), np.load(tmp_path / "killed" / "scores.npz")
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


# ---- bad data files: named on open, before training ------------------------------------------
@pytest.mark.parametrize("shape,dtype,named", [
    ((20, 32, 32), "uint8", "shape (20, 32, 32)"),                   # grey, no channel axis
    ((20, 32, 32, 1), "uint8", "(N, H, W, 3) uint8"),                # one channel
    ((20, 3, 32, 32), "uint8", "It looks channel-first"),           # CHW layout
    ((20, 32, 32, 3), "float32", "holds a float32 array"),
])
def test_an_oe_array_of_the_wrong_shape_or_type_is_refused_on_open(capsys, tmp_path, shape, dtype, named):
    import numpy as np

    np.save(tmp_path / "oe.npy", np.zeros(shape, dtype))
    err = _refused(capsys, "oe-train", tmp_path / "run", "oe=random_300k", f"oe.path={tmp_path / 'oe.npy'}")
    assert named in err and "oe.npy" in err


def test_a_tiny_images_binary_of_a_partial_size_is_refused_on_open(capsys, tmp_path):
    (tmp_path / "tiny_images.bin").write_bytes(bytes(3072 * 5 + 100))
    (tmp_path / "idx.txt").write_text("1\n")
    err = _refused(capsys, "oe-train", tmp_path / "run", "oe=tiny_images", f"oe.path={tmp_path / 'tiny_images.bin'}",
                   f"oe.exclude_file={tmp_path / 'idx.txt'}")
    assert "15,460 bytes, not a whole number of 3,072-byte" in err


def test_auto_resume_past_an_unreadable_last_checkpoint(capsys, caplog, tmp_path, trained):
    """A last.ckpt left unreadable (a kill while writing, a full disk): auto_resume says so and uses
    the newest readable checkpoint beside it; with none, it names the file and the ways out."""
    import logging

    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copy(trained, ckpts / "epoch000.ckpt")
    (ckpts / "last.ckpt").write_bytes(trained.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="oe_lightning"):
        res = train_in_process(run, "trainer.max_epochs=2")
    assert "resuming from the previous good checkpoint" in caplog.text and "epoch000.ckpt" in caplog.text
    assert res["run"]["global_step"] == 6  # epoch 0 from the checkpoint, then epoch 1 (3 steps each)
    alone = tmp_path / "alone"
    (alone / "checkpoints").mkdir(parents=True)
    (alone / "checkpoints" / "last.ckpt").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(SystemExit):
        train_in_process(alone, "trainer.max_epochs=2")
    err = " ".join(capsys.readouterr().err.split())
    assert "last.ckpt, which cannot be read, and no other readable checkpoint" in err and "auto_resume=false" in err


def test_a_sweep_refuses_bad_fixed_values_before_its_sweeper_or_any_job_starts(tmp_path):
    """An Optuna search reads seed when its sampler is built, before any job: bad fixed values are
    refused there too, in one paragraph (exit 2, no traceback); swept values stay per job."""
    from tests.conftest import run_cli

    proc = run_cli("oe-train", "seed=abc", "trainer.max_epochs=-1", "hparams_search=optuna_lambda",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", tmp_path=tmp_path)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "seed='abc' must be an integer" in err and "trainer.max_epochs=-1 must be an integer >= 1" in err
    assert not (tmp_path / "sweep").exists()
