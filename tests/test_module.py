import functools

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from oe_lightning.data import OEDataModule
from oe_lightning.data.embedded import TensorImages
from oe_lightning.errors import NonFiniteLossError, OEUserError
from oe_lightning.evaluation import OODEvaluation
from oe_lightning.losses import EnergyMargin, UniformCrossEntropy
from oe_lightning.models import SmallCNN
from oe_lightning.module import OutlierExposureModule
from oe_lightning.optim import cosine_annealing


class CountingLinear(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.fc(x.flatten(1))


def batch(n_in=5, n_oe=7, num_classes=3):
    torch.manual_seed(0)
    return {"in": (torch.randn(n_in, 1, 2, 2), torch.randint(0, num_classes, (n_in,))),
            "oe": torch.randn(n_oe, 1, 2, 2)}


@pytest.mark.parametrize("oe_loss", [UniformCrossEntropy(), EnergyMargin(m_in=-1.0, m_out=1.0)])
def test_training_loss_is_id_ce_plus_lambda_times_oe_term_in_one_forward(oe_loss):
    backbone = CountingLinear()
    module = OutlierExposureModule(backbone, num_classes=3, oe_loss=oe_loss, lambda_oe=0.7)
    b = batch()
    loss = module.training_step(b, 0)
    assert backbone.calls == [12]  # one forward over cat(x_in, x_oe)
    with torch.no_grad():
        logits_in, logits_oe = backbone.fc(b["in"][0].flatten(1)), backbone.fc(b["oe"].flatten(1))
    expected = F.cross_entropy(logits_in, b["in"][1]) + 0.7 * oe_loss(logits_oe, logits_in, b["in"][1])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_lambda_zero_is_plain_cross_entropy_without_touching_oe_data():
    backbone = CountingLinear()
    module = OutlierExposureModule(backbone, num_classes=3, lambda_oe=0.0)
    b = batch()
    loss = module.training_step(b, 0)
    assert backbone.calls == [5]
    assert loss.item() == pytest.approx(F.cross_entropy(backbone.fc(b["in"][0].flatten(1)),
                                                        b["in"][1]).item(), rel=1e-6)


def test_negative_lambda_is_refused_with_the_fix():
    with pytest.raises(OEUserError, match=r"lambda_oe must be >= 0.*got -0.5.*loss.lambda_oe=0"):
        OutlierExposureModule(CountingLinear(), num_classes=3, lambda_oe=-0.5)


def test_non_finite_loss_stops_training_step():
    module = OutlierExposureModule(CountingLinear(), num_classes=3)
    b = batch()
    b["oe"][0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        module.training_step(b, 0)


def test_a_deferred_non_finite_check_names_the_first_bad_step_and_blocks_checkpoints():
    """On an accelerator the NaN check is read every N steps (no per-step host sync): the record
    on the device keeps the first bad step, a later finite step does not clear it, and a checkpoint
    is never written past it."""
    module = OutlierExposureModule(CountingLinear(), num_classes=3, nonfinite_check_every=50)
    bad = batch()
    bad["oe"][0, 0, 0, 0] = float("inf")
    module.training_step(bad, 0)  # not read yet: training goes on
    module.training_step(batch(), 1)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 0, step 0"):
        module.on_save_checkpoint({})
    with pytest.raises(NonFiniteLossError, match="step 0"):
        module.raise_if_nonfinite()


class RecordingLogger:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, metrics))


def _in_a_trainer(module, logger, step):
    from types import SimpleNamespace

    module.trainer = SimpleNamespace(log_every_n_steps=1, is_global_zero=True, loggers=[logger], global_step=step,
                                     current_epoch=0, num_training_batches=100, training=True)


