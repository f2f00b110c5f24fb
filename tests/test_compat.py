"""oe_lightning.compat: one test per private name of Lightning, torch, torchvision, torchmetrics or
OmegaConf the package uses, on real objects, so an upgrade that removes or changes one fails here."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins.environments import LightningEnvironment
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import Metric, SumMetric
from torchvision import datasets

from oe_lightning import compat
from oe_lightning.compat import (
    attached_trainer,
    batches_processed_this_epoch,
    integrity_check_override,
    logger_experiment_or_none,
    metric_should_sync,
    set_logger_experiment,
    unresolved_value,
    wandb_init_kwargs,
)

REPO = Path(__file__).resolve().parent.parent
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "PL_GLOBAL_SEED")


def test_compat_and_results_import_without_lightning():
    code = "import sys, oe_lightning.compat, oe_lightning.results; print('pytorch_lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.split() == ["False"], out.stdout + out.stderr


# --- Lightning: a real (tiny) fit ---------------------------------------------------------------------


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.seen: list[tuple[int, int, bool, int]] = []

    def training_step(self, batch, batch_idx):
        attached = attached_trainer(self)
        self.seen.append((self.current_epoch, batch_idx, attached is self.trainer, -1))
        return self.layer(batch[0]).sum()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        epoch, idx, attached, _ = self.seen[-1]
        self.seen[-1] = (epoch, idx, attached, batches_processed_this_epoch(self.trainer))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    module = _Tiny()
    loader = DataLoader(TensorDataset(torch.rand(8, 2)), batch_size=2)  # 4 batches an epoch
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path_factory.mktemp("fit"))
    trainer.fit(module, loader)
    return module, trainer


def test_attached_trainer_is_none_outside_a_trainer_where_module_trainer_raises(fitted):
    alone = _Tiny()
    assert attached_trainer(alone) is None
    with pytest.raises(RuntimeError):
        alone.trainer  # noqa: B018 - why compat reads LightningModule._trainer
    module, trainer = fitted
    assert [attached for _, _, attached, _ in module.seen] == [True] * 8
    assert attached_trainer(module) is trainer


def test_batches_processed_this_epoch_counts_the_batch_just_trained_and_restarts_each_epoch(fitted):
    module, _ = fitted
    assert [(epoch, idx, done) for epoch, idx, _, done in module.seen] == \
        [(epoch, idx, idx + 1) for epoch in range(2) for idx in range(4)]


# --- Lightning: loggers -------------------------------------------------------------------------------


def test_wandb_init_kwargs_are_what_the_logger_passes_to_wandb_init(monkeypatch, tmp_path):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")  # WandbLogger(offline=True) sets it
    monkeypatch.setattr(wandb, "run", None)
    passed: dict = {}

    class FakeRun:
        def finish(self, exit_code: int = 0) -> None:
            pass

    run = FakeRun()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: (passed.update(kwargs), run)[1])
    logger = WandbLogger(project="compat", save_dir=str(tmp_path), offline=True)
    init = wandb_init_kwargs(logger)
    assert "anonymous" in init and init["anonymous"] is None and init["project"] == "compat"
    init.pop("anonymous")
    assert logger_experiment_or_none(logger) is None
    assert logger.experiment is run
    assert passed["project"] == "compat" and "anonymous" not in passed
    assert logger_experiment_or_none(logger) is run


def test_logger_experiment_is_what_the_public_experiment_returns_and_uses(tmp_path):
    logger = CSVLogger(str(tmp_path), name="run", version=0)
    assert logger_experiment_or_none(logger) is None
    created = logger.experiment
    assert logger_experiment_or_none(logger) is created
    writer = ExperimentWriter(log_dir=str(tmp_path / "other"))
    set_logger_experiment(logger, writer)
    assert logger.experiment is writer
    logger.log_metrics({"a": 1.0}, step=3)
    logger.save()
    assert (tmp_path / "other" / "metrics.csv").read_text().splitlines() == ["a,step", "1.0,3"]


def test_continuing_experiment_writer_keeps_metrics_csv_that_lightnings_writer_deletes(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("a,b,step\n1.0,2.0,0\n")  # Lightning writes the keys sorted
    writer = compat.ContinuingExperimentWriter(log_dir=str(tmp_path))
    assert isinstance(writer, ExperimentWriter) and writer.metrics_keys == ["a", "b", "step"]
    writer.log_metrics({"a": 3.0, "b": 4.0}, step=1)
    writer.save()
    assert metrics.read_text().splitlines() == ["a,b,step", "1.0,2.0,0", "3.0,4.0,1"]
    with pytest.warns(UserWarning, match="will be deleted"):
        ExperimentWriter(log_dir=str(tmp_path))  # the hook overridden is the one that deletes it
    assert not metrics.exists()


# --- Lightning: DDP launching -------------------------------------------------------------------------


@pytest.fixture
def launch_env(monkeypatch):
    """No launch variables during the test, and exactly the earlier ones after it: launch() sets them in this
    process, and a WORLD_SIZE left behind would make every later DDP run of this worker wait for ranks that
    never come (monkeypatch.delenv of an absent name records nothing to undo)."""
    saved = {key: os.environ.pop(key, None) for key in LAUNCH_ENV}
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # launch() would change it
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_script_launcher_starts_each_rank_with_our_command_and_lightnings_environment(launch_env, tmp_path):
    out = tmp_path / "rank{}.txt"

    class Launcher(compat.ScriptLauncher):
        def command_for_rank(self, local_rank):
            return [sys.executable, "-c", "import os, sys; open(sys.argv[1], 'w').write("
                    "' '.join(os.environ[k] for k in ('LOCAL_RANK', 'WORLD_SIZE', 'NODE_RANK', 'MASTER_PORT')))",
                    str(out).format(local_rank)]

    launcher = Launcher(LightningEnvironment(), num_processes=3, num_nodes=1)
    assert isinstance(launcher, _SubprocessScriptLauncher)
    assert launcher.launch(lambda: "rank 0 ran") == "rank 0 ran"
    assert [proc.wait(timeout=60) for proc in launcher.procs] == [0, 0]
    port = os.environ["MASTER_PORT"]
    assert [out.with_name(f"rank{r}.txt").read_text() for r in (1, 2)] == [f"1 3 0 {port}", f"2 3 0 {port}"]
    assert (os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"]) == ("0", "3")


def test_script_launcher_without_a_command_is_lightnings_own(launch_env, monkeypatch):
    called = []
    monkeypatch.setattr(_SubprocessScriptLauncher, "_call_children_scripts", lambda self: called.append(self))
    launcher = compat.ScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    launcher.launch(lambda: None)
    assert called == [launcher]


def test_ddp_strategy_with_script_launcher_replaces_the_popen_launcher_only():
    from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    from oe_lightning.distributed import HydraDDPStrategy, HydraJobLauncher

    class Launcher(compat.ScriptLauncher):
        pass

    class Strategy(compat.DDPStrategyWithScriptLauncher):
        script_launcher = Launcher

    def launcher(strategy):
        trainer = pl.Trainer(strategy=strategy, accelerator="cpu", devices=2, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False)
        return trainer.strategy.launcher

    assert type(launcher(Strategy())) is Launcher
    assert type(launcher(HydraDDPStrategy())) is HydraJobLauncher
    assert type(launcher(Strategy(start_method="spawn"))) is _MultiProcessingLauncher


# --- torch, torchmetrics ------------------------------------------------------------------------------


def test_batch_norm_base_is_every_batch_norm_and_no_other_norm():
    base = compat.BatchNormBase
    assert base is nn.modules.batchnorm._BatchNorm
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LazyBatchNorm2d, nn.SyncBatchNorm):
        assert issubclass(cls, base), cls
    for cls in (nn.InstanceNorm2d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm):
        assert not issubclass(cls, base), cls
    batch_norms = {cls for name, cls in vars(nn).items() if "BatchNorm" in name and isinstance(cls, type)}
    assert batch_norms and all(issubclass(cls, base) for cls in batch_norms)
    layer = nn.BatchNorm2d(3)
    assert layer.training and isinstance(layer, base) and layer.running_mean is not None


class _Recording(Metric):
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.during_update: list[bool] = []

    def update(self, x):
        self.during_update.append(metric_should_sync(self))
        self.total += x.sum()

    def compute(self):
        return self.total


class _RecordingFullState(_Recording):
    full_state_update = True


@pytest.mark.parametrize("cls", [_Recording, _RecordingFullState])  # forward's two paths
def test_metric_should_sync_is_sync_on_compute_outside_forward_and_dist_sync_on_step_inside(cls):
    for sync_on_compute, dist_sync_on_step in ((True, False), (False, True)):
        metric = cls(sync_on_compute=sync_on_compute, dist_sync_on_step=dist_sync_on_step)
        assert metric_should_sync(metric) is sync_on_compute
        metric(torch.ones(2))
        assert metric.during_update[-1] is dist_sync_on_step
        assert metric_should_sync(metric) is sync_on_compute
    gathered = []

    def gather(tensor, group=None):
        gathered.append(tensor.clone())
        return [tensor, tensor]

    for sync_on_compute in (True, False):
        metric = SumMetric(sync_on_compute=sync_on_compute)
        metric.update(torch.tensor(2.0))
        gathered.clear()
        with metric.sync_context(dist_sync_fn=gather, should_sync=metric_should_sync(metric),
                                 distributed_available=lambda: True):
            assert float(metric.sum_value) == (4.0 if sync_on_compute else 2.0)
        assert bool(gathered) is sync_on_compute and float(metric.sum_value) == 2.0


# --- torchvision --------------------------------------------------------------------------------------


def _write(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return hashlib.md5(content).hexdigest()


@pytest.mark.parametrize("cls", [datasets.CIFAR10, datasets.CIFAR100, datasets.SVHN])
def test_integrity_check_override_is_the_check_torchvision_runs_before_reading(cls, tmp_path):
    from oe_lightning.data.vision import _integrity_files

    seen = []

    def wrap(check):
        seen.append(check)

        def refuse(self):
            seen.append((check(self), _integrity_files(self)))
            return False
        return refuse

    attrs = integrity_check_override(cls, wrap)
    assert set(attrs) == {"_check_integrity"} and seen == [cls._check_integrity]
    if cls is datasets.SVHN:
        md5 = _write(tmp_path / "test_32x32.mat", b"digits")
        attrs["split_list"] = {**cls.split_list, "test": [cls.split_list["test"][0], "test_32x32.mat", md5]}
        expected = [(tmp_path / "test_32x32.mat", md5)]
        kwargs = {"split": "test"}
    else:
        names = [name for name, _ in (*cls.train_list, *cls.test_list)]
        files = {name: _write(tmp_path / cls.base_folder / name, name.encode()) for name in names}
        attrs["train_list"] = [[name, files[name]] for name, _ in cls.train_list]
        attrs["test_list"] = [[name, files[name]] for name, _ in cls.test_list]
        expected = [(tmp_path / cls.base_folder / name, files[name]) for name in names]
        kwargs = {"train": False}
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        type(cls.__name__, (cls,), attrs)(root=str(tmp_path), **kwargs)
    ok, checked = seen[-1]
    assert ok is True and checked == expected  # torchvision's own check passed on these files
    with open(expected[0][0], "ab") as file:
        file.write(b"changed")
    with pytest.raises(RuntimeError):
        type(cls.__name__, (cls,), attrs)(root=str(tmp_path), **kwargs)
    assert seen[-1][0] is False  # and it is an md5 check


# --- OmegaConf ----------------------------------------------------------------------------------------


def test_unresolved_value_is_the_value_as_written():
    cfg = OmegaConf.create({"missing": "???", "runtime": "${hydra:runtime.output_dir}", "bad": "${nowhere}",
                            "plain": 3, "text": "x", "alias": "${plain}"})
    with pytest.raises(MissingMandatoryValue):
        cfg["missing"]  # noqa: B018
    for key in ("runtime", "bad"):
        with pytest.raises(InterpolationResolutionError):
            cfg[key]  # noqa: B018
    assert {key: unresolved_value(cfg, key) for key in cfg} == {
        "missing": "???", "runtime": "${hydra:runtime.output_dir}", "bad": "${nowhere}", "plain": 3, "text": "x",
        "alias": "${plain}"}


def test_the_installed_libraries_are_within_pyprojects_bounds_and_lightning_is_bounded():
    from importlib.metadata import version

    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = {r.name: r for r in map(Requirement, project["dependencies"])}
    for name in ("pytorch-lightning", "torchmetrics", "torch", "torchvision", "omegaconf", "wandb"):
        assert requirements[name].specifier.contains(version(name), prereleases=True), (name, version(name))
    assert any(spec.operator == "<" for spec in requirements["pytorch-lightning"].specifier)
    assert any(spec.operator == "<" for spec in requirements["torchmetrics"].specifier)


# --- the rest of the package goes through compat ------------------------------------------------------

PRIVATE = re.compile(r"_SubprocessScriptLauncher|_configure_launcher|_call_children_scripts|_check_can_spawn"
                     r"|_wandb_init|\._experiment\b|self\._experiment\b|_check_log_dir_exists|self\._fs\b"
                     r"|_check_integrity|_to_sync|_get_node|batch_progress|_BatchNorm|\._trainer\b"
                     r"|lightning_fabric")


def test_private_names_are_used_only_in_compat():
    found = []
    for path in sorted((REPO / "oe_lightning").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name == "oe_lightning/compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
