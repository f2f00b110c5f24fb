"""An output never destroys an input or another command's result, and results are complete only when
every artefact is (issue 19, "An output destroys an input or another command's result")."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from oe_lightning.results import is_complete, read_complete
from tests.conftest import run_cli, run_in_process, train_in_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny finished training run (1 epoch): its run directory, never modified by a test."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train_in_process(run, "trainer.max_epochs=1")
    assert (run / "checkpoints" / "last.ckpt").is_file() and read_complete(run) is not None
    return run


@pytest.fixture
def checkpoint(trained, tmp_path) -> Path:
    """A copy of the trained run's checkpoint, free to be damaged by a test."""
    path = tmp_path / "model.ckpt"
    shutil.copy(trained / "checkpoints" / "last.ckpt", path)
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (255, 255, 255)).save(path)
    return path


def _refused(capsys, entry: str, run_dir: Path, *overrides: str) -> str:
    """Run in-process: exit code 2 and one ``Error:`` paragraph (no traceback); stderr as one line."""
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(entry, run_dir, *overrides)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and err.strip().startswith("Error:"), err
    return " ".join(err.split())


def _copy_run(trained: Path, to: Path) -> Path:
    shutil.copytree(trained, to, symlinks=True)
    return to


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1. oe-predict never writes over its checkpoint or an input image -------------------------------
def test_predict_refuses_an_output_that_is_its_checkpoint_or_an_input(capsys, tmp_path, checkpoint, image):
    ckpt_bytes, image_bytes = checkpoint.read_bytes(), image.read_bytes()
    jsonl_named = tmp_path / "preds.jsonl"  # a checkpoint named like the JSON lines beside output=preds.csv
    shutil.copy(checkpoint, jsonl_named)
    cases = [(checkpoint, f"output={checkpoint}"), (checkpoint, f"output={checkpoint}", "overwrite=true"),
             (image, f"output={image}"), (image, f"output={image}", "overwrite=true"),
             (jsonl_named, f"output={tmp_path / 'preds.csv'}", "overwrite=true")]
    for victim, *overrides in cases:
        ckpt = jsonl_named if victim == jsonl_named else checkpoint
        err = _refused(capsys, "oe-predict", tmp_path / "run", f"ckpt_path={ckpt}", f"input={image}", *overrides)
        assert str(victim) in err and "an input of this command" in err and "Nothing was run" in err, err
        assert "output=" in err
    assert checkpoint.read_bytes() == ckpt_bytes and image.read_bytes() == image_bytes
    assert jsonl_named.read_bytes() == ckpt_bytes and not (tmp_path / "preds.csv").exists()
    # an image found in an input folder is an input too
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(image, folder / "b.png")
    err = _refused(capsys, "oe-predict", tmp_path / "run", f"ckpt_path={checkpoint}", f"input={folder}",
                   f"output={folder / 'b.png'}", "overwrite=true")
    assert str(folder / "b.png") in err and (folder / "b.png").read_bytes() == image_bytes


# ---- 2. the two prediction files have distinct names; nothing existing is replaced unasked --------
def test_predict_writes_csv_and_json_lines_under_two_names_for_every_output_suffix(tmp_path, checkpoint, image):
    cases = [("p.csv", "p.csv", "p.jsonl"), ("p.jsonl", "p.csv", "p.jsonl"), ("p.JSONL", "p.csv", "p.JSONL"),
             ("p", "p", "p.jsonl"), ("p.txt", "p.txt", "p.txt.jsonl")]
    for i, (name, csv_name, jsonl_name) in enumerate(cases):
        out = tmp_path / f"out{i}"
        run_in_process("oe-predict", tmp_path / "run", f"ckpt_path={checkpoint}", f"input={image}",
                       f"output={out / name}")
        assert sorted(p.name for p in out.iterdir()) == sorted([csv_name, jsonl_name]), name
        assert (out / csv_name).read_text().startswith("path,predicted_class,"), name
        assert json.loads((out / jsonl_name).read_text().splitlines()[0])["path"] == str(image), name


