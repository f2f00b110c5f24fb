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
    (["callbacks.step_checkpoint.every_n_steps=0"], "callbacks.step_checkpoint.every_n_steps=0"),
    (["loss.lambda_oe=inf"], "loss.lambda_oe=inf"),
    (["loss.lambda_oe=nan"], "loss.lambda_oe=nan"),
    (["module.optimizer.lr=inf"], "module.optimizer.lr=inf"),
    (["seed=1.5"], "seed=1.5"),
    (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5"),
    (["data.batch_size=abc"], "data.batch_size='abc'"),
    (["data.val_fraction=-0.1"], "data.val_fraction=-0.1"),
    (["detector=[vim]", "detector.vim.d=0"], "detector.vim.d=0"),
    (["detector=[ash]", "detector.ash.percentile=1.5"], "detector.ash.percentile=1.5"),
    (["detector=[odin]", "detector.odin.temperature=0"], "detector.odin.temperature=0"),
    (["score=energy", "detector=[energy]", "detector.energy.temperature=0"], "detector.energy.temperature=0"),
    (["detector=[knn]", "detector.knn.k=0"], "detector.knn.k=0"),
    (["detector=[react]", "detector.react.percentile=90"], "detector.react.percentile=90"),
    (["detector=[odin]", "detector.odin.eps=-1"], "detector.odin.eps=-1"),
    (["oe=tiny_images", "oe.exclude_file=/no/such/idxs.txt"], "/no/such/idxs.txt"),
]


@pytest.mark.parametrize("overrides,named", BAD_TRAIN_CONFIGS, ids=[" ".join(o) for o, _ in BAD_TRAIN_CONFIGS])
def test_a_bad_value_is_refused_before_any_work_naming_key_and_value(capsys, tmp_path, overrides, named):
    err = _refused(capsys, "oe-train", tmp_path / "run", *overrides)
    assert named in err and "must be" in err


def test_the_console_script_reports_bad_values_as_one_paragraph(tmp_path):
    """`oe-train seed=abc trainer.max_epochs=-1` as typed, through the installed script (Hydra's
    callbacks, the fast exit): exit 2, both keys named, no traceback, no run directory."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import cli_env

    script = shutil.which("oe-train") or str(pathlib.Path(sys.executable).with_name("oe-train"))
    proc = subprocess.run([script, "seed=abc", "trainer.max_epochs=-1", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert "seed='abc' must be an integer" in err and "trainer.max_epochs=-1 must be an integer >= 1" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


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


def _load_paths(checkpoint: pathlib.Path, image: pathlib.Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every command line that reads a checkpoint: resume, pretrained weights, oe-eval, oe-predict, oe-export."""
    return [("oe-train", (f"ckpt_path={checkpoint}",)), ("oe-train", (f"module.pretrained={checkpoint}",)),
            ("oe-eval", (f"ckpt_path={checkpoint}",)), ("oe-predict", (f"ckpt_path={checkpoint}", f"input={image}")),
            ("oe-export", (f"ckpt_path={checkpoint}",))]


@pytest.fixture
def image(tmp_path) -> pathlib.Path:
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("RGB", (8, 8), (255, 255, 255)).save(path)
    return path


def test_a_checkpoint_whose_unpickling_runs_code_is_refused_by_every_load_path(capsys, tmp_path, image):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _TouchOnLoad(marker)}, evil)
    for i, (entry, overrides) in enumerate(_load_paths(evil, image)):
        err = _refused(capsys, entry, tmp_path / f"{entry}{i}", *overrides)
        assert str(evil) in err and "could not be read as weights" in err, (entry, err)
    assert not marker.exists()


