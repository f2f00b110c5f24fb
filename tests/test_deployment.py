"""Your own classifier says "I don't know this": train on image folders, predict on new images with
the threshold chosen on validation data, export the model, start from pretrained weights."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oe_lightning.data.demo_folders import write_demo_folders
from tests.conftest import cli_env, run_cli, train_in_process

EPOCHS = 6


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    """oe-demo's folders: digits as PNG class folders, photo crops as JPEG."""
    return write_demo_folders(tmp_path_factory.mktemp("demo"), size=16, oe_count=1000, unknown_count=20,
                              mixed_count=100)


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory) -> dict[float, Path]:
    """The baseline (λ = 0) and OE (λ = 0.5) on the digit folders, the threshold keeping 99% of the
    ID validation images (20% of train_dir); returns each run's last checkpoint."""
    out = {}
    for lambda_oe in (0.0, 0.5):
        run = tmp_path_factory.mktemp(f"lambda{lambda_oe}") / "run"
        train_in_process(run, "data=image_folder", f"data.train_dir={demo['train']}", f"data.test_dir={demo['test']}",
                         "data.image_size=16", "data.crop_scale=[0.6,1]", "data.num_workers=0", "oe=image_folder",
                         f"oe.root={demo['oe']}", f"loss.lambda_oe={lambda_oe}", f"trainer.max_epochs={EPOCHS}",
                         "data.val_fraction=0.2", "evaluation.keep_id=0.99", tiny=False)
        out[lambda_oe] = run / "checkpoints" / "last.ckpt"
    return out


def _share(rows, decision: str) -> float:
    return sum(r.decision == decision for r in rows) / len(rows)


@pytest.mark.slow
def test_oe_rejects_the_unknown_images_that_the_baseline_accepts_at_95_percent_id_acceptance(demo, trained):
    """oe-demo's mixed folder: 100 ID test digits, 100 crops of another photo."""
    from sklearn.datasets import load_digits

    from oe_lightning.deployment import OODClassifier

    labels = load_digits().target
    shares = {}
    for lambda_oe, ckpt in trained.items():
        classifier = OODClassifier.from_checkpoint(ckpt)
        assert classifier.class_names == [str(d) for d in range(10)]
        rows = classifier.predict(demo["mixed"])
        unknown = [r for r in rows if Path(r.path).name.startswith("unknown_")]
        assert len(unknown) == len(rows) - len(unknown) == 100
        # ID acceptance on all 539 ID test images (the mixed folder's 100 alone move by ±2%)
        shares[lambda_oe] = (_share(classifier.predict(demo["test"]), "in"), _share(unknown, "ood"))
        accepted = [r for r in rows if Path(r.path).name.startswith("in_") and r.decision == "in"]
        right = sum(r.predicted_class == str(labels[int(Path(r.path).stem[3:])]) for r in accepted)
        assert right / len(accepted) >= 0.8  # the digit's own class, named after its folder (measured 0.89)
    (base_kept, base_rejected), (oe_kept, oe_rejected) = shares[0.0], shares[0.5]
    assert base_kept >= 0.95 and oe_kept >= 0.95, shares
    print("ID test images accepted, unknown images rejected:", shares)
    assert oe_rejected >= base_rejected + 0.3, shares


