"""A hostile file system: links that loop or lead out of a folder, FIFOs named like images or results,
links planted where a temporary file is written, animated images, two trainings in one run directory.
Rule: read regular files only, never follow a link into a loop or out of the given tree without saying
so, create temporary files exclusively. Anything that used to hang runs in a subprocess with a timeout."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, cli_env, train_in_process
from tests.test_own_data import OWN, _write_classes

HANG = 90  # seconds: far beyond a working call (a few seconds), so a regression fails instead of hanging


def _python(code: str, tmp_path, timeout: int = HANG) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


# ---- 1. links: a loop or a link out of a class folder is not followed, and the warning says so --------
@pytest.mark.parametrize("links", [
    {"cat/loop": ".."},                         # the case: 60 images became 18,860
    {"cat/self": ".", "dog/up": "../.."},       # a link to itself; one to above train_dir
    {"all": ".", "dog/cats": "../cat"},         # a class folder that is train_dir; a class inside another
])
def test_links_that_loop_or_leave_a_class_folder_change_no_count_nor_label(tmp_path, caplog, links):
    from oe_lightning.data.vision import image_folder
    from oe_lightning.deployment import image_paths

    train_dir = _write_classes(tmp_path / "pets")
    for name, target in links.items():
        os.symlink(target, train_dir / name)
    with caplog.at_level(logging.WARNING, logger="oe_lightning"):
        data = image_folder(train_dir, name="train_dir")
        assert len(image_paths([train_dir])) == 48  # oe-predict's folder input, the same listing
    assert data.classes == ["cat", "dog"] and len(data) == 48
    assert all(os.path.realpath(p).split(os.sep)[-2] == data.classes[t] for p, t in data.samples)  # true labels
    warned = " ".join(caplog.text.split())
    assert "not followed" in warned and all(str(train_dir / name) in warned for name in links)
    if links == {"cat/loop": ".."}:  # the whole run: nothing multiplied into the splits
        caplog.clear()
        results = train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", tiny=False)
        assert results["test_set_sizes"]["in"] == round(48 * 0.2)
        held_out = results["operating_point"]["val_images"]
        assert results["run"]["train_samples_per_rank"]["in"] + held_out == 48 - round(48 * 0.2)


def test_a_link_to_a_file_outside_the_folder_is_read_and_named(tmp_path, caplog):
    """Datasets built as folders of links into a shared pool of images keep working; the warning says so."""
    from oe_lightning.data.vision import image_folder

    train_dir = _write_classes(tmp_path / "pets", per_class=3)
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8)).save(outside)
    os.symlink(outside, train_dir / "cat" / "borrowed.png")
    with caplog.at_level(logging.WARNING, logger="oe_lightning"):
        data = image_folder(train_dir, name="train_dir")
    assert len(data) == 7 and sum(path.endswith("borrowed.png") for path, _ in data.samples) == 1
    assert "1 link(s) to files out of the folder, followed" in caplog.text and "borrowed.png" in caplog.text


# ---- 2. FIFOs: never opened (training, oe-predict, oe-table), skipped with a warning; strict refuses ---
def test_a_fifo_named_like_an_image_is_skipped_not_opened(tmp_path):
    train_dir = _write_classes(tmp_path / "pets", per_class=4)
    os.mkfifo(train_dir / "cat" / "x.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    os.mkfifo(photos / "b.png")
    proc = _python(f"""
        import logging, sys
        logging.basicConfig(stream=sys.stdout, format="%(message)s")
        from oe_lightning.data.vision import image_folder
        from oe_lightning.deployment import image_paths
        from oe_lightning.errors import OEUserError
        data = image_folder({str(train_dir)!r}, name="train_dir")
        print("samples", len(data), sorted(set(data.targets)))
        print("inputs", [p.name for p in image_paths([{str(photos)!r}])])
        try:
            image_folder({str(train_dir)!r}, name="train_dir", strict=True)
        except OEUserError as err:
            print("strict:", err)
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = " ".join(proc.stdout.split())
    assert "samples 8 [0, 1]" in out and "inputs ['a.png']" in out
    assert "1 non-regular file(s) (FIFO, socket or device), not opened" in out and "x.png" in out
    assert "strict: 1 file(s) under" in out and "not regular files" in out and "data.strict=false" in out


def test_oe_table_skips_a_fifo_named_results_json(tmp_path):
    from oe_lightning.results import read_results_or_none

    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    os.mkfifo(runs / "a" / "results.json")
    proc = subprocess.run([sys.executable, "-m", "oe_lightning.table", str(runs), "--no-files"], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=HANG)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "no complete results.json" in err, err  # the oe-table answer, at once
    assert "non-regular file(s)" in err and "results.json" in err
    assert read_results_or_none(runs / "a") is None  # oe-train's skip_complete reads it the same way