@pytest.mark.parametrize("model_config", [
    {"_target_": "shutil.copyfile", "src": "SRC", "dst": "MARKER"},
    {"_target_": "oe_lightning.models.SmallCNN", "num_classes": 10, "in_channels": 1,
     "width": {"_target_": "shutil.copyfile", "src": "SRC", "dst": "MARKER"}},
    {"_target_": "oe_lightning.models.SmallCNN", "num_classes": 10, "_args_": ["SRC"]},
    {"_target_": "oe_lightning.models.SmallCNN", "num_classes": 10, "width": "${oc.env:HOME}"},
], ids=["file-writing target", "nested target", "positional args", "interpolation"])
def test_a_checkpoint_naming_code_in_its_model_config_is_refused_and_runs_nothing(capsys, tmp_path, trained,
                                                                                 model_config, image):
    """oe-eval, oe-predict and oe-export rebuild the model from the checkpoint's stored config."""
    marker = tmp_path / "copied"
    text = json.dumps(model_config).replace("SRC", str(trained)).replace("MARKER", str(marker))
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["oe_lightning"]["model_config"] = json.loads(text)
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    for entry, overrides in _load_paths(evil, image)[2:]:
        err = _refused(capsys, entry, tmp_path / entry, *overrides)
        assert "stores a model config that is not plain data" in err and "never chooses what code runs" in err, err
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
    assert "++model_allowlist=[tests.helpers.CrashingCNN]" in err
    allowed = run_in_process("oe-eval", tmp_path / "allowed", f"ckpt_path={own}",
                             "++model_allowlist=[tests.helpers.CrashingCNN]")
    assert allowed["id_accuracy"] == training["id_accuracy"]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"], ids=["empty", "garbage",
                                                                                         "truncated"])
