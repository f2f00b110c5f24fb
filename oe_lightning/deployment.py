"""A trained checkpoint as a classifier that can say "I don't know this": preprocessing, logits,
OOD score and the decision at the operating point chosen on validation data.

:class:`OODClassifier` is what ``oe-predict`` and ``oe-export`` run, and the Python API::

    clf = OODClassifier.from_checkpoint("outputs/train/runs/.../checkpoints/last.ckpt")
    for p in clf.predict(["photo.jpg", "folder/"]):
        print(p.path, p.predicted_class, p.confidence, p.decision)

Everything is rebuilt from plain values in the checkpoint, each checked: the backbone from an
allow-listed factory (:func:`~oe_lightning.checkpoints.checked_model_config`), the score from
:data:`SCORES`; nothing read from the file chooses other code.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.datasets.folder import IMG_EXTENSIONS

from oe_lightning import scores as score_modules
from oe_lightning.checkpoints import checked_model_config, load_backbone_weights, read_checkpoint
from oe_lightning.errors import OEUserError

log = logging.getLogger("oe_lightning")

# the OOD scores a deployed model may apply (config ``score=``), by their config target
SCORES = {f"oe_lightning.scores.{name}": getattr(score_modules, name)
          for name in ("MaxSoftmax", "MaxLogit", "Energy", "UniformCrossEntropyScore", "Entropy")}
IMAGE_SUFFIXES = IMG_EXTENSIONS  # torchvision's: the files ImageFolder (training) reads


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes the model's input: convert to ``channels`` (1: grey, 3: RGB),
    resize the shorter side to ``resize``, take the centre ``height`` × ``width``, scale to [0, 1],
    then ``(x - mean) / std`` per channel. The same steps as the test transform of the data."""

    channels: int
    height: int
    width: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        ok = (self.channels in (1, 3) and min(self.height, self.width, self.resize) >= 1
              and len(self.mean) == len(self.std) == self.channels and all(s > 0 for s in self.std)
              and all(math.isfinite(v) for v in (*self.mean, *self.std)))
        if not ok:
            raise OEUserError(f"Preprocessing {self} is not valid: channels 1 or 3, positive sizes, one finite mean "
                              f"and one positive std per channel.")

    @classmethod
    def from_dict(cls, values: Any) -> Preprocessing:
        """Checked plain values (as stored in a checkpoint or the export's JSON sidecar)."""
        try:
            return cls(channels=int(values["channels"]), height=int(values["height"]), width=int(values["width"]),
                       resize=int(values["resize"]), mean=tuple(float(v) for v in values["mean"]),
                       std=tuple(float(v) for v in values["std"]))
        except (KeyError, TypeError, ValueError) as err:
            raise OEUserError(f"The stored preprocessing {values!r} is not a mapping of channels, height, width, "
                              f"resize, mean and std ({type(err).__name__}: {err}).") from err

    @classmethod
    def from_data_config(cls, data: Any) -> Preprocessing:
        """From a composed ``data`` config: ``image_shape``, ``mean`` and ``std`` (none: 0 and 1, no
        normalisation, as SVHN's) and, for image folders, ``eval_resize`` (the shorter side before the
        centre crop; default the image height)."""
        channels, height, width = (int(v) for v in data["image_shape"])
        resize = data.get("eval_resize") or height
        mean, std = data.get("mean") or [0.0] * channels, data.get("std") or [1.0] * channels
        return cls(channels, height, width, int(resize), tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def transform(self) -> Any:
        """The torchvision transform: a PIL image (any mode and size) to a normalised float tensor."""
        from torchvision.transforms import v2

        from oe_lightning.data.transforms import to_float_image

        mode = "L" if self.channels == 1 else "RGB"
        return v2.Compose([v2.Lambda(functools.partial(_convert, mode=mode)),  # picklable: DataLoader workers
                           v2.Resize(self.resize, antialias=True), v2.CenterCrop((self.height, self.width)),
                           to_float_image(), v2.Normalize(list(self.mean), list(self.std))])


def _convert(image: Any, mode: str) -> Any:
    return image.convert(mode)


class DeployedModel(nn.Module):
    """Backbone + OOD score + threshold: a batch of preprocessed images to ``(logits, score, is_ood)``,
    ``is_ood = score > threshold`` (larger scores are more OOD). Traceable for TorchScript and ONNX."""

    def __init__(self, backbone: nn.Module, score: nn.Module, threshold: float):
        super().__init__()
        self.backbone, self.score = backbone, score
        self.register_buffer("threshold", torch.tensor(float(threshold), dtype=torch.float32))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.backbone(images)
        score = self.score(logits)
        return logits, score, score > self.threshold


@dataclass
class Prediction:
    """One image's answer. ``decision`` is ``in`` (one of the classes), ``ood`` (none of them) or
    ``unreadable`` (with ``error``; the other fields empty)."""

    path: str
    predicted_class: str | None
    confidence: float | None
    ood_score: float | None
    decision: str
    threshold: float
    error: str = ""


PREDICTION_FIELDS = tuple(f.name for f in fields(Prediction))  # the CSV columns


def score_module(config: Any, source: str) -> nn.Module:
    """The score a checkpoint names (its ``score`` config), from :data:`SCORES` only."""
    target = config.get("_target_") if isinstance(config, dict) else None
    if target not in SCORES:
        raise OEUserError(f"{source} names the OOD score {target!r}, which a deployed model cannot apply; "
                          f"it takes one of {sorted(SCORES)} (score=msp, energy, max_logit, oe, entropy).")
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    if not all(isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               for k, v in kwargs.items()):
        raise OEUserError(f"{source} stores score settings {kwargs!r}; only finite numbers are accepted.")
    return SCORES[target](**kwargs)


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded (recursively, sorted) to their image files; a path that does
    not exist, or inputs without any image file, are refused before any image is read."""
    from oe_lightning.data.files import list_files, regular_file, warn_skipped
    from oe_lightning.data.vision import OTHER_IMAGE_SUFFIXES, animated_images

    inputs = list(inputs)
    found: list[Path] = []
    missing, special, others = [], [], []

    def keep(name: str) -> bool:
        if name.lower().endswith(OTHER_IMAGE_SUFFIXES):
            others.append(name)
        return name.lower().endswith(IMAGE_SUFFIXES)

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():  # regular files only, links never followed in a loop or out of the folder
            listing = list_files(path, keep, hidden=False)
            warn_skipped([listing], f"input {path}")
            found += sorted(listing.files)
        elif regular_file(path):
            found.append(path)
        elif path.exists():  # a FIFO, socket or device: reading it would block or never end
            special.append(str(item))
        else:
            missing.append(str(item))
    if missing or special:
        raise OEUserError(f"input names {len(missing) + len(special)} path(s) that do not exist or are not regular "
                          f"files: {', '.join((missing + special)[:5])}. Pass image files or folders of images "
                          f"(input=photo.jpg or input=[a.jpg,photos/]).")
    if others:
        log.warning("%d file(s) in input folders not read, their type is not one the model was trained on (%s): %s; "
                    "convert them (e.g. to PNG) or pass them by name", len(others), ", ".join(IMAGE_SUFFIXES),
                    ", ".join(others[:5]) + (" ..." if len(others) > 5 else ""))
    animated = animated_images([p for p in found if p.suffix.lower() in (".gif", ".png", ".webp", ".tif", ".tiff")])
    if animated:
        log.warning("%d animated image(s) (several frames) are predicted from their first frame only: %s",
                    len(animated), ", ".join(animated[:5]) + (" ..." if len(animated) > 5 else ""))
    if not found:
        raise OEUserError(f"input {', '.join(str(i) for i in inputs)} holds no image files (looked for "
                          f"{', '.join(IMAGE_SUFFIXES)}, in sub-folders too).")
    return found


class _ImageFiles(torch.utils.data.Dataset):
    """Image files through the preprocessing; an unreadable one yields a zero image and its error."""

    def __init__(self, paths: Sequence[Path], preprocessing: Preprocessing):
        self.paths, self.preprocessing = list(paths), preprocessing
        self.transform = preprocessing.transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        from oe_lightning.data.vision import load_rgb

        try:
            return self.transform(load_rgb(self.paths[i])), ""  # 16-bit images scaled, as in training
        except Exception as err:  # noqa: BLE001 - any decoding failure is reported for this file, not raised
            p = self.preprocessing
            return torch.zeros(p.channels, p.height, p.width), f"{type(err).__name__}: {err}".strip()[:300]


class OODClassifier:
    """A trained model that predicts a class or says the input is none of them (see module docs)."""

    def __init__(self, model: DeployedModel, preprocessing: Preprocessing, class_names: Sequence[str],
                 temperature: float = 1.0, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)  # inference only, also when exported
        self.preprocessing, self.class_names = preprocessing, [str(c) for c in class_names]
        self.temperature = float(temperature)

    @property
    def threshold(self) -> float:
        return float(self.model.threshold)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", threshold: float | None = None,
                        model_allowlist: Iterable[str] = ()) -> OODClassifier:
        """Rebuild from a checkpoint of ``oe-train``: backbone, score, the threshold chosen on the ID
        validation split (``threshold`` overrides it), calibrated temperature, class names, preprocessing."""
        checkpoint = read_checkpoint(path)
        info = checkpoint.get("oe_lightning")
        source = f"Checkpoint {str(path)!r}"
        if not isinstance(info, dict) or not info.get("model_config"):
            raise OEUserError(f"{source} was not written by oe-train (it has no model config); pass "
                              f"RUN_DIR/checkpoints/last.ckpt of a finished oe-train run.")
        model_config = checked_model_config(info["model_config"], model_allowlist, str(path))
        for key in ("preprocessing", "score"):
            if not isinstance(info.get(key), dict):
                raise OEUserError(f"{source} has no {key} settings (it predates oe-predict); evaluate it with "
                                  f"oe-eval, or train it again to deploy it.")
        operating = info.get("operating_point") or {}
        chosen = operating.get("threshold") if threshold is None else threshold
        if not isinstance(chosen, int | float) or isinstance(chosen, bool) or not math.isfinite(chosen):
            raise OEUserError(f"{source} has no operating threshold ({operating.get('why') or 'none stored'}); "
                              f"train with data.val_fraction > 0 so one is chosen on validation images, or "
                              f"pass threshold=<score> yourself.")
        temperature = info.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or not temperature > 0:
            raise OEUserError(f"{source} stores temperature={temperature!r}; it must be a number > 0.")
        from hydra.utils import instantiate

        backbone = instantiate(model_config)
        load_backbone_weights(backbone, path, model_config.get("num_classes"), checkpoint)
        names = info.get("class_names") or [str(i) for i in range(int(info.get("num_classes") or 0))]
        model = DeployedModel(backbone, score_module(info["score"], source), float(chosen))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, Preprocessing.from_dict(info["preprocessing"]), names, float(temperature), device)

    @torch.no_grad()
    def outputs(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, score, is_ood)`` of a preprocessed batch."""
        return self.model(images.to(self.device))

    def predict(self, inputs: str | Path | Any | Iterable[str | Path | Any], batch_size: int = 64,
                num_workers: int = 0, progress: bool = False) -> list[Prediction]:
        """Predictions for image files, folders of images, or PIL images, in input order (folders
        expanded, sorted). An unreadable file is reported in its row (``decision="unreadable"``) and a
        warning, and the others are still predicted."""
        from PIL import Image

        items = [inputs] if isinstance(inputs, str | Path | Image.Image) else list(inputs)
        pil = [x for x in items if isinstance(x, Image.Image)]
        if pil and len(pil) != len(items):
            raise OEUserError("predict takes either paths or PIL images, not both in one call.")
        if pil:
            transform = self.preprocessing.transform()
            batch = torch.stack([transform(x) for x in pil])
            return self._rows([f"<image {i}>" for i in range(len(pil))], batch, [""] * len(pil))
        paths = image_paths(items)
        loader = torch.utils.data.DataLoader(_ImageFiles(paths, self.preprocessing), batch_size=batch_size,
                                             num_workers=num_workers, shuffle=False)
        rows: list[Prediction] = []
        batches = iter(loader)
        if progress:
            from rich.progress import track

            batches = track(batches, total=len(loader), description=f"predicting {len(paths)} images",
                            transient=True)
        done = 0
        for images, errors in batches:
            rows += self._rows([str(p) for p in paths[done:done + len(images)]], images, list(errors))
            done += len(images)
        bad = [r for r in rows if r.decision == "unreadable"]
        if bad:
            log.warning("%d of %d file(s) could not be read as images and were reported, not predicted: %s",
                        len(bad), len(rows), "; ".join(f"{r.path} ({r.error})" for r in bad[:5]))
        return rows

    def _rows(self, names: list[str], images: Tensor, errors: list[str]) -> list[Prediction]:
        logits, score, is_ood = self.outputs(images)
        probs = F.softmax(logits.double() / self.temperature, dim=1).max(dim=1)
        classes, confidences = probs.indices.tolist(), probs.values.tolist()
        scores, ood, threshold = score.tolist(), is_ood.tolist(), self.threshold  # one device read each
        return [Prediction(name, None, None, None, "unreadable", threshold, error) if error else
                Prediction(name, self.class_names[classes[i]], round(confidences[i], 6), scores[i],
                           "ood" if ood[i] else "in", threshold)
                for i, (name, error) in enumerate(zip(names, errors, strict=True))]