def test_predict_and_export_refuse_to_replace_an_existing_file_unless_overwrite_is_true(capsys, tmp_path,
                                                                                         checkpoint, image):
    out = tmp_path / "out"
    run_in_process("oe-predict", tmp_path / "run", f"ckpt_path={checkpoint}", f"input={image}",
                   f"output={out / 'p.csv'}")
    (out / "p.csv").write_text("an earlier result\n")
    for name in ("p.csv", "p.jsonl"):  # either of the two files
        err = _refused(capsys, "oe-predict", tmp_path / "run", f"ckpt_path={checkpoint}", f"input={image}",
                       f"output={out / name}")
        assert f"the existing file {out / 'p.csv'}" in err and "overwrite=true" in err and "Nothing was run" in err
    assert (out / "p.csv").read_text() == "an earlier result\n"
    (out / "p.csv").unlink()  # the JSON lines alone still protect themselves
    before = (out / "p.jsonl").read_bytes()
    err = _refused(capsys, "oe-predict", tmp_path / "run", f"ckpt_path={checkpoint}", f"input={image}",
                   f"output={out / 'p.csv'}")
    assert f"the existing file {out / 'p.jsonl'}" in err and (out / "p.jsonl").read_bytes() == before
    run_in_process("oe-predict", tmp_path / "run", f"ckpt_path={checkpoint}", f"input={image}",
                   f"output={out / 'p.csv'}", "overwrite=true")
    assert (out / "p.csv").read_text().startswith("path,")
    # oe-export: an existing sidecar (or model file) is refused, replaced with overwrite=true
    (out / "model.json").write_text("{}\n")
    err = _refused(capsys, "oe-export", tmp_path / "run", f"ckpt_path={checkpoint}", f"output={out / 'model'}")
    assert f"the existing file {out / 'model.json'}" in err and "overwrite=true" in err
    assert (out / "model.json").read_text() == "{}\n" and not (out / "model.pt").exists()
    run_in_process("oe-export", tmp_path / "run", f"ckpt_path={checkpoint}", f"output={out / 'model'}",
                   "overwrite=true")
    assert json.loads((out / "model.json").read_text())["model_file"] == "model.pt"