def test_unreadable_checkpoints_are_named_for_every_load_path(capsys, tmp_path, trained, content, image):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(trained.read_bytes()[:2000] if content == "truncated" else content)
    for i, (entry, overrides) in enumerate(_load_paths(bad, image)):
        err = _refused(capsys, entry, tmp_path / f"{entry}{i}", *overrides)
        assert str(bad) in err, (entry, err)


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
RESUME_RUN = ("trainer.max_epochs=3", "logger=csv", "model.dropout=0.3", "callbacks.step_checkpoint.every_n_steps=2",
              "+callbacks.kill._target_=tests.helpers.KillAtStep")  # 3 steps an epoch, 9 in all


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> pathlib.Path:
    from tests.conftest import TINY_CLI, run_cli

    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = run_cli("oe-train", *RESUME_RUN, *TINY_CLI, f"hydra.run.dir={tmp / 'run'}", tmp_path=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("stop,exit_code,resumed_from", [
    # SIGKILL at step 5 (mid-epoch 2): the step-4 checkpoint is one batch into that epoch
    ({"OE_TEST_KILL_AT": "5"}, -9, "step.ckpt"),
    # SIGKILL halfway through writing epoch001.ckpt (step 6): the partial file is never a checkpoint
    ({"OE_TEST_KILL_AT": "6", "OE_TEST_KILL_WHILE_SAVING": "1"}, -9, "step.ckpt"),
    # SIGTERM after step 4 (SLURM preemption): preempted.ckpt after step 5, exit 128 + 15
    ({"OE_TEST_KILL_AT": "4", "OE_TEST_KILL_SIGNAL": "TERM"}, 143, "preempted.ckpt"),
], ids=["kill-mid-epoch", "kill-while-writing", "sigterm"])
def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, uninterrupted, stop, exit_code,
                                                                    resumed_from):
    """Stopped, then the same command again (auto_resume from the newest checkpoint): the training
    loaders continue with the first untrained batch, and every batch, augmentation and dropout mask
    is a function of (seed, epoch, index, step), so every metric, weight and score equals the run
    that was never interrupted, to the last bit."""
    import numpy as np

    from tests.conftest import TINY_CLI, run_cli

    run = tmp_path / "run"
    args = (*RESUME_RUN, *TINY_CLI, f"hydra.run.dir={run}")
    stopped = run_cli("oe-train", *args, tmp_path=tmp_path, env=stop)
    assert stopped.returncode == exit_code, stopped.stderr[-2000:]
    assert not (run / "results.json").exists()
    left = {p.name for p in (run / "checkpoints").iterdir()}
    if "OE_TEST_KILL_WHILE_SAVING" in stop:  # killed mid-write: a partial temp file, no epoch001.ckpt
        assert "epoch001.ckpt" not in left and any(n.endswith(".partial") for n in left), left
    if exit_code == 143:
        err = " ".join(stopped.stderr.split())
        assert "Stopped by SIGTERM at epoch 1, step 5" in err and "Traceback" not in err
    resumed = run_cli("oe-train", *args, tmp_path=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {run / 'checkpoints' / resumed_from}" in resumed.stdout
    assert not any(p.name.endswith(".partial") for p in (run / "checkpoints").iterdir())
    a = json.loads((uninterrupted / "results.json").read_text())
    b = json.loads((run / "results.json").read_text())
    assert b["run"]["global_step"] == a["run"]["global_step"] == 9
    assert b["ood"] == a["ood"] and b["mean"] == a["mean"] and b["id_accuracy"] == a["id_accuracy"]
    assert b["val"] == a["val"]
    wa = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = np.load(uninterrupted / "scores.npz"), np.load(run / "scores.npz")
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_a_preemption_notice_saves_a_checkpoint_then_hands_the_signal_to_the_previous_handler(
        capsys, monkeypatch, tmp_path):
    """SIGUSR2 (submitit's preemption signal) mid-epoch: the step finishes, preempted.ckpt is
    written, submitit's own handler (here a recorder) still gets the signal, and the command exits
    with 128 + 12, saying how to resume; the handler is restored afterwards."""
    import signal

    calls = []

    def submitit_like(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGUSR2, submitit_like)
    monkeypatch.setenv("OE_TEST_KILL_AT", "1")
    monkeypatch.setenv("OE_TEST_KILL_SIGNAL", "USR2")
    try:
        with pytest.raises(SystemExit) as exit_info:
            train_in_process(tmp_path / "run", "trainer.max_epochs=2",
                             "+callbacks.kill._target_=tests.helpers.KillAtStep")
        assert signal.getsignal(signal.SIGUSR2) is submitit_like
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert exit_info.value.code == 128 + signal.SIGUSR2 and calls == [signal.SIGUSR2]
    err = " ".join(capsys.readouterr().err.split())
    assert "Stopped by SIGUSR2 at epoch 0, step 2" in err and "Traceback" not in err
    saved = torch.load(tmp_path / "run" / "checkpoints" / "preempted.ckpt", weights_only=True)
    assert saved["global_step"] == 2
    assert saved["OEDataModule"]["train_position"] == {"epoch": 0, "batches_done": 2, "epoch_batches": 3}


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_ones_and_names_the_file(capsys, tmp_path,
                                                                                          trained):
    """The checkpoint of epoch 2 cannot be written (a file-size limit stands in for a full disk): the
    run stops with one paragraph naming the file and the cause; no truncated or temporary file is
    left, the epoch-1 checkpoint is untouched, and the same command resumes from it once there is room."""
    import resource
    import signal

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(trained, run / "checkpoints" / "epoch000.ckpt")
    (run / "checkpoints" / "last.ckpt").symlink_to("epoch000.ckpt")
    before = (run / "checkpoints" / "epoch000.ckpt").read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))
    try:
        with pytest.raises(SystemExit) as exit_info:
            train_in_process(run, "trainer.max_epochs=2")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and "Writing the checkpoint" in err and "epoch001.ckpt" in err
    assert "earlier checkpoints" in err and "are intact" in err and "MiB free" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert (run / "checkpoints" / "epoch000.ckpt").read_bytes() == before
    assert train_in_process(run, "trainer.max_epochs=2")["run"]["global_step"] == 6


def test_an_output_folder_that_cannot_be_written_is_refused_before_hydra_creates_it(tmp_path):
    from tests.conftest import TINY_CLI, run_cli

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        proc = run_cli("oe-train", *(["-m"] if "sweep" in key else []), *TINY_CLI, f"{key}={blocker / 'run'}",
                       tmp_path=tmp_path)
        err = " ".join(proc.stderr.split())
        assert proc.returncode == 2 and "Traceback" not in err, err
        assert f"{key}='{blocker / 'run'}' cannot be written" in err and "is a file, not a folder" in err
        assert "paths.output_dir=" in err


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
    assert "last.ckpt, which cannot be read, and no other readable checkpoint" in err and "hydra.run.dir=" in err
    assert "auto_resume=false" not in err  # it would train beside the unreadable file (refused)


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
