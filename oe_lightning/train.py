"""``oe-train``: compose the config, train with Outlier Exposure, test, write results.json.

A thin entry point: Hydra composes and checks the config first; the heavy imports (torch,
Lightning, loggers) happen in :mod:`oe_lightning.runner` only once the config is known to be good.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from oe_lightning.cli import exit_when_done, report_user_errors, run_task
from oe_lightning.config import config_dir


def _train(cfg: DictConfig) -> float | None:
    return run_task(cfg, "train", "oe_lightning.train")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task of ``oe-train``; returns ``cfg.optimized_metric`` (what a sweeper minimises)."""
    return report_user_errors(_train, cfg)


def main() -> None:
    """Entry point of ``oe-train``: run, then leave without tearing down torch's module graph (~2 s)."""
    exit_when_done(hydra_main)


if __name__ == "__main__":
    main()
