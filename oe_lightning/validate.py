"""Check a composed config before any data is read or a model built, and report every problem at once.

Each rule names a key, what it must be and how to fix it; :func:`check_config` collects the
problems of all rules (a value that cannot even be resolved is one problem, not a crash) and raises
one :class:`OEUserError` listing them. Rules are plain data: adding a key is adding a line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from oe_lightning import detector_registry as registry
from oe_lightning.baseline import is_baseline, uses_oe_key
from oe_lightning.checks import Check, boolean, choice, existing_file, integer, is_int, number, optional
from oe_lightning.errors import OEUserError
from oe_lightning.evaluation_settings import SETTING_RULES
from oe_lightning.ood_groups import groups_of

_ABSENT = object()


# Upper bounds, checked before anything is allocated (a checkpoint's stored values meet the same ones:
# oe_lightning/deployment.py). Each is far above what any recipe here uses, and far below what kills a run.
MAX_IMAGE_SIDE = 2048  # px: twice the largest input of timm's pretrained classifiers (1024, SAM's ViT);
# one 2048² RGB float32 image is 48 MiB, one of 100,000² would be 112 GiB
MAX_RESIZE = 2560      # px: the shorter side before the centre crop (eval_resize is 8/7 of the crop: 2341 at 2048)
MAX_BATCH_SIZE = 65536  # images in one batch; the paper's largest is 256 (OE), ImageNet recipes reach 4096
MAX_BATCH_GIB = 16      # GiB of float32 input images in one batch (batch size x channels x height x width x 4)
MAX_LAMBDA = 1000.0     # the paper uses 0.5, energy 0.1; at 1000 the ID cross-entropy is 0.1% of the loss
TEMPERATURE_RANGE = (1e-3, 1e3)  # energy / calibration T: the paper's 1 and the tuned [0.2, 5] well inside;
# logits / T overflows float32 to inf (every energy -inf) as T nears 0, and every softmax is uniform as T grows
MAX_SEED = 2**32 - 1    # numpy's seed range: 0 .. 2**32 - 1


def image_shape(v: Any) -> bool:
    """``[channels, height, width]``, positive integers, sides at most :data:`MAX_IMAGE_SIDE`."""
    return (isinstance(v, list | tuple) and len(v) == 3 and all(is_int(x) and x >= 1 for x in v)
            and max(v[1:]) <= MAX_IMAGE_SIDE)


def batch_limit(v: Any) -> bool:
    """Lightning's ``limit_*_batches``: a batch count >= 1 or a share in (0, 1] (null: all)."""
    if v is None:
        return True
    return v >= 1 if is_int(v) else number(0, 1, low_open=True)(v)