def _steps_logged_without_waiting(device, sync_debug_mode=None):
    """Three training steps on ``device`` with their step values logged: the values reach the
    logger only after the step (copied off the device, never waited for), at their own steps.
    ``sync_debug_mode`` ("error"): torch raises on any host-device synchronisation in the steps
    (the batches are moved to the device before)."""
    module = OutlierExposureModule(CountingLinear(), num_classes=3).to(device)
    batches = []
    for _ in range(3):
        b = batch()
        batches.append({"in": (b["in"][0].to(device), b["in"][1].to(device)), "oe": b["oe"].to(device)})
    logger, losses = RecordingLogger(), []
    if sync_debug_mode:
        torch.cuda.set_sync_debug_mode(sync_debug_mode)
    try:
        for step, b in enumerate(batches):
            _in_a_trainer(module, logger, step)
            loss = module.training_step(b, step)
            loss.backward()
            losses.append(loss.detach())
            module.on_train_batch_end(None, b, step)
    finally:
        if sync_debug_mode:
            torch.cuda.set_sync_debug_mode("default")
    module.on_train_end()  # waits for anything still pending
    return logger, losses


def test_step_values_reach_the_loggers_after_the_step_at_their_own_step():
    module = OutlierExposureModule(CountingLinear(), num_classes=3)
    logger = RecordingLogger()
    _in_a_trainer(module, logger, 7)
    loss = module.training_step(batch(), 0)
    assert logger.rows == []  # handed over asynchronously: written after the step
    module.on_train_batch_end(None, batch(), 0)
    [(step, metrics)] = logger.rows
    assert step == 7 and metrics["epoch"] == 0 and metrics["train/loss_step"] == pytest.approx(loss.item())
    assert set(metrics) == {"train/loss_step", "train/loss_in_step", "train/loss_oe_step", "epoch"}
    logger, losses = _steps_logged_without_waiting("cpu")
    assert [s for s, _ in logger.rows] == [0, 1, 2]
    assert [m["train/loss_step"] for _, m in logger.rows] == pytest.approx([x.item() for x in losses])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs it)")
def test_a_gpu_training_step_never_waits_for_the_device():
    """torch's sync debug mode raises on any host-device synchronisation inside the steps."""
    logger, losses = _steps_logged_without_waiting("cuda", sync_debug_mode="error")
    assert [s for s, _ in logger.rows] == [0, 1, 2]
    assert [m["train/loss_step"] for _, m in logger.rows] == pytest.approx([x.item() for x in losses])


def test_wrong_number_of_outputs_is_explained():
    module = OutlierExposureModule(CountingLinear(num_classes=5), num_classes=3)
    with pytest.raises(OEUserError, match=r"logits of shape \(12, 5\).*3 classes"):
        module.training_step(batch(), 0)


@pytest.mark.parametrize("lr", [0.1, 0.001, 1e-4])
def test_paper_cosine_ends_at_an_absolute_1e6_whatever_the_start(lr):
    """hendrycks/outlier-exposure CIFAR/oe_tune.py:142-148: factor 1e-6 / args.learning_rate."""
    from oe_lightning.optim import paper_cosine

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = paper_cosine(optimizer, total_steps=10)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(lr) and lrs[-1] == pytest.approx(1e-6)
    assert lrs[5] == pytest.approx(1e-6 + (lr - 1e-6) / 2)


def test_cosine_schedule_goes_from_lr_to_1e6_lr():
    assert cosine_annealing(0, 100) == 1.0
    assert cosine_annealing(50, 100) == pytest.approx(0.5, abs=1e-6)
    assert cosine_annealing(100, 100) == pytest.approx(1e-6)


def _random_images(n, label_max, shape, seed, transform=None):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, label_max, (n,), generator=g) if label_max else torch.full((n,), -1)
    return TensorImages(torch.rand(n, *shape, generator=g), labels, transform)


def test_any_torchvision_backbone_trains_and_is_scored(tmp_path):
    shape = (3, 32, 32)
    dm = OEDataModule(
        train=functools.partial(_random_images, 24, 10, shape, 0),
        test=functools.partial(_random_images, 12, 10, shape, 1), num_classes=10,
        ood={"noise": functools.partial(_random_images, 10, 0, shape, 2)},
        oe=functools.partial(_random_images, 40, 0, shape, 3), batch_size=8, val_fraction=0.0)
    backbone = torchvision.models.resnet18(num_classes=10)
    optimizer = functools.partial(torch.optim.SGD, lr=0.01)
    module = OutlierExposureModule(backbone, num_classes=10, optimizer=optimizer)
    before = backbone.fc.weight.detach().clone()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    assert trainer.global_step == 3 and not torch.equal(before, backbone.fc.weight)
    evaluation = OODEvaluation(module.backbone)
    trainer.test(evaluation, dm, verbose=False)
    res = evaluation.results
    assert set(res["ood"]) == {"noise"}
    assert set(res["ood"]["noise"]) == {"fpr95", "auroc", "aupr_in", "aupr_out"}
    assert 0.0 <= res["id_accuracy"] <= 1.0 and res["mean"] == res["ood"]["noise"]