def test_export_never_writes_through_a_link_planted_at_a_temporary_name(tmp_path, checkpoint):
    """oe-export wrote its model to the fixed name ``.model.pt.partial`` first: a link planted there sent
    the model over the link's target. The temporary file is now created exclusively under a fresh name."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "out").mkdir()
    os.symlink(victim, tmp_path / "out" / ".model.pt.partial")
    run_in_process("oe-export", tmp_path / "run", f"ckpt_path={checkpoint}", f"output={tmp_path / 'out' / 'model'}")
    assert victim.read_text() == "keep me\n"
    assert (tmp_path / "out" / "model.pt").stat().st_size > 1000
    assert [p.name for p in (tmp_path / "out").glob(".model.pt.*") if not p.is_symlink()] == []


def test_export_never_writes_over_its_checkpoint(capsys, tmp_path, checkpoint):
    """A checkpoint saved as ``model.pt``: ``output=model`` would write the TorchScript file over it."""
    ckpt = tmp_path / "model.pt"
    checkpoint.rename(ckpt)
    before = ckpt.read_bytes()
    for overwrite in ((), ("overwrite=true",)):
        err = _refused(capsys, "oe-export", tmp_path / "run", f"ckpt_path={ckpt}", f"output={tmp_path / 'model'}",
                       *overwrite)
        assert str(ckpt) in err and "an input of this command" in err
    assert ckpt.read_bytes() == before and not (tmp_path / "model.json").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_a_refused_command_leaves_every_file_of_the_run_folder_untouched(tmp_path, trained):
    """Through the command line (Hydra writes .hydra/ and the config tree into a run folder as it starts):
    oe-eval into a training run's folder, and oe-train with auto_resume=false there, are refused before
    Hydra writes anything, so the folder is byte for byte what it was."""
    run = _copy_run(trained, tmp_path / "train_run")
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text("the training run's own config\n")
    (run / "config_tree.log").write_text("the training run's own tree\n")
    before = _snapshot(run)
    for entry, args in (("oe-eval", [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]),
                        ("oe-train", ["auto_resume=false"])):
        proc = run_cli(entry, *args, f"hydra.run.dir={run}", tmp_path=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and str(run) in " ".join(proc.stderr.split())
        assert _snapshot(run) == before, entry



# ---- 3. oe-eval never replaces a training run's results ---------------------------------------------
def test_eval_refuses_a_training_run_directory_and_may_reuse_its_own(capsys, tmp_path, trained):
    run = _copy_run(trained, tmp_path / "train_run")
    before = _snapshot(run)
    ckpt = run / "checkpoints" / "last.ckpt"
    err = _refused(capsys, "oe-eval", run, f"ckpt_path={ckpt}")
    assert str(run) in err and "training run" in err and "hydra.run.dir" in err
    # results, scores, checkpoints (config_tree.log is still rewritten: printed before the runner starts)
    assert {k: v for k, v in _snapshot(run).items() if k in before and k != "config_tree.log"} == \
        {k: v for k, v in before.items() if k != "config_tree.log"}
    # a training run without results yet (interrupted): its checkpoints still mark it
    (run / "results.json").unlink()
    (run / "scores.npz").unlink()
    err = _refused(capsys, "oe-eval", run, f"ckpt_path={ckpt}")
    assert "training run" in err and not (run / "results.json").exists() and not (run / "scores.npz").exists()
    # an evaluation's own directory: evaluated again (its results.json says "task": "eval")
    evaluated = tmp_path / "eval_run"
    first = run_in_process("oe-eval", evaluated, f"ckpt_path={ckpt}")
    assert first["task"] == "eval"
    assert is_complete(run_in_process("oe-eval", evaluated, f"ckpt_path={ckpt}"))
    # ...and oe-train does not replace an evaluation's results either
    err = _refused(capsys, "oe-train", evaluated, "trainer.max_epochs=1")
    assert "oe-eval" in err and "hydra.run.dir" in err and json.loads((evaluated / "results.json").read_text())[
        "task"] == "eval"


# ---- 4. auto_resume=false in a used directory: refused, never last-v1.ckpt -------------------------
def test_training_beside_another_runs_checkpoints_is_refused_and_never_writes_last_v1(capsys, tmp_path, trained):
    run = _copy_run(trained, tmp_path / "run")
    (run / "results.json").unlink()  # an interrupted run: not skipped as complete
    before = _snapshot(run / "checkpoints")
    for overrides in (["auto_resume=false"], ["auto_resume=false", "skip_complete=false"],
                      [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}"]):  # another run's checkpoint
        err = _refused(capsys, "oe-train", run, "trainer.max_epochs=2", *overrides)
        assert str(run / "checkpoints") in err and "hydra.run.dir=" in err, err
        assert "auto_resume=false" not in err, err
        if "auto_resume=false" in overrides:
            assert "auto_resume=true" in err
        assert _snapshot(run / "checkpoints") == before and not (run / "results.json").exists()
    # a complete run again with skip_complete=false: refused too (results from a new model would sit
    # beside the old one's checkpoints)
    complete = _copy_run(trained, tmp_path / "complete")
    _refused(capsys, "oe-train", complete, "trainer.max_epochs=1", "auto_resume=false", "skip_complete=false")
    # a checkpoint of another config: the message recommends no command that leads to last-v1
    err = _refused(capsys, "oe-train", run, "trainer.max_epochs=1", "loss.lambda_oe=0.25")
    assert "different run" in err and "auto_resume=false" not in err and "hydra.run.dir=" in err
    # continuing is what the message offers: it resumes in place
    res = train_in_process(run, "trainer.max_epochs=2")
    assert res["run"]["global_step"] == 6
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not [n for n in names if "-v" in n], names
    assert os.readlink(run / "checkpoints" / "last.ckpt") == "epoch001.ckpt"


# ---- 5. results are complete only when the final checkpoint is written -----------------------------
def test_a_full_disk_at_the_final_checkpoint_leaves_no_complete_results_and_a_rerun_finishes(
        capsys, monkeypatch, tmp_path):
    """After training, the disk is full: the checkpoint that receives the deployed threshold cannot be
    written. results.json must not claim a complete run, and the same command must then finish it."""
    import pytorch_lightning as pl

    run = tmp_path / "run"
    state = {"tested": False}
    test, save = pl.Trainer.test, torch.save

    def test_then_full_disk(self, *args, **kwargs):
        out = test(self, *args, **kwargs)
        state["tested"] = True
        return out

    def save_unless_full(obj, f, *args, **kwargs):
        if state["tested"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "test", test_then_full_disk)
    monkeypatch.setattr(torch, "save", save_unless_full)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(run, "trainer.max_epochs=1")
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Writing the checkpoint" in err and "Traceback" not in err
    assert state["tested"] and read_complete(run) is None
    monkeypatch.undo()  # room again: the same command is not skipped, and ends deployable
    results = train_in_process(run, "trainer.max_epochs=1")
    assert read_complete(run) is not None and results["run"]["global_step"] == 3
    assert results["checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert "temperature" in torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["oe_lightning"]


# ---- 6. an output folder that is a file, or read-only ----------------------------------------------
def test_an_output_that_is_a_file_a_folder_or_read_only_is_refused_in_one_paragraph(capsys, tmp_path,
                                                                                     checkpoint, image):
    from omegaconf import OmegaConf

    from oe_lightning.errors import OEUserError
    from oe_lightning.validate import check_output_folder

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OEUserError, match="is a file, not a folder"):  # hydra.run.dir itself a file
        check_output_folder(OmegaConf.create({"hydra": {"run": {"dir": str(blocker)}}}), "hydra.run.dir")
    deploy = [("oe-predict", f"input={image}"), ("oe-export", "format=torchscript")]
    for entry, extra in deploy:
        err = _refused(capsys, entry, tmp_path / "run", f"ckpt_path={checkpoint}", extra,
                       f"output={blocker / 'out'}")
        assert f"output='{blocker / 'out'}' cannot be written" in err and "is a file, not a folder" in err, err
        assert blocker.read_text() == "not a folder"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    err = _refused(capsys, "oe-predict", tmp_path / "run", f"ckpt_path={checkpoint}", f"input={image}",
                   f"output={folder}", "overwrite=true")
    assert f"{folder} is a folder" in err and "output=" in err
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        for entry, extra in deploy:
            err = _refused(capsys, entry, tmp_path / "run", f"ckpt_path={checkpoint}", extra,
                           f"output={locked / 'out'}")
            assert "is not writable" in err