# (key, check, what it must be, how to fix it); keys absent from a config are skipped
RULES: list[tuple[str, Check, str, str]] = [
    ("seed", integer(0, MAX_SEED), f"an integer in [0, {MAX_SEED}] (numpy's seed range)", "e.g. seed=0"),
    ("trainer.max_epochs", integer(1), "an integer >= 1", "e.g. trainer.max_epochs=30"),
    ("trainer.max_steps", lambda v: v == -1 or integer(1)(v), "-1 (no step limit) or an integer >= 1",
     "0 steps would mark an untrained model complete; -1 lets trainer.max_epochs decide"),
    ("trainer.limit_train_batches", batch_limit, "null, an integer >= 1 or a share in (0, 1]",
     "0 would train nothing and mark the untrained model complete; 1.0 trains on every batch"),
    ("data.batch_size", integer(1, MAX_BATCH_SIZE), f"an integer in [1, {MAX_BATCH_SIZE}]",
     "e.g. data.batch_size=128"),
    ("data.oe_batch_size", optional(integer(1, MAX_BATCH_SIZE)), f"null or an integer in [1, {MAX_BATCH_SIZE}]",
     "null takes 2 x data.batch_size; the paper uses 256"),
    ("data.image_size", integer(1, MAX_IMAGE_SIDE), f"an integer in [1, {MAX_IMAGE_SIDE}] (pixels)",
     f"e.g. 224 for ImageNet backbones, 32 for small images; {MAX_IMAGE_SIDE} px is twice the largest input of "
     f"timm's pretrained classifiers, and one 100,000 px image alone would need 112 GiB"),
    ("data.image_shape", image_shape, f"[channels, height, width] of integers >= 1, sides at most {MAX_IMAGE_SIDE}",
     "e.g. [3, 32, 32]"),
    ("data.eval_resize", optional(integer(1, MAX_RESIZE)), f"null or an integer in [1, {MAX_RESIZE}] (pixels)",
     "null resizes test images to the crop size; image_folder's default is 8/7 of data.image_size"),
    ("data.test_fraction", number(0, 1, low_open=True, high_open=True), "a fraction in (0, 1)",
     "the share of data.train_dir held out for testing, e.g. 0.2 (0 leaves no test images, 1 no training "
     "images; or give data.test_dir)"),
    ("data.num_workers", integer(0), "an integer >= 0", "0 loads in the main process"),
    ("data.val_fraction", number(0, 1, high_open=True), "a fraction in [0, 1)", "0 for no validation split"),
    ("data.val_size", optional(integer(0)), "null or an integer >= 0", "null uses data.val_fraction"),
    ("data.val_split", choice("random", "tail", "numpy_shuffle"), "random, tail or numpy_shuffle",
     "random holds out a seeded random part"),
    ("data.resident", boolean, "true or false", "true keeps the training images on the device"),
    ("data.resident_max_gb", number(0, low_open=True), "a number > 0", "GiB of images data.resident may hold"),
    ("loss.lambda_oe", number(0, MAX_LAMBDA), f"a number in [0, {MAX_LAMBDA:g}]",
     f"0 for the plain baseline; the paper uses 0.5 (energy 0.1); above {MAX_LAMBDA:g} the ID cross-entropy is "
     f"under 0.1% of the loss, and a huge λ overflows it to inf"),
    ("module.optimizer.lr", number(0, low_open=True), "a number > 0", "the paper uses 0.1 (0.001 fine-tuning)"),
    ("module.optimizer.momentum", number(0, 1, high_open=True), "a number in [0, 1)", "the paper uses 0.9"),
    ("module.optimizer.weight_decay", number(0), "a number >= 0", "the paper uses 5e-4"),
    ("module.pretrained", optional(existing_file), "null or an existing checkpoint file",
     "pass a run's checkpoints/last.ckpt or a state_dict .pt"),
    ("module.backbone_lr_scale", number(0), "a number >= 0", "1: one learning rate; 0.1 for fine-tuning; 0 freezes"),
    ("module.channels_last", boolean, "true or false", "true with trainer=gpu"),
    ("module.compile", boolean, "true or false", "true compiles the training forward"),
    *[(f"evaluation.{key}", *rule) for key, rule in SETTING_RULES.items()],
    ("oe.exclude_file", optional(existing_file), "null or an existing file",
     "the 80M Tiny Images CIFAR index, 80mn_cifar_idxs.txt, from the paper's repository"),
]
TRAIN_RULES = [("ckpt_path", optional(existing_file), "null or an existing checkpoint file",
                "pass RUN_DIR/checkpoints/last.ckpt to resume, or leave it null"),
               ("callbacks.step_checkpoint.every_n_steps", optional(integer(1)), "null or an integer >= 1",
                "e.g. 500 writes checkpoints/step.ckpt every 500 steps; null: only at epoch ends")]
EVAL_RULES = [("ckpt_path", existing_file, "an existing checkpoint file",
               "pass RUN_DIR/checkpoints/last.ckpt written by oe-train")]
