"""``oe-predict ckpt_path=... input=DIR_OR_FILES``: classify images, or say they are none of the classes.

A thin entry point, as :mod:`oe_lightning.train`; the work is :func:`oe_lightning.deploy_tasks.predict`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from oe_lightning.cli import exit_when_done, report_user_errors, run_task
from oe_lightning.config import config_dir


def _predict(cfg: DictConfig) -> float | None:
    return run_task(cfg, "predict", "oe_lightning.predict")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task of ``oe-predict``."""
    return report_user_errors(_predict, cfg)


def main() -> None:
    """Entry point of ``oe-predict``."""
    exit_when_done(hydra_main)


if __name__ == "__main__":
    main()