# ---- 3. temporary files: created exclusively, so a link planted at the old fixed name changes nothing -
def test_a_link_planted_at_the_temporary_name_does_not_redirect_a_write(tmp_path):
    from oe_lightning.loggers import ResumableCSVLogger
    from oe_lightning.results import write_results, write_scores

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    for planted in ("results.json.tmp", "scores.npz.tmp", ".results.json.tmp", "csv/metrics.csv.tmp"):
        os.symlink(victim, run / planted)
    (run / "csv" / "metrics.csv").write_text("epoch,step,loss\n0,1,0.5\n0,5,0.4\n")
    old_umask = os.umask(0o022)
    try:
        write_results({"mean": {"fpr95": 0.1}}, run)
        write_scores({"in/labels": np.arange(3)}, run)
        logger = ResumableCSVLogger(save_dir=str(run), name="csv", version="")  # as conf/logger/csv.yaml
        assert Path(logger.log_dir) == run / "csv"
        logger.continue_from(3)
    finally:
        os.umask(old_umask)
    assert victim.read_text() == "precious\n"
    assert json.loads((run / "results.json").read_text()) == {"mean": {"fpr95": 0.1}}
    assert np.load(run / "scores.npz")["in/labels"].tolist() == [0, 1, 2]
    assert (run / "csv" / "metrics.csv").read_text().splitlines() == ["epoch,step,loss", "0,1,0.5"]
    assert (run / "results.json").stat().st_mode & 0o777 == 0o644  # as open() would create it
    leftovers = sorted(p.name for p in run.rglob("*") if p.name.endswith(".tmp") and not p.is_symlink())
    assert leftovers == []


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    from oe_lightning.results import replacing

    target = tmp_path / "results.json"
    target.write_text("old\n")
    with pytest.raises(ValueError), replacing(target) as file:
        file.write("half")
        raise ValueError("disk full")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# ---- 4. animated images: said, not silently reduced to a frame or left out; strict refuses ----------
def _animated(path, frames=3):
    images = [Image.new("RGB", (10, 10), (60 * i, 0, 0)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100)


def test_animated_images_are_named_in_a_warning_and_refused_when_strict(tmp_path, caplog, capsys):
    from oe_lightning.data.vision import image_folder
    from oe_lightning.deployment import image_paths

    train_dir = _write_classes(tmp_path / "pets")
    _animated(train_dir / "cat" / "wag.webp")
    _animated(train_dir / "dog" / "jump.gif")
    with caplog.at_level(logging.WARNING, logger="oe_lightning"):
        data = image_folder(train_dir, name="train_dir")
        paths = image_paths([train_dir / "cat" / "wag.webp", train_dir / "dog" / "jump.gif"])
    text = " ".join(caplog.text.split())
    assert len(data) == 49 and len(paths) == 2
    assert "1 animated image(s) (several frames) read as their first frame only" in text and "wag.webp" in text
    assert "1 file(s) not read, their type is not one training reads" in text and "jump.gif" in text
    assert "2 animated image(s) (several frames) are predicted from their first frame only" in text
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", "data.strict=true", tiny=False)
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and "are animated" in err and "wag.webp" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---- 5. one oe-train per run directory at a time ---------------------------------------------------
def test_a_second_training_in_a_locked_run_directory_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from oe_lightning.run_lock import run_dir_lock

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from oe_lightning.run_lock import run_dir_lock
            with run_dir_lock({str(run)!r}):
                print("locked", flush=True)
                sys.stdin.read()
            """)],
        cwd=REPO, env=cli_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit) as exit_info:
            train_in_process(run, "trainer.max_epochs=1")
        err = " ".join(capsys.readouterr().err.split())
        assert exit_info.value.code == 2 and "Traceback" not in err
        assert f"Another oe-train is writing '{run}' (pid {holder.pid})" in err and "hydra.run.dir" in err
        assert not (run / "csv").exists() and not (run / "checkpoints").exists()
        for name in ("LOCAL_RANK", "RANK"):  # another rank of the same DDP run works there on purpose
            with monkeypatch.context() as patch:
                patch.setenv(name, "1")
                with run_dir_lock(run):
                    pass
    finally:
        holder.communicate("", timeout=HANG)
    assert holder.returncode == 0
    results = train_in_process(run, "trainer.max_epochs=1")  # the lock ends with its holder
    assert results["mean"] and (run / "csv" / "metrics.csv").is_file()