DEPLOY_RULES = EVAL_RULES + [
    ("threshold", optional(number()), "null or a finite number", "null applies the threshold oe-train chose"),
    ("model_allowlist", lambda v: v is None or isinstance(v, list | tuple) and all(isinstance(t, str) for t in v),
     "a list of dotted factory paths", "e.g. model_allowlist=[my_pkg.MyNet]"),
    ("overwrite", boolean, "true or false", "true replaces existing output files (never the checkpoint or an input)"),
]
PREDICT_RULES = DEPLOY_RULES + [
    ("batch_size", integer(1, MAX_BATCH_SIZE), f"an integer in [1, {MAX_BATCH_SIZE}]", "e.g. batch_size=64"),
    ("num_workers", integer(0), "an integer >= 0", "0 reads images in the main process"),
    ("input", lambda v: isinstance(v, str) and bool(v) or isinstance(v, list | tuple) and len(v) > 0
     and all(isinstance(i, str) for i in v), "an image file, a folder, or a list of them",
     "e.g. input=photos/ or input=[a.jpg,b.png]"),
]
EXPORT_RULES = DEPLOY_RULES + [
    ("format", choice("torchscript", "onnx"), "torchscript or onnx", "torchscript needs only torch"),
]
DERIVED = {"data.image_shape": ("data.image_size",), "data.eval_resize": ("data.image_size",)}
TASK_RULES = {"train": TRAIN_RULES, "evaluate": EVAL_RULES, "predict": PREDICT_RULES, "export": EXPORT_RULES}
DETECTOR_RULES = {  # detector.<name>.<key>
    "k": (integer(1), "an integer >= 1", "KNN's paper uses 50 (CIFAR-10)"),
    "percentile": (number(0, 1), "a fraction in [0, 1]", "e.g. 0.9 (ReAct), 0.65 (ASH)"),
    "temperature": (number(*TEMPERATURE_RANGE), f"a number in [{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}]",
                    "1 is the plain energy, ODIN uses 1000; near 0, logits / T overflows and every score is -inf"),
    "eps": (number(0), "a number >= 0", "ODIN uses 0.0014"),
    "d": (optional(integer(1)), "null or an integer >= 1", "null keeps half the feature dimensions"),
}


def _value(cfg: DictConfig, key: str) -> tuple[Any, str | None]:
    """The resolved value at ``key`` (``_ABSENT`` if the config has no such key), or the reason
    it cannot be resolved."""
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception as err:  # noqa: BLE001 - a missing or broken interpolation is a problem to report
        return None, " ".join(str(err).split()).split(" full_key:")[0]
    return value, None


def problems(cfg: DictConfig, task: str = "train", skip: frozenset[str] = frozenset()) -> list[str]:
    """Every rule the config breaks, as ``key=value: must be ...; fix`` lines (``skip``: keys not checked)."""
    rules = (RULES if task in ("train", "evaluate") else []) + TASK_RULES.get(task, EVAL_RULES)
    found = family_problems(cfg) if task == "train" else []
    if found:  # the other rules would only report the same mismatch as unresolvable keys
        return found
    try:
        detectors = registry.detector_configs(cfg) if task in ("train", "evaluate") else {}
    except OEUserError as err:
        detectors, found = {}, [str(err)]
    for name, node in detectors.items():
        chosen = name in (cfg.get("detector") or {})  # else the primary's own file (score=name)
        for key, (check, what, fix) in DETECTOR_RULES.items():
            if chosen:
                rules.append((f"detector.{name}.{key}", check, what, fix))
            elif key in node and not check(node[key]):
                found.append(f"conf/detector/{name}.yaml: {key}={node[key]!r} must be {what}; {fix}")
    if task in ("train", "evaluate"):
        try:
            groups_of(cfg.get("ood"))
        except OEUserError as err:
            found.append(str(err))
    if task == "train" and is_baseline(_value(cfg, "loss.lambda_oe")[0]):  # a baseline reads no OE data
        rules = [r for r in rules if not uses_oe_key(r[0])]
    for key, check, what, fix in rules:
        if key in skip or any(f.startswith(f"{k}=") for k in DERIVED.get(key, ()) for f in found):
            continue  # a value made from one already refused: that one problem is enough
        if key == "data.test_fraction" and _value(cfg, "data.test_dir")[0] not in (None, _ABSENT):
            continue  # a test folder of its own: nothing is held out
        value, broken = _value(cfg, key)
        if broken is not None:
            found.append(f"{key} cannot be resolved ({broken})")
        elif value is not _ABSENT and not check(value):
            if key == "module.pretrained" or key.endswith(("ckpt_path", "exclude_file")):
                what += f" ({value!r} does not exist)" if isinstance(value, str) else ""
            found.append(f"{key}={value!r} must be {what}; {fix}")
    broken = {p.split("=", 1)[0].split(" ", 1)[0] for p in found}
    return (found + batch_memory_problems(cfg, broken | skip) + device_problems(cfg, task, skip)
            + text_problems(cfg, task, detectors))


