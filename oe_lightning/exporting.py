"""Write a deployed classifier (:class:`~oe_lightning.deployment.OODClassifier`) as a TorchScript or ONNX
file plus a JSON sidecar that says how to feed it and read its outputs; loading either needs only
torch (or onnxruntime), not oe_lightning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from oe_lightning.deployment import OODClassifier
from oe_lightning.errors import OEUserError
from oe_lightning.results import replacing_path, write_text_atomic

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
OUTPUTS = ("logits", "score", "is_ood")


def sidecar(classifier: OODClassifier, model_file: str, fmt: str, source: str) -> dict[str, Any]:
    """What a user of the exported file needs: inputs, outputs, preprocessing, classes, threshold."""
    p = classifier.preprocessing
    return {
        "format": fmt, "model_file": model_file, "source_checkpoint": source,
        "input": {"name": "images", "shape": ["batch", p.channels, p.height, p.width], "dtype": "float32"},
        "outputs": {"logits": "float32 [batch, classes]", "score": "float32 [batch]: larger = more OOD",
                    "is_ood": "bool [batch]: score > threshold"},
        "preprocessing": {**p.to_dict(), "steps": [
            f"decode; convert to {'grey (L)' if p.channels == 1 else 'RGB'}",
            f"resize (PIL bilinear) so that the shorter side is {p.resize} px and the longer side "
            f"int({p.resize} * longer / shorter) px",
            f"centre crop {p.height}x{p.width}: top = round((height - {p.height}) / 2), "
            f"left = round((width - {p.width}) / 2)", "scale to [0, 1] (divide by 255)",
            "subtract mean and divide by std, per channel", "channels first: [channels, height, width]"]},
        "class_names": classifier.class_names,
        "score": type(classifier.model.score).__name__,
        "threshold": classifier.threshold,
        "temperature": classifier.temperature,
        "confidence": "softmax(logits / temperature).max(): the calibrated confidence of the predicted class",
    }


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
    p = classifier.preprocessing
    example = torch.zeros(2, p.channels, p.height, p.width)
    with replacing_path(model_path, ".partial") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; TorchScript still loads in C++ and Python
        if fmt == "torchscript":
            torch.jit.trace(model, example).save(str(tmp))
        else:
            _export_onnx(model, example, tmp)
    write_text_atomic(json_path, json.dumps(sidecar(classifier, model_path.name, fmt, source), indent=2) + "\n")
    return model_path, json_path


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX through torch.export (torch's default exporter), the batch dimension dynamic."""
    missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
    if missing:
        raise OEUserError(f"format=onnx needs the packages {', '.join(missing)}: pip install -e \".[onnx]\" "
                          f"(or use format=torchscript, which needs only torch).")
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (example,), input_names=["images"], output_names=list(OUTPUTS),
                                dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    program.save(str(path))


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
