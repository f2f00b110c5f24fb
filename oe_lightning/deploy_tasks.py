"""oe-predict and oe-export: the deployed classifier of a checkpoint applied to files, or written as a
TorchScript / ONNX model; outputs never replace their inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("oe_lightning")


def _classifier(cfg: DictConfig) -> Any:
    """The deployed classifier of ``cfg.ckpt_path`` (threshold and allow-list from the config)."""
    from oe_lightning.deployment import OODClassifier

    return OODClassifier.from_checkpoint(cfg.ckpt_path, device=str(cfg.get("device", "cpu")),
                                         threshold=cfg.get("threshold"),
                                         model_allowlist=list(cfg.get("model_allowlist") or []))


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image (text classifiers: every line of the text files) of ``cfg.input``; write
    predictions.csv/.jsonl, print a summary, return its counts."""
    from oe_lightning.deployment import input_files, is_text
    from oe_lightning.predictions import prediction_paths, print_summary, summary, write_predictions
    from oe_lightning.validate import check_output_files

    inputs = cfg.input
    inputs = [str(inputs)] if isinstance(inputs, str) else [str(i) for i in inputs]
    check_output_files("output", cfg.output, prediction_paths(cfg.output),
                       lambda: [Path(cfg.ckpt_path).expanduser(), *input_files(inputs)], bool(cfg.get("overwrite")))
    classifier = _classifier(cfg)
    rows = classifier.predict_files(inputs, batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=True)
    files = write_predictions(rows, cfg.output)
    print_summary(rows, classifier.threshold, files, "texts" if is_text(classifier.preprocessing) else "images")
    return {**summary(rows), "files": [str(f) for f in files]}


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the deployed classifier as ``cfg.format`` with its JSON sidecar."""
    from oe_lightning.exporting import export_classifier, export_paths
    from oe_lightning.validate import check_output_files

    check_output_files("output", cfg.output, export_paths(cfg.output, cfg.format),
                       lambda: [Path(cfg.ckpt_path).expanduser()], bool(cfg.get("overwrite")))
    model_path, json_path = export_classifier(_classifier(cfg), cfg.format, cfg.output, source=str(cfg.ckpt_path))
    log.info("exported %s and %s", model_path, json_path)
    print(f"written: {model_path}\nwritten: {json_path}")
    return {"files": [str(model_path), str(json_path)]}