def test_fine_tuning_loads_backbone_weights_from_both_checkpoint_kinds(tmp_path):
    source = SmallCNN(num_classes=10, width=8)
    plain = tmp_path / "plain.pt"
    torch.save(source.state_dict(), plain)
    lightning_style = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()},
                "epoch": 3}, lightning_style)
    old = tmp_path / "old.pt"  # a pre-1.0 PyTorch checkpoint: no num_batches_tracked buffers
    torch.save({k: v for k, v in source.state_dict().items() if "num_batches" not in k}, old)
    for path in (plain, lightning_style, old):
        target = SmallCNN(num_classes=10, width=8)
        OutlierExposureModule(target, num_classes=10, pretrained=str(path))
        assert torch.equal(target.fc.weight, source.fc.weight), path


def test_checkpoint_with_other_class_count_or_missing_file_is_explained(tmp_path):
    five = tmp_path / "five.pt"
    torch.save(SmallCNN(num_classes=5, width=8).state_dict(), five)
    with pytest.raises(OEUserError, match="checkpoint has 5 output classes but the data has 10"):
        OutlierExposureModule(SmallCNN(num_classes=10, width=8), num_classes=10, pretrained=str(five))
    wider = tmp_path / "wider.pt"  # the same 10 classes, another width: not a class-count problem
    torch.save(SmallCNN(num_classes=10, width=16).state_dict(), wider)
    with pytest.raises(OEUserError, match="another architecture or width") as refused:
        OutlierExposureModule(SmallCNN(num_classes=10, width=8), num_classes=10, pretrained=str(wider))
    assert "output classes" not in str(refused.value)
    with pytest.raises(OEUserError, match="does not exist"):
        OutlierExposureModule(SmallCNN(num_classes=10), num_classes=10,
                              pretrained=str(tmp_path / "nope.ckpt"))


def test_validation_reports_ood_metrics_against_held_out_oe_images(tmp_path):
    shape = (1, 8, 8)
    dm = OEDataModule(
        train=functools.partial(_random_images, 60, 3, shape, 0),
        test=functools.partial(_random_images, 12, 3, shape, 1), num_classes=3,
        oe=functools.partial(_random_images, 200, 0, shape, 3), batch_size=10, val_fraction=0.2)
    module = OutlierExposureModule(SmallCNN(in_channels=1, num_classes=3), num_classes=3,
                                   optimizer=functools.partial(torch.optim.SGD, lr=0.01))
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    assert {"val/acc", "val/loss", "val/fpr95", "val/auroc"} <= set(metrics)
    # recompute: 12 ID validation images vs the 12 held-out OE images, MSP score
    from oe_lightning.metrics import ood_metrics

    module.eval()
    with torch.no_grad():
        x_in = torch.cat([x for x, _ in dm.val_dataloader()[0]])
        x_oe = torch.cat([x for x, _ in dm.val_dataloader()[1]])
        expected = ood_metrics(module.score(module(x_in)), module.score(module(x_oe)))
    assert float(metrics["val/auroc"]) == pytest.approx(expected["auroc"], abs=1e-6)


class FixedLogits(nn.Module):
    """A 'backbone' whose logits are the input itself: every logit is chosen by the test."""

    def forward(self, x):
        return x.flatten(1)


