"""D_in from the user's own image folders (data=image_folder): classes from sub-folders, stored in
the checkpoint; bad files skipped with a warning; a missing or one-class folder refused up front."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import train_in_process


def _write_classes(root, classes=("cat", "dog"), per_class=24, seed=0):
    """PNG and JPEG images of different sizes in class sub-folders, classes told apart by brightness."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            shape = (18 + i % 5, 22 + i % 3, 3)
            pixels = np.clip(rng.normal(60 + 130 * k, 25, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


OWN = ("data=image_folder", "data.image_size=16", "data.batch_size=8", "data.oe_batch_size=16",
       "data.num_workers=0", "trainer.max_epochs=1")  # OE: colour crops of china.jpg


def test_own_image_folders_train_with_their_class_names_stored(tmp_path, caplog):
    train_dir = _write_classes(tmp_path / "pets")
    (train_dir / "cat" / "notes.jpg").write_text("not an image")
    (train_dir / ".ipynb_checkpoints").mkdir()  # hidden: never a class (for num_classes nor the labels)
    Image.new("RGB", (8, 8)).save(train_dir / ".ipynb_checkpoints" / "x.png")
    with caplog.at_level(logging.WARNING):
        results = train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", tiny=False)
    assert "skipped 1 unreadable file(s) of 49" in caplog.text and "notes.jpg" in caplog.text
    sizes = results["test_set_sizes"]
    assert sizes["in"] == round(48 * 0.2)  # test_fraction of the readable images, held out by split_seed
    info = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["oe_lightning"]
    assert info["class_names"] == ["cat", "dog"] and info["num_classes"] == 2


def test_a_test_folder_with_other_classes_is_refused_naming_both(tmp_path, capsys):
    train_dir = _write_classes(tmp_path / "train")
    test_dir = _write_classes(tmp_path / "test", classes=("cat", "fox"), per_class=4)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", f"data.test_dir={test_dir}",
                         tiny=False)
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "['cat', 'fox']" in err and "['cat', 'dog']" in err and "Traceback" not in err


@pytest.mark.parametrize("make,named", [
    (lambda root: root, "is not a folder"),
    (lambda root: _write_classes(root, classes=("only",), per_class=2), "has 1 class sub-folder(s)"),
])
def test_a_missing_or_one_class_train_dir_is_refused_before_any_work(tmp_path, capsys, make, named):
    train_dir = make(tmp_path / "mine")
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", tiny=False)
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert named in err and "data.train_dir=" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ood_sets_from_folders_flat_or_with_sub_folders(tmp_path):
    """ood=folders +ood.<name>=<folder>: any folder of images is an OOD test set, resized to the
    data's image size; a folder without sub-folders is one set of its images."""
    from tests.conftest import run_in_process

    train_dir = _write_classes(tmp_path / "pets")
    train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", tiny=False)
    flat = tmp_path / "people"
    flat.mkdir()
    rng = np.random.default_rng(3)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(flat / f"{i}.jpg")
    nested = _write_classes(tmp_path / "cars", classes=("red", "blue"), per_class=3, seed=5)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    results = run_in_process("oe-eval", tmp_path / "eval", f"ckpt_path={ckpt}", "data=image_folder",
                             f"data.train_dir={train_dir}", "data.image_size=16",
                             "ood=folders", f"+ood.people={flat}", f"+ood.cars={nested}", tiny=False)
    assert results["test_set_sizes"]["people"] == 7 and results["test_set_sizes"]["cars"] == 6
    assert set(results["ood"]) == {"people", "cars"} and set(results["operating_point"]["ood_rejected"]) == {
        "people", "cars"}


def test_a_val_dir_holds_the_validation_images_and_training_keeps_all_of_train_dir(tmp_path):
    """data.val_dir: its images choose the threshold and temperature; nothing is held out of train_dir."""
    train_dir = _write_classes(tmp_path / "train")
    val_dir = _write_classes(tmp_path / "val", per_class=5, seed=1)
    results = train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", f"data.val_dir={val_dir}",
                               tiny=False)
    assert results["operating_point"]["val_images"] == 10
    assert results["calibration"]["temperature_tuned_on"] == 10
    assert results["test_set_sizes"]["val"] == 10 and results["test_set_sizes"]["in"] == round(48 * 0.2)
    assert results["run"]["train_samples_per_rank"]["in"] == 48 - round(48 * 0.2)


def test_a_val_dir_with_other_classes_is_refused(tmp_path, capsys):
    train_dir = _write_classes(tmp_path / "train")
    val_dir = _write_classes(tmp_path / "val", classes=("cat", "cow"), per_class=3)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(tmp_path / "run", *OWN, f"data.train_dir={train_dir}", f"data.val_dir={val_dir}", tiny=False)
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "data.val_dir=" in err and "['cat', 'cow']" in err and "Traceback" not in err
