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

from oe_lightning.checkpoints import checked_model_config, load_backbone_weights, read_checkpoint
from oe_lightning.detector_registry import deployable_names, logit_scores
from oe_lightning.errors import OEUserError

log = logging.getLogger("oe_lightning")

SCORES = logit_scores()  # the OOD scores a deployed model may apply, by config target
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
        from oe_lightning.validate import MAX_IMAGE_SIDE, MAX_RESIZE

        bad = ([f"channels={self.channels} (1 or 3)"] if self.channels not in (1, 3) else []) + [
            f"{k}={v} (an integer in [1, {most}] pixels)" for k, v, most in
            (("height", self.height, MAX_IMAGE_SIDE), ("width", self.width, MAX_IMAGE_SIDE),
             ("resize", self.resize, MAX_RESIZE)) if not 1 <= v <= most]
        if not (len(self.mean) == len(self.std) == self.channels and all(s > 0 for s in self.std)
                and all(math.isfinite(v) for v in (*self.mean, *self.std))):
            bad.append(f"mean={list(self.mean)}, std={list(self.std)} (one finite mean and one finite std > 0 "
                       f"per channel)")
        if bad:
            raise OEUserError(f"The preprocessing is not valid: {'; '.join(bad)}. Sizes are bounded before any "
                              f"image is read ({MAX_IMAGE_SIDE} px crops, {MAX_RESIZE} px resize), as data.image_size "
                              f"is in a config.")

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
        """The plain dict stored in checkpoints and export sidecars."""
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


def preprocessing_from_dict(values: Any) -> Any:
    """A stored preprocessing, checked: text (``family: text``: tokenisation and vocabulary,
    :class:`~oe_lightning.data.text.deploy.TextPreprocessing`) or images (no family: :class:`Preprocessing`). The
    family is one of these two names, never a class path read from the file."""
    if isinstance(values, dict) and "family" in values:
        if values["family"] != "text":
            raise OEUserError(f"The stored preprocessing is for data family {values['family']!r}; this version "
                              f"deploys image and text models.")
        from oe_lightning.data.text.deploy import TextPreprocessing

        return TextPreprocessing.from_dict(values)
    return Preprocessing.from_dict(values)


def is_text(preprocessing: Any) -> bool:
    """Whether a deployed model reads text (token indices) rather than images."""
    return getattr(preprocessing, "family", None) == "text"


class DeployedModel(nn.Module):
    """Backbone + OOD score + threshold: a preprocessed batch (images, or token indices) to ``(logits, score, is_ood)``,
    ``is_ood = score > threshold`` (larger scores are more OOD). Traceable for TorchScript and ONNX."""

    def __init__(self, backbone: nn.Module, score: nn.Module, threshold: float):
        super().__init__()
        self.backbone, self.score = backbone, score
        self.register_buffer("threshold", torch.tensor(float(threshold), dtype=torch.float32))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, score, is_ood)`` of a preprocessed batch: ``is_ood = score > threshold``."""
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
        if path.is_dir():  # regular files only, no folder listed twice, links out of it named
            listing = list_files(path, keep, hidden=False)
            warn_skipped([listing], f"input {path}")
            found += sorted(listing.files)
        elif regular_file(path):
            found.append(path)
        elif path.exists():  # a FIFO, socket or device: reading it would block or never end
            special.append(str(item))
        else:
            missing.append(str(item))
    if missing:
        raise OEUserError(f"input names {len(missing)} path(s) that do not exist: {', '.join(missing[:5])}. "
                          f"Pass image files or folders of images (input=photo.jpg or input=[a.jpg,photos/]).")
    if special:
        raise OEUserError(f"input names {len(special)} path(s) that are not regular files (a FIFO, socket or device "
                          f"would block the reader): {', '.join(special[:5])}. Pass image files or folders of images.")
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


def input_files(inputs: Iterable[str | Path]) -> list[Path]:
    """The regular files that ``inputs`` names or holds (folders, recursively): what an output must never replace."""
    from oe_lightning.data.files import list_files, regular_file

    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += list_files(path).files
        elif regular_file(path):
            found.append(path)
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


@dataclass(frozen=True)
class StoredDeployment:
    """What a checkpoint stores for deployment, every value checked (:func:`deployable`)."""

    model_config: dict[str, Any]
    preprocessing: Any  # Preprocessing (images) or TextPreprocessing
    score: dict[str, Any]
    threshold: float
    temperature: float
    class_names: list[str]

    @property
    def score_kwargs(self) -> dict[str, Any]:
        """The stored score's settings, ``_target_`` left out."""
        return {k: v for k, v in self.score.items() if k != "_target_"}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _score_problems(score: dict[str, Any]) -> list[str]:
    """What is wrong with a stored score config: a target that is not a deployable logit score, settings
    that are not finite numbers, a temperature out of range."""
    from oe_lightning.validate import TEMPERATURE_RANGE

    low, high = TEMPERATURE_RANGE
    target = score.get("_target_")
    kwargs = {k: v for k, v in score.items() if k != "_target_"}
    if target not in SCORES:
        return [f"score._target_={target!r} is not a score a deployed model can apply: one of {sorted(SCORES)} "
                f"(score={'|'.join(deployable_names())})"]
    if not all(isinstance(k, str) and _finite(v) for k, v in kwargs.items()):
        return [f"score settings {kwargs!r} must be finite numbers"]
    if "temperature" in kwargs and not low <= kwargs["temperature"] <= high:
        return [f"score.temperature={kwargs['temperature']!r} must be in [{low:g}, {high:g}] (near 0, "
                f"logits / T overflows and every score is -inf)"]
    return []