def test_temperature_is_tuned_on_the_val_loader_and_calibration_mixes_each_ood_set(tmp_path):
    """OODEvaluation with loaders {"val", "in", OOD...}: T from the held-out split's logits (the paper's
    tune_temp), then ID test confidences at T, alone and mixed with each OOD set counted as wrong."""
    from torch.utils.data import DataLoader, TensorDataset

    from oe_lightning.calibration import calibration_summary, ood_calibration, tune_temperature
    from oe_lightning.metrics import paper_subset_size

    g = torch.Generator().manual_seed(0)
    val_x, in_x = 3 * torch.randn(600, 5, generator=g), 3 * torch.randn(1000, 5, generator=g)
    # labels drawn from softmax(logits / 2): the calibrating temperature is about 2
    val_y, in_y = (torch.multinomial(torch.softmax(x / 2, 1), 1, generator=g).squeeze(1) for x in (val_x, in_x))
    ood_x = 6 * torch.randn(700, 5, generator=g)
    loaders = {name: DataLoader(TensorDataset(*t), batch_size=128)
               for name, t in (("val", (val_x, val_y)), ("in", (in_x, in_y)), ("noise", (ood_x,)))}
    module = OODEvaluation(FixedLogits())
    pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).test(
        module, dataloaders=loaders, verbose=False)
    calib = module.results["calibration"]
    t = tune_temperature(val_x, val_y)
    assert calib["temperature"] == t and calib["temperature_tuned_on"] == 600 and 1.5 < t < 2.5
    conf = torch.softmax(in_x / t, 1).max(1)
    assert calib["in"] == pytest.approx(calibration_summary(conf.values, (conf.indices == in_y).float()))
    expected = ood_calibration(conf.values, (conf.indices == in_y).float(),
                               torch.softmax(ood_x / t, 1).max(1).values, paper_subset_size(1000))
    assert calib["ood"]["noise"] == pytest.approx(expected) and calib["mean"] == calib["ood"]["noise"]
    assert module.results["scored"] == {"val": 600, "in": 1000, "noise": 700}
    assert set(module.results["ood"]) == {"noise"}  # the val split is no OOD set
    late = {"in": loaders["in"], "noise": loaders["noise"], "val": loaders["val"]}  # any order
    pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).test(
        module, dataloaders=late, verbose=False)
    assert module.results["calibration"]["temperature"] == t


def test_logged_training_parts_are_what_their_names_say_and_epoch_means_weigh_samples(tmp_path):
    """train/loss_* rows of a real fit (CSV logger, every step): total = ID + λ · OE at every step and
    epoch; the OE part is the cross-entropy to uniform (never below log K); the epoch means weigh
    each step by its ID samples (130 images in batches of 128 and 2: unweighted means differ)."""
    import csv
    import math

    from pytorch_lightning.loggers import CSVLogger

    shape, k = (1, 8, 8), 3
    dm = OEDataModule(
        train=functools.partial(_random_images, 130, k, shape, 0),
        test=functools.partial(_random_images, 12, k, shape, 1), num_classes=k,
        oe=functools.partial(_random_images, 400, 0, shape, 3), batch_size=128, val_fraction=0)
    module = OutlierExposureModule(SmallCNN(in_channels=1, num_classes=k), num_classes=k, lambda_oe=0.5,
                                   optimizer=functools.partial(torch.optim.SGD, lr=0.0))  # same weights each step
    trainer = pl.Trainer(max_epochs=1, logger=CSVLogger(tmp_path), log_every_n_steps=1, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(module, dm)
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    steps = [r for r in rows if r.get("train/loss_step")]
    (epoch,) = [r for r in rows if r.get("train/loss_epoch")]
    assert len(steps) == 2
    for row, when in [*((s, "step") for s in steps), (epoch, "epoch")]:
        total, part_in, part_oe = (float(row[f"train/{n}_{when}"]) for n in ("loss", "loss_in", "loss_oe"))
        assert total == pytest.approx(part_in + 0.5 * part_oe, rel=1e-5)
        assert part_oe >= math.log(k) - 1e-5
    per_step = [float(r["train/loss_in_step"]) for r in steps]
    assert abs(per_step[0] - per_step[1]) > 1e-3  # so that the weighting is visible
    assert float(epoch["train/loss_in_epoch"]) == pytest.approx((128 * per_step[0] + 2 * per_step[1]) / 130, rel=1e-5)