TEXT_CHOICES = "oe=lee_news or oe=wikitext2, ood=text_embedded or ood=nlp_paper, model=gru or model=text_transformer"


def family_problems(cfg: DictConfig) -> list[str]:
    """Groups made for another data family than ``data``'s (image OE, OOD sets, model or ``speed=`` with text data,
    a text model with image data), each named with the choices that fit, before anything is resolved."""
    text = OmegaConf.select(cfg, "data.family", default=None) is not None
    name = OmegaConf.select(cfg, "data.name", default="this data")
    found = []
    for group in ("oe", "ood", "val_ood", "model"):
        node = cfg.get(group)
        raw = OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else ""
        if text and "data.image_shape" in raw:
            found.append(f"data={name} is text, and the {group} group's choice is made for images (it reads "
                         f"data.image_shape); choose text ones ({TEXT_CHOICES}), or start from experiment=text")
        elif not text and "data.family" in raw:
            found.append(f"the {group} group's choice is made for text (it reads data.family), and data={name} holds "
                         f"images; choose an image {group} (e.g. model=small_cnn, model=resnet18)")
    if text and {"batch_augment", "resident"} & set(cfg.get("data") or {}):
        found.append("speed=resident and speed=gpu keep and augment images on the device; text data has no images: "
                     "leave speed= out")
    return found


def text_problems(cfg: DictConfig, task: str, detectors: dict[str, Any]) -> list[str]:
    """What image data has and text data does not: input gradients (ODIN), mixing inputs (MixOE), the
    channels-last memory format."""
    family, _ = _value(cfg, "data.family")
    if task != "train" and task != "evaluate" or not isinstance(family, dict):
        return []
    found = [f"detector {name} perturbs the input along its gradient, and text inputs are token indices (no "
             f"gradient); choose a logit or feature detector (msp, energy, max_logit, knn, mahalanobis, vim, ...)"
             for name, node in detectors.items() if str(node.get("_target_", "")).endswith(".ODIN")]
    loss, _ = _value(cfg, "loss.fn._target_")
    if isinstance(loss, str) and loss.endswith(".MixOE"):
        found.append("loss=mixoe mixes image pixels (cutmix/mixup), which token indices do not have; choose another "
                     "OE loss (uniform_ce, energy, ...)")
    if _value(cfg, "module.channels_last")[0] is True:
        found.append("module.channels_last=true is a memory format of image batches; text batches have none: set "
                     "module.channels_last=false")
    return found


