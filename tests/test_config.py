"""Every config option composes, and the pieces it names instantiate."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from oe_lightning.baseline import is_baseline
from oe_lightning.building import build_datamodule, build_module
from oe_lightning.config import config_dir

CONF = Path(config_dir())


def options(group):
    """The options a user can pick: a file named _*.yaml is a base that options pull in, not one itself."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.name.startswith("_"))


def compose_train(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("group", ["model", "loss", "score", "optim", "data", "oe", "ood"])
def test_every_option_of_a_group_composes_and_builds(group, tmp_path):
    for name in ("cat", "dog"):  # data=image_folder: the user's class sub-folders
        (tmp_path / "own" / name).mkdir(parents=True)
    text = ["oe=lee_news", "ood=text_embedded"]  # a text data or model option with the text groups that fit it
    needs = {("model", "custom"): ["model._target_=oe_lightning.models.SmallCNN"],
             ("data", "image_folder"): [f"data.train_dir={tmp_path / 'own'}"],
             **{("model", m): ["data=rotten_tomatoes", *text] for m in ("gru", "text_transformer")},
             **{("data", d): ["model=gru", *text] for d in ("rotten_tomatoes", "sst", "newsgroups20", "trec")}}
    for option in options(group):
        extra = needs.get((group, option), [])
        cfg = compose_train(f"{group}={option}", *extra)
        module = build_module(cfg)
        assert module.lambda_oe == cfg.loss.lambda_oe
        datamodule = build_datamodule(cfg, with_oe=True)
        assert datamodule.num_classes == cfg.data.num_classes


def test_every_detector_composes_into_one_list_and_builds_one_evaluation():
    """detector=[...] selects several options of the group at once; each becomes a named detector
    with score= naming the primary among them, and the evaluation knows which need the ID training set."""
    from oe_lightning.building import build_evaluation

    names = options("detector")
    assert set(names) >= {"msp", "max_logit", "energy", "entropy", "oe", "mahalanobis", "knn", "vim", "react",
                          "ash", "odin"}
    cfg = compose_train(f"detector=[{','.join(names)}]", "detector.knn.k=7", "score=energy")
    evaluation = build_evaluation(cfg, build_module(cfg).backbone)
    assert list(evaluation.detectors)[0] == "energy" and evaluation.primary == "energy"  # a name, job or not
    assert sorted(evaluation.detectors) == sorted(names)  # the primary once
    assert evaluation.detectors["knn"].k == 7
    assert sorted(evaluation.fit_detectors) == ["knn", "mahalanobis", "react", "vim"]
    assert evaluation.detectors["odin"].norm_std == [0.376]  # data/digits.yaml's std


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_runtime_groups_compose(group):
    for option in options(group):
        cfg = compose_train(f"{group}={option}")
        assert OmegaConf.select(cfg, group) is not None


def test_energy_loss_margins_suit_the_data():
    digits = compose_train("loss=energy")
    assert (digits.loss.fn.m_in, digits.loss.fn.m_out) == (-7.0, -2.0)  # data/digits.yaml's energy_margins
    cifar = compose_train("loss=energy", "data=cifar10")
    assert (cifar.loss.fn.m_in, cifar.loss.fn.m_out) == (-23.0, -5.0)  # the energy paper's CIFAR margins
    assert compose_train("loss=energy", "loss.fn.m_in=-9").loss.fn.m_in == -9


def test_a_custom_model_gets_only_num_classes_and_what_the_user_adds():
    cfg = compose_train("model=custom", "model._target_=my_pkg.MyNet", "+model.depth=4")
    assert dict(cfg.model) == {"_target_": "my_pkg.MyNet", "num_classes": 10, "depth": 4}


@pytest.mark.parametrize("preset,key,value", [("fdr", "trainer.fast_dev_run", True),
                                              ("limit", "trainer.limit_train_batches", 3),
                                              ("overfit", "trainer.overfit_batches", 3),
                                              ("profiler", "trainer.profiler._target_",
                                               "pytorch_lightning.profilers.SimpleProfiler")])
def test_debug_presets_compose_on_the_cpu_without_skipping_or_resuming(preset, key, value):
    cfg = compose_train(f"debug={preset}", "trainer=ddp_sim")
    assert OmegaConf.select(cfg, key) == value
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu"
    assert not cfg.skip_complete and not cfg.auto_resume and cfg.trainer.devices == 1


def test_experiment_presets_compose():
    energy = compose_train("experiment=digits_energy")
    assert energy.loss.fn._target_.endswith("EnergyMargin") and energy.loss.lambda_oe == 0.1
    assert energy.score == "energy"
    tune = compose_train("experiment=digits_oe_tune", "module.pretrained=base.ckpt")
    assert tune.module.optimizer.lr == 0.01 and tune.trainer.max_epochs == 5


def test_baseline_instantiates_no_oe_dataset():
    cfg = compose_train("loss.lambda_oe=0")
    module = build_module(cfg)
    assert module.lambda_oe == 0
    assert build_datamodule(cfg, with_oe=not is_baseline(module.lambda_oe)).oe_factory is None


def test_defaults_are_the_papers():
    cfg = compose_train()
    assert cfg.loss.lambda_oe == 0.5 and cfg.loss.fn._target_.endswith("UniformCrossEntropy")
    opt = cfg.module.optimizer
    assert (opt._target_, opt.momentum, opt.nesterov, opt.weight_decay) == ("torch.optim.SGD", 0.9, True, 5e-4)
    assert cfg.module.scheduler.min_lr == 1e-6  # absolute, CIFAR/oe_tune.py:142-148
    assert cfg.data.oe_batch_size == 2 * cfg.data.batch_size
    assert cfg.score == "msp"


def test_the_oe_photo_never_appears_in_the_ood_suite():
    cfg = compose_train()
    assert cfg.oe.image == "china.jpg"
    assert all(node.get("image") != cfg.oe.image for node in cfg.ood.values())


@pytest.mark.parametrize("trainer,backend,devices", [("ddp", "nccl", 2), ("ddp_sim", "gloo", 2),
                                                     ("slurm", "nccl", 2)])
def test_ddp_trainers_use_the_strategy_that_keeps_hydra_job_directories(trainer, backend, devices):
    from hydra.utils import instantiate

    from oe_lightning.distributed import HydraDDPStrategy

    cfg = compose_train(f"trainer={trainer}")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, HydraDDPStrategy)
    assert strategy._process_group_backend == backend and cfg.trainer.devices == devices


