"""Write a deployed classifier (:class:`~oe_lightning.deployment.OODClassifier`) as a TorchScript or ONNX
file plus a JSON sidecar that says how to feed it and read its outputs; loading either needs only
torch (or onnxruntime), not oe_lightning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from oe_lightning.deployment import OODClassifier, is_text
from oe_lightning.errors import OEUserError
from oe_lightning.results import replacing_path, write_text_atomic

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
INPUT_NAMES = {"image": "images", "text": "tokens"}
OUTPUTS = ("logits", "score", "is_ood")


def sidecar(classifier: OODClassifier, model_file: str, fmt: str, source: str) -> dict[str, Any]:
    """What a user of the exported file needs: inputs, outputs, preprocessing, classes, threshold."""
    p = classifier.preprocessing
    if is_text(p):
        preprocessing = {**p.to_dict(), "steps": p.steps()}
        model_input = {"name": INPUT_NAMES["text"], "shape": ["batch", "length"], "dtype": "int64"}
    else:
        preprocessing = _image_steps(p)
        model_input = {"name": INPUT_NAMES["image"], "shape": ["batch", p.channels, p.height, p.width],
                       "dtype": "float32"}
    return {
        "format": fmt, "model_file": model_file, "source_checkpoint": source, "input": model_input,
        "outputs": {"logits": "float32 [batch, classes]", "score": "float32 [batch]: larger = more OOD",
                    "is_ood": "bool [batch]: score > threshold"},
        "preprocessing": preprocessing,
        "class_names": classifier.class_names,
        "score": type(classifier.model.score).__name__,
        "threshold": classifier.threshold,
        "temperature": classifier.temperature,
        "confidence": "softmax(logits / temperature).max(): the calibrated confidence of the predicted class",
    }


def _image_steps(p: Any) -> dict[str, Any]:
    return {**p.to_dict(), "steps": [
        f"decode; convert to {'grey (L)' if p.channels == 1 else 'RGB'}",
        f"resize (PIL bilinear) so that the shorter side is {p.resize} px and the longer side "
        f"int({p.resize} * longer / shorter) px",
        f"centre crop {p.height}x{p.width}: top = round((height - {p.height}) / 2), "
        f"left = round((width - {p.width}) / 2)", "scale to [0, 1] (divide by 255)",
        "subtract mean and divide by std, per channel", "channels first: [channels, height, width]"]}


def example_input(preprocessing: Any) -> torch.Tensor:
    """A batch of 2 to trace the model with: images of the stored size, or 2 texts of 7 token indices."""
    if is_text(preprocessing):
        return torch.full((2, preprocessing.rules.fix_length or 7), 2, dtype=torch.long)
    p = preprocessing
    return torch.zeros(2, p.channels, p.height, p.width)


def export_paths(output: str | Path, fmt: str) -> tuple[Path, Path]:
    """The model file (``output`` with the suffix ``.pt``/``.onnx``) and its sidecar (``.json``) of ``output``."""
    if fmt not in FORMATS:
        raise OEUserError(f"format={fmt!r} is not an export format; choose one of {sorted(FORMATS)}.")
    output = Path(output).expanduser()
    return output.with_suffix(FORMATS[fmt]), output.with_suffix(".json")


def export_classifier(classifier: OODClassifier, fmt: str, output: str | Path, source: str = "") -> tuple[Path, Path]:
    """Write ``output`` + ``.pt``/``.onnx`` and ``output`` + ``.json`` (:func:`export_paths`); returns both paths."""
    model_path, json_path = export_paths(output, fmt)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model = classifier.model.to("cpu").eval()
    example = example_input(classifier.preprocessing)
    with replacing_path(model_path, ".partial") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; TorchScript still loads in C++ and Python
        if fmt == "torchscript":
            torch.jit.trace(model, example).save(str(tmp))
        else:
            text = is_text(classifier.preprocessing)
            _export_onnx(model, example, tmp, text, text and classifier.preprocessing.rules.fix_length is None)
    write_text_atomic(json_path, json.dumps(sidecar(classifier, model_path.name, fmt, source), indent=2) + "\n")
    return model_path, json_path


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, text: bool = False,
                 length: bool = False) -> None:
    """ONNX through torch.export (torch's default exporter), the batch dimension dynamic, and with ``length``
    the second one (text without a fixed length)."""
    missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
    if missing:
        raise OEUserError(f"format=onnx needs the packages {', '.join(missing)}: pip install -e \".[onnx]\" "
                          f"(or use format=torchscript, which needs only torch).")
    dims = {0: torch.export.Dim("batch", min=1)}
    if length:
        dims[1] = torch.export.Dim("length", min=1)
    program = torch.onnx.export(model, (example,), input_names=[INPUT_NAMES["text" if text else "image"]],
                                output_names=list(OUTPUTS), dynamic_shapes=(dims,), dynamo=True, verbose=False)
    program.save(str(path))


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
