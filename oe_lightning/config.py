"""Where the Hydra configs live, and small helpers over composed configs."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_name(default: str = "") -> str:
    """The sweep directory's name in a Hydra multirun (W&B groups runs by it), else ``default``."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().sweep.dir).name if in_multirun() else default


JOB_DIRNAME_MAX = 100


def job_dirname(override_dirname: str) -> str:
    """A sweep job's directory name from its overrides (``loss:energy+loss.lambda_oe:0.1``).

    Every override counts, so two jobs never share a directory; characters that are awkward in
    paths or in override values (``/``, ``=``, ``,``, ``$``, brackets, spaces) become ``-``; a name
    longer than 100 characters keeps its first 80 and a hash of the whole. Jobs without overrides
    go to ``no_overrides``.
    """
    if not override_dirname:
        return "no_overrides"
    name = re.sub(r"[^A-Za-z0-9._:+@-]", "-", override_dirname)
    if len(name) > JOB_DIRNAME_MAX:
        name = f"{name[:80]}_{hashlib.sha1(override_dirname.encode()).hexdigest()[:10]}"
    return name


def class_folders(root: str | Path) -> list[str]:
    """An image folder's classes: its sub-folders, sorted, hidden ones (``.ipynb_checkpoints``) and
    looping links (:func:`class_links_skipped`) left out; empty if there are none. The one listing that
    the config (``num_classes``) and the datasets (:class:`~oe_lightning.data.vision.ReadableImageFolder`)
    share."""
    folder = Path(str(root)).expanduser()
    if not folder.is_dir():
        return []
    looping = set(class_links_skipped(folder))
    return sorted(d.name for d in folder.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and d.name not in looping)


def class_links_skipped(root: str | Path) -> dict[str, str]:
    """Linked sub-folders of an image folder that are not classes, name -> target: a link to the folder
    itself, to a folder above it (a loop) or into it (a second name for images another class holds).
    A link to a folder elsewhere is a class."""
    folder = Path(str(root)).expanduser()
    top = os.path.realpath(folder)
    skipped = {}
    for d in folder.iterdir() if folder.is_dir() else ():
        if d.is_symlink() and d.is_dir() and not d.name.startswith("."):
            real = os.path.realpath(d)
            if os.path.commonpath([real, top]) in (real, top):
                skipped[d.name] = os.readlink(d)
    return skipped


def data_classes(root: str) -> list[str]:
    """The class names of ``data.train_dir`` (resolver ``oe.class_folders``), refused unless 2 or more."""
    from oe_lightning.errors import OEUserError

    folder = Path(str(root)).expanduser()
    if not folder.is_dir():
        raise OEUserError(f"data.train_dir={str(root)!r} is not a folder. Put your training images there, one "
                          f"sub-folder per class (e.g. {folder}/cat/1.jpg, {folder}/dog/2.png).")
    classes = class_folders(folder)
    if len(classes) < 2:
        raise OEUserError(f"data.train_dir={str(root)!r} has {len(classes)} class sub-folder(s); a classifier "
                          f"needs at least 2 (one sub-folder per class: {folder}/<class>/<image>.jpg).")
    return classes


def val_folder(val_dir: str | None, train_dir: str, strict: bool = False) -> DictConfig | None:
    """``data.val``'s config for ``data=image_folder`` (resolver ``oe.val_folder``): ``val_dir``'s
    images, or None when there is no ``val_dir`` (then ``val_fraction`` of ``train_dir`` is held out)."""
    if not val_dir:
        return None
    return OmegaConf.create({"_target_": "oe_lightning.data.vision.folder_split", "_partial_": True,
                             "root": str(train_dir), "split": "val", "val_root": str(val_dir),
                             "strict": bool(strict)})  # a config node, so that Hydra instantiates it


def eval_resize(size: int) -> int:
    """The shorter side an evaluation image is resized to before its centre crop: 256 for 224."""
    return round(int(size) * 8 / 7)


def loader_workers(most: int = 4) -> int:
    """DataLoader workers per training loader that fit this machine: the cores this process may use
    (its CPU affinity: a SLURM allocation, a container) shared by the two training loaders and the
    main process, at most ``most``; 0 (load in the main process) on 2 cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(int(most), cores // 2 - 1))


def fpr_name(recall: float) -> str:
    """The FPR metric's name at ``recall`` (``fpr95``, ``fpr90``): :attr:`EvaluationSettings.fpr_name`."""
    from oe_lightning.evaluation_settings import EvaluationSettings

    return EvaluationSettings(recall=recall).fpr_name


def vocab_size(max_vocab: int | None) -> int:
    """A text model's embedding rows: ``data.family.max_vocab`` words + ``<unk>`` and ``<pad>``."""
    if max_vocab is None:
        raise ValueError("data.family.max_vocab is null (every word kept): set model.vocab_size to the number of "
                         "words + 2, or give data.family.max_vocab (the reference keeps 10000).")
    return int(max_vocab) + 2


for _name, _fn in (("oe.fpr_name", fpr_name), ("oe.vocab_size", vocab_size), ("oe.sweep_name", sweep_name),
                   ("oe.job_dirname", job_dirname),
                   ("oe.workers", loader_workers),
                   ("oe.class_folders", data_classes), ("oe.eval_resize", eval_resize), ("oe.len", len),
                   ("oe.val_folder", val_folder)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def config_dir() -> str:
    """The ``conf/`` directory: inside the installed package (wheel) or at the repository top."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"oe-lightning's conf/ directory was not found next to {here}.")


def flat_config(cfg: DictConfig, sep: str = ".") -> dict[str, Any]:
    """The resolved config as one flat ``{"a.b.c": value}`` dict (for loggers and tables)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{sep}{k}" if prefix else str(k))
        else:
            out[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False), "")
    return out


TREE_FIELDS = ("data", "oe", "ood", "val_ood", "model", "loss", "score", "module", "optim", "trainer",
               "logger", "callbacks", "paths", "tags", "seed", "ckpt_path")


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Print the composed config as a rich tree, main groups first (lightning-hydra-template's
    habit), and save the same text to ``save_to``. Only the first process of a DDP run prints."""
    import os

    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return
    tree = Tree("config", style="dim", guide_style="dim")
    fields = [f for f in TREE_FIELDS if f in cfg] + [f for f in cfg if f not in TREE_FIELDS]
    for field in fields:
        node = cfg[field]
        if isinstance(node, DictConfig):
            try:
                text = OmegaConf.to_yaml(node, resolve=True)
            except Exception:  # an interpolation that only resolves later: show it as written
                text = OmegaConf.to_yaml(node, resolve=False)
        else:
            text = str(node)
        tree.add(str(field), style="bold", guide_style="dim").add(Syntax(text.rstrip(), "yaml"))
    Console().print(tree)
    if save_to is not None:
        with open(save_to, "w") as file:
            Console(file=file, width=120, color_system=None).print(tree)


def run_dir() -> Path:
    """The current Hydra job's output folder (the run directory)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def overrides() -> list[str]:
    """The current Hydra job's command-line overrides (none outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