def test_sweep_job_directories_are_unique_and_path_safe():
    from oe_lightning.config import job_dirname

    assert job_dirname("loss:energy+loss.lambda_oe:0.1") == "loss:energy+loss.lambda_oe:0.1"
    assert job_dirname("") == "no_overrides"
    a = job_dirname("experiment:paper/cifar10_baseline+seed:0")
    b = job_dirname("experiment:paper/cifar100_baseline+seed:0")
    assert a == "experiment:paper-cifar10_baseline+seed:0" and a != b
    long = [job_dirname(f"ckpt_path:/runs/{'x' * 120}/{i}.ckpt+score:msp") for i in range(2)]
    assert long[0] != long[1] and all(len(n) <= 100 and "/" not in n for n in long)
    assert job_dirname("module.pretrained:b/seed_${seed}/last.ckpt+data.image_shape:[1,8,8]") == \
        "module.pretrained:b-seed_--seed--last.ckpt+data.image_shape:-1-8-8-"


@pytest.mark.parametrize("data,oe,augmented", [("cifar10", "random_300k", {"in", "oe"}),
                                               ("cifar100", "random_300k", {"in", "oe"}),
                                               ("svhn", "random_300k", {"in", "oe"}),
                                               ("tiny_imagenet", "imagenet22k", {"in"})])
def test_speed_presets_keep_training_images_on_the_device_with_the_datas_own_augmentation(data, oe, augmented):
    """speed=gpu after a paper preset: resident, batch-augmented as data.device_augment (the reference
    transforms' per-batch versions), bf16 and channels_last, overriding the preset's fp32."""
    from hydra.utils import instantiate

    cfg = compose_train(f"experiment=paper/{data}_oe_tune", f"oe={oe}", "speed=gpu", "module.pretrained=base.pt")
    assert cfg.data.resident and cfg.data.num_workers == 0 and cfg.module.channels_last
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    augment = {k: v for k, v in instantiate(cfg.data.batch_augment).items() if v is not None}
    assert set(augment) == augmented
    size, padding = {"cifar10": (32, 4), "cifar100": (32, 4), "svhn": (None, 0), "tiny_imagenet": (64, 8)}[data]
    assert (augment["in"].size, augment["in"].padding, augment["in"].flip) == (size, padding, data != "svhn")
    if data == "svhn":  # the reference flips SVHN's OE images only (SVHN/oe_tune.py:70-72)
        assert augment["oe"].flip and augment["oe"].padding == 0
    plain = compose_train(f"experiment=paper/{data}_oe_tune", f"oe={oe}", "module.pretrained=base.pt")
    assert plain.trainer.precision == "32-true" and not plain.data.get("resident", False)
    assert plain.data.get("batch_augment") is None


@pytest.mark.parametrize("value,ok", [(0, False), (-0.1, False), (1.0000001, False), (2, False), ("x", False),
                                      (1.0, True), (0.5, True), (1e-6, True)])
def test_keep_id_is_a_share_in_0_1_refused_outside_before_any_work(value, ok):
    from oe_lightning.errors import OEUserError
    from oe_lightning.validate import check_config

    cfg = compose_train(f"evaluation.keep_id={value}")
    if ok:
        check_config(cfg, "train")
        return
    with pytest.raises(OEUserError, match=r"evaluation\.keep_id"):
        check_config(cfg, "train")


def test_the_readmes_detector_knobs_are_the_configs_defaults():
    """The README's detector table names each knob's default, e.g. `k` (50): the config must agree."""
    import re

    from tests.conftest import REPO

    table = (REPO / "README.md").read_text().split("| `detector=` |", 1)[1].split("\n\n", 1)[0]
    cfg = compose_train("detector=[knn,react,ash,odin,vim]")
    checked = 0
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip("|"))]
        names = re.findall(r"`(\w+)`", cells[0])
        for knob, default in re.findall(r"`(\w+)` \(([-\d.]+)[,)]", cells[-1]):
            for name in names:
                assert float(cfg.detector[name][knob]) == float(default), (name, knob)
                checked += 1
    assert checked >= 5  # knn k, react percentile, ash percentile, odin temperature and eps