@pytest.mark.slow
def test_oe_predict_reports_a_corrupt_image_and_predicts_the_others(demo, trained, tmp_path):
    from oe_lightning.deployment import OODClassifier

    folder = tmp_path / "new"
    folder.mkdir()
    images = sorted(demo["mixed"].glob("*"))[:3]
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image suffix: never read")
    single = sorted(demo["mixed"].glob("unknown_*"))[0]
    out = tmp_path / "preds" / "p.csv"
    proc = run_cli("oe-predict", f"ckpt_path={trained[0.5]}", f"input=[{folder},{single}]", f"output={out}",
                   "num_workers=0", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "broken.jpg" in proc.stdout + proc.stderr and "unreadable" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == sorted(["broken.jpg", *(i.name for i in images)]) + [single.name]
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert broken["decision"] == "unreadable" and broken["error"].startswith("OSError")
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [r["path"] for r in lines] == [r["path"] for r in rows]
    api = {p.path: p for p in OODClassifier.from_checkpoint(trained[0.5]).predict([folder, single])}
    for row in rows:
        if row["decision"] != "unreadable":
            mine = api[row["path"]]
            assert row["decision"] == mine.decision and row["predicted_class"] == mine.predicted_class
            assert float(row["ood_score"]) == pytest.approx(mine.ood_score, abs=1e-6)
            assert float(row["threshold"]) == mine.threshold
            assert (float(row["ood_score"]) > float(row["threshold"])) == (row["decision"] == "ood")


# The user's side of an export: numpy, PIL and torch or onnxruntime, following the JSON sidecar only.
CONSUMER = r'''
import json, sys
import numpy as np
from PIL import Image

sidecar = json.load(open(sys.argv[1]))
p = sidecar["preprocessing"]

def preprocess(path):
    image = Image.open(path).convert("L" if p["channels"] == 1 else "RGB")
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(p["resize"] * long / short)
    image = image.resize((p["resize"], new_long) if w <= h else (new_long, p["resize"]), Image.BILINEAR)
    w, h = image.size
    top, left = int(round((h - p["height"]) / 2.0)), int(round((w - p["width"]) / 2.0))
    image = image.crop((left, top, left + p["width"], top + p["height"]))
    x = np.asarray(image, dtype=np.float32).reshape(p["height"], p["width"], p["channels"]) / 255.0
    x = (x - np.array(p["mean"], dtype=np.float32)) / np.array(p["std"], dtype=np.float32)
    return x.transpose(2, 0, 1)

batch = np.stack([preprocess(f) for f in sys.argv[3:]]).astype(np.float32)
model_file = sys.argv[2]
if sidecar["format"] == "torchscript":
    import torch
    outputs = [o.numpy() for o in torch.jit.load(model_file)(torch.from_numpy(batch))]
else:
    import onnxruntime
    outputs = onnxruntime.InferenceSession(model_file).run(None, {sidecar["input"]["name"]: batch})
assert "oe_lightning" not in sys.modules
print(json.dumps({"batch": batch.tolist(), "logits": outputs[0].tolist(), "score": outputs[1].tolist(),
                  "is_ood": outputs[2].tolist(), "classes": sidecar["class_names"],
                  "threshold": sidecar["threshold"]}))
'''


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_gives_the_same_outputs_without_oe_lightning(fmt, demo, trained, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    from oe_lightning.deployment import OODClassifier

    proc = run_cli("oe-export", f"ckpt_path={trained[0.5]}", f"format={fmt}", f"output={tmp_path / 'model'}",
                   tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model_file = tmp_path / ("model.pt" if fmt == "torchscript" else "model.onnx")
    files = sorted(demo["mixed"].glob("in_*"))[:3] + sorted(demo["mixed"].glob("unknown_*"))[:3]
    env = {k: v for k, v in cli_env(tmp_path).items() if k != "PYTHONPATH"}  # oe_lightning not importable from here
    consumer = subprocess.run([sys.executable, "-c", CONSUMER, str(tmp_path / "model.json"), str(model_file),
                               *map(str, files)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert consumer.returncode == 0, consumer.stderr[-2000:]
    theirs = json.loads(consumer.stdout)
    classifier = OODClassifier.from_checkpoint(trained[0.5])
    transform = classifier.preprocessing.transform()
    from oe_lightning.data.vision import load_rgb

    batch = torch.stack([transform(load_rgb(f)) for f in files])
    torch.testing.assert_close(torch.tensor(theirs["batch"]), batch, rtol=0, atol=1e-6)  # the sidecar's recipe
    logits, score, is_ood = classifier.outputs(batch)
    torch.testing.assert_close(torch.tensor(theirs["logits"]), logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(theirs["score"]), score, rtol=0, atol=1e-5)
    assert theirs["is_ood"] == is_ood.tolist() and theirs["threshold"] == classifier.threshold
    assert theirs["classes"] == classifier.class_names


@pytest.mark.slow
def test_deployment_commands_refuse_bad_input_before_any_work(tmp_path, demo, trained):
    missing = tmp_path / "nowhere"
    proc = run_cli("oe-predict", f"ckpt_path={trained[0.5]}", f"input={missing}", tmp_path=tmp_path)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and str(missing) in err and "Traceback" not in err
    proc = run_cli("oe-export", f"ckpt_path={trained[0.5]}", "format=tflite", tmp_path=tmp_path)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "format='tflite'" in err and "torchscript or onnx" in err


@pytest.mark.parametrize("data", ["cifar10", "svhn", "tiny_imagenet", "image_folder"])
def test_the_stored_preprocessing_is_the_datas_test_transform(data, tmp_path):
    """What oe-predict and the export sidecar apply to an image file equals the data's own test
    transform on that image (resized to the data's size where the dataset's files have it)."""
    from hydra.utils import instantiate
    from PIL import Image

    from oe_lightning.deployment import Preprocessing
    from tests.conftest import hydra_job

    for name in ("cat", "dog"):
        (tmp_path / "own" / name).mkdir(parents=True)
    with hydra_job("train", [f"data={data}", f"data.train_dir={tmp_path / 'own'}"] if data == "image_folder"
                   else [f"data={data}"], tmp_path / "run") as cfg:
        preprocessing = Preprocessing.from_data_config(cfg.data)
        test_transform = instantiate(cfg.data.test_transform)
    side = cfg.data.image_shape[1]
    generator = torch.Generator().manual_seed(0)
    size = (300, 260) if data == "image_folder" else (side, side)  # folders: any size; the others: their own
    image = Image.fromarray(torch.randint(0, 256, (*size, 3), generator=generator, dtype=torch.uint8).numpy())
    torch.testing.assert_close(preprocessing.transform()(image), test_transform(image), rtol=0, atol=1e-6)


def test_inputs_are_expanded_to_image_files_and_refused_when_there_are_none(tmp_path):
    from oe_lightning.deployment import image_paths
    from oe_lightning.errors import OEUserError

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for name in ("a/2.PNG", "a/b/1.jpg", "a/.hidden/3.png", "a/notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    found = image_paths([tmp_path / "a", tmp_path / "c.webp"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/2.PNG", "a/b/1.jpg", "c.webp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(OEUserError, match="holds no image files"):
        image_paths([tmp_path / "empty"])
    with pytest.raises(OEUserError, match=r"do not exist: .*nowhere"):
        image_paths([tmp_path / "nowhere"])