def _class_problems(names: Any, outputs: Any) -> list[str]:
    """What is wrong with stored class names for a classifier of ``outputs`` outputs."""
    if names is not None and not (isinstance(names, list | tuple) and all(isinstance(n, str) for n in names)):
        return [f"class_names={names!r} must be a list of strings"]
    if not (isinstance(outputs, int) and not isinstance(outputs, bool) and outputs >= 1):
        return [f"num_classes={outputs!r} must be an integer >= 1 (the classifier's outputs)"]
    if names is not None and len(names) != outputs:
        return [f"class_names has {len(names)} names for a classifier of {outputs} outputs; one name per "
                f"output is needed"]
    return []


def deployable(checkpoint: Any, path: str | Path, threshold: float | None = None,
               model_allowlist: Iterable[str] = ()) -> StoredDeployment:
    """The deployment settings a checkpoint of ``oe-train`` stores, validated like a config before
    anything is built: the backbone config (:func:`checked_model_config`), preprocessing sizes (the
    config's bounds), the score and its temperature, the calibrated temperature, the threshold
    (``threshold`` overrides it) and one class name per output; one error lists every problem."""
    from oe_lightning.validate import TEMPERATURE_RANGE

    info = checkpoint.get("oe_lightning") if isinstance(checkpoint, dict) else None
    source = f"Checkpoint {str(path)!r}"
    if not isinstance(info, dict) or not info.get("model_config"):
        raise OEUserError(f"{source} was not written by oe-train (it has no model config); pass "
                          f"RUN_DIR/checkpoints/last.ckpt of a finished oe-train run.")
    model_config = checked_model_config(info["model_config"], model_allowlist, str(path))
    if info.get("score") is None and info.get("primary_detector"):
        raise OEUserError(f"{source} was trained with the primary detector score={info['primary_detector']}, which "
                          f"needs more than one input's logits (features of the training set, or gradients), so "
                          f"oe-predict and oe-export cannot apply it. Evaluate it with oe-eval, or train with a logit "
                          f"score as the primary detector (score={'|'.join(deployable_names())}) to deploy it.")
    for key in ("preprocessing", "score"):
        if not isinstance(info.get(key), dict):
            raise OEUserError(f"{source} has no {key} settings (it predates oe-predict); evaluate it with "
                              f"oe-eval, or train it again to deploy it.")
    operating = info.get("operating_point") or {}
    chosen = operating.get("threshold") if threshold is None else threshold
    if not _finite(chosen):
        raise OEUserError(f"{source} has no operating threshold ({operating.get('why') or 'none stored'}); "
                          f"train with data.val_fraction > 0 so one is chosen on validation images, or "
                          f"pass threshold=<score> yourself.")
    low, high = TEMPERATURE_RANGE
    bad: list[str] = []
    preprocessing = None
    try:
        preprocessing = preprocessing_from_dict(info["preprocessing"])
    except OEUserError as err:
        shown = {k: v for k, v in info["preprocessing"].items() if k != "vocabulary"}
        bad.append(f"preprocessing={shown!r}: {err}")
    temperature = info.get("temperature", 1.0)
    if not (_finite(temperature) and low <= temperature <= high):
        bad.append(f"temperature={temperature!r} must be a number in [{low:g}, {high:g}] (oe-train tunes it in "
                   f"[0.2, 5]; inf or 0 would make every prediction the same class)")
    score = dict(info["score"])
    bad += _score_problems(score)
    outputs = model_config.get("num_classes", info.get("num_classes"))
    names = info.get("class_names")
    bad += _class_problems(names, outputs)
    channels = model_config.get("in_channels", model_config.get("in_chans"))
    if (preprocessing is not None and not is_text(preprocessing) and isinstance(channels, int)
            and channels != preprocessing.channels):
        bad.append(f"preprocessing.channels={preprocessing.channels} but the model takes {channels}-channel images")
    rows = model_config.get("vocab_size")
    if is_text(preprocessing) and isinstance(rows, int) and len(preprocessing.vocabulary) > rows:
        bad.append(f"the vocabulary has {len(preprocessing.vocabulary)} tokens but the model embeds {rows}")
    if bad or preprocessing is None:
        raise OEUserError(f"{source} stores {len(bad)} value{'s' if len(bad) > 1 else ''} that cannot be deployed, "
                          f"found before any image was read: {'; '.join(f'({i}) {b}' for i, b in enumerate(bad, 1))}. "
                          f"The file was changed after oe-train wrote it, or comes from elsewhere: use a checkpoint "
                          f"written by oe-train (RUN_DIR/checkpoints/last.ckpt), or train again.")
    return StoredDeployment(model_config, preprocessing, score, float(chosen), float(temperature),
                            [str(n) for n in names] if names is not None else [str(i) for i in range(outputs)])


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
        """The score above which an input is OOD."""
        return float(self.model.threshold)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", threshold: float | None = None,
                        model_allowlist: Iterable[str] = ()) -> OODClassifier:
        """Rebuild from a checkpoint of ``oe-train``: backbone, score, the threshold chosen on the ID
        validation split (``threshold`` overrides it), calibrated temperature, class names, preprocessing."""
        checkpoint = read_checkpoint(path)
        stored = deployable(checkpoint, path, threshold, model_allowlist)
        from hydra.utils import instantiate

        backbone = instantiate(stored.model_config)
        load_backbone_weights(backbone, path, stored.model_config.get("num_classes"), checkpoint)
        model = DeployedModel(backbone, SCORES[stored.score["_target_"]](**stored.score_kwargs), stored.threshold)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, stored.preprocessing, stored.class_names, stored.temperature, device)

    @torch.no_grad()
    def outputs(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, score, is_ood)`` of a preprocessed batch."""
        return self.model(images.to(self.device))

    def predict(self, inputs: str | Path | Any | Iterable[str | Path | Any], batch_size: int = 64,
                num_workers: int = 0, progress: bool = False) -> list[Prediction]:
        """Predictions for image files, folders of images, or PIL images, in input order (folders
        expanded, sorted). An unreadable file is reported in its row (``decision="unreadable"``) and a
        warning, and the others are still predicted. A text classifier takes texts: ``predict(["a sentence",
        ...])`` (one string: one text), named ``<text i>``."""
        if is_text(self.preprocessing):
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            if not all(isinstance(t, str) for t in texts):
                raise OEUserError("A text classifier's predict takes strings (the texts); for files of texts use "
                                  "predict_files([...]) or oe-predict input=...")
            return self._text_rows([(f"<text {i}>", t) for i, t in enumerate(texts)], batch_size)
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

    def predict_files(self, inputs: Iterable[str | Path], batch_size: int = 64, num_workers: int = 0,
                      progress: bool = False) -> list[Prediction]:
        """Predictions for files and folders: images for an image classifier (:meth:`predict`), every
        non-empty line of ``.txt`` files (folders: their ``.txt`` files) for a text classifier, named ``file:line``."""
        if not is_text(self.preprocessing):
            return self.predict(list(inputs), batch_size, num_workers, progress)
        from oe_lightning.data.text.deploy import text_inputs

        return self._text_rows(text_inputs(inputs), batch_size)

    def _text_rows(self, named: list[tuple[str, str | None]], batch_size: int) -> list[Prediction]:
        """Texts in batches of one token length each: no text is padded for a longer neighbour (padding changes a
        recurrent model's state), so a text's score never depends on the batch it came in. A ``None`` text: a
        file that could not be read, reported in its row."""
        readable = [i for i, (_, text) in enumerate(named) if text is not None]
        sequences = dict(zip(readable, self.preprocessing.sequences([named[i][1] for i in readable]), strict=True))
        by_length: dict[int, list[int]] = {}
        for i, seq in sequences.items():
            by_length.setdefault(len(seq), []).append(i)
        rows = {i: Prediction(name, None, None, None, "unreadable", self.threshold, "not UTF-8 text")
                for i, (name, text) in enumerate(named) if text is None}
        for group in by_length.values():
            for start in range(0, len(group), batch_size):
                chunk = group[start:start + batch_size]
                tokens = self.preprocessing.pad([sequences[i] for i in chunk])
                rows.update(zip(chunk, self._rows([named[i][0] for i in chunk], tokens, [""] * len(chunk)),
                                strict=True))
        return [rows[i] for i in range(len(named))]

    def _rows(self, names: list[str], images: Tensor, errors: list[str]) -> list[Prediction]:
        logits, score, is_ood = self.outputs(images)
        probs = F.softmax(logits.double() / self.temperature, dim=1).max(dim=1)
        classes, confidences = probs.indices.tolist(), probs.values.tolist()
        scores, ood, threshold = score.tolist(), is_ood.tolist(), self.threshold  # one device read each
        return [Prediction(name, None, None, None, "unreadable", threshold, error) if error else
                Prediction(name, self.class_names[classes[i]], round(confidences[i], 6), scores[i],
                           "ood" if ood[i] else "in", threshold)
                for i, (name, error) in enumerate(zip(names, errors, strict=True))]
