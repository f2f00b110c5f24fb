"""``oe-export ckpt_path=... format=torchscript|onnx``: the deployed classifier as one file + a JSON sidecar.

A thin entry point, as :mod:`oe_lightning.train`; the work is :func:`oe_lightning.deploy_tasks.export`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from oe_lightning.cli import exit_when_done, report_user_errors, run_task
from oe_lightning.config import config_dir


def _export(cfg: DictConfig) -> float | None:
    return run_task(cfg, "export", "oe_lightning.export")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task of ``oe-export``."""
    return report_user_errors(_export, cfg)


def main() -> None:
    """Entry point of ``oe-export``."""
    exit_when_done(hydra_main)


if __name__ == "__main__":
    main()