def batch_memory_problems(cfg: DictConfig, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """A batch of input images (float32) larger than :data:`MAX_BATCH_GIB`: refused before any allocation."""
    shape, _ = _value(cfg, "data.image_shape")
    if "data.image_shape" in skip or not image_shape(shape):
        return []
    per_image = shape[0] * shape[1] * shape[2] * 4
    found = []
    for key in ("data.batch_size", "data.oe_batch_size"):
        size, broken = _value(cfg, key)
        if key not in skip and broken is None and is_int(size) and size * per_image > MAX_BATCH_GIB * 2**30:
            found.append(f"{key}={size} makes one batch of {list(shape)} images {size * per_image / 2**30:.1f} GiB "
                         f"of float32, more than the {MAX_BATCH_GIB} GiB allowed; lower it to at most "
                         f"{MAX_BATCH_GIB * 2**30 // per_image} (or lower data.image_size)")
    return found


def _gpu_count() -> int:
    import torch  # only when a GPU is asked for: the rules above run before torch is imported

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_problems(cfg: DictConfig, task: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """A CUDA device asked for (``device=cuda[:N]`` of oe-predict/oe-export, ``trainer.accelerator=gpu``)
    on a machine without one (or without that one)."""
    found = []
    device, broken = _value(cfg, "device") if task in ("predict", "export") else (_ABSENT, None)
    if "device" not in skip and broken is None and device is not _ABSENT:
        text = str(device).strip().lower()
        index = text.partition(":")[2]
        if not (text in ("auto", "cpu", "cuda", "mps") or text.startswith("cuda:") and index.isdigit()):
            found.append(f"device={device!r} must be auto, cpu, cuda or cuda:<index>; device=auto takes a GPU "
                         f"if there is one")
        elif text.startswith("cuda") and (gpus := _gpu_count()) <= int(index or 0):
            found.append(f"device={device!r} needs a CUDA GPU{f' with index {index}' if index else ''}, and this "
                         f"machine has {gpus or 'none'} (torch.cuda.is_available() is "
                         f"{str(bool(gpus)).lower()}); use device=cpu, or device=auto (a GPU when there is one)")
    accelerator, broken = _value(cfg, "trainer.accelerator") if task in ("train", "evaluate") else (_ABSENT, None)
    if ("trainer.accelerator" not in skip and broken is None and accelerator in ("gpu", "cuda")
            and not _gpu_count()):
        found.append(f"trainer.accelerator={accelerator!r} (trainer=gpu/ddp/slurm) needs a CUDA GPU, and this "
                     f"machine has none; use trainer=cpu (or trainer=default), or trainer=ddp_sim for DDP on "
                     f"2 CPU processes")
    return found


def check_config(cfg: DictConfig, task: str = "train", skip: frozenset[str] = frozenset()) -> None:
    """Raise one user error listing every problem of ``cfg`` (nothing is read or built before)."""
    found = problems(cfg, task, skip)
    if found:
        lines = "; ".join(f"({i}) {p}" for i, p in enumerate(found, 1))
        raise OEUserError(f"The config has {len(found)} problem{'s' if len(found) > 1 else ''}, found before "
                          f"any data was read: {lines}.")


def unwritable_folder(folder: str | Path) -> str | None:
    """Why ``folder`` (created if missing) cannot hold a run's files, or None if it can."""
    path = Path(folder).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{str(existing)!r} is not writable"
    return None


def check_output_folder(cfg: DictConfig, key: str) -> None:
    """Refuse, before Hydra creates it, an output folder (``hydra.run.dir``/``hydra.sweep.dir``)
    that cannot be written."""
    folder = OmegaConf.select(cfg, key, default=None)
    why = unwritable_folder(folder) if folder else None
    if why:
        raise OEUserError(
            f"The run's output folder {key}={str(folder)!r} cannot be written: {why}. Nothing was run. "
            f"Choose a writable place with paths.output_dir=... (or {key}=...)."
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be read): compare the names
        return a.absolute() == b.absolute() or a.resolve() == b.resolve()


def check_output_files(key: str, value: Any, outputs: Sequence[Path], inputs: Callable[[], Iterable[Path]],
                       overwrite: bool) -> None:
    """Refuse, before any work, the files ``outputs`` (all written for ``key=value``) when one of them would
    replace an input of the command (``inputs()``: the checkpoint, the images; asked only when an output
    exists), is a folder, lies where no file can be written, or exists already and ``overwrite`` is false."""
    for out in outputs:
        why = unwritable_folder(out.parent)
        if why:
            raise OEUserError(f"The output {key}={str(value)!r} cannot be written: {why}. Nothing was run. Choose a "
                              f"writable place with {key}=... (a new file in a folder you can write).")
        if out.is_dir():
            raise OEUserError(f"The output {key}={str(value)!r} would be written to {out}, and {out} is a folder. "
                              f"Nothing was run. Name a file with {key}=... (e.g. {out / out.name}).")
    existing = [out for out in outputs if out.exists() or out.is_symlink()]
    if not existing:
        return
    for source in inputs():
        hit = next((out for out in existing if _same_file(out, Path(source))), None)
        if hit is not None:
            raise OEUserError(f"The output {key}={str(value)!r} would write {hit} over {source}, an input of this "
                              f"command. Nothing was run. Choose another {key}=... (overwrite=true never allows "
                              f"replacing an input).")
    if not overwrite:
        raise OEUserError(f"The output {key}={str(value)!r} would replace the existing file {existing[0]}, which "
                          f"this command did not write. Nothing was run. Choose another {key}=..., or pass "
                          f"overwrite=true to replace it.")
