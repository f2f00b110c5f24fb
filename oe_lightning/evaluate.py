"""``oe-eval ckpt_path=...``: score a trained checkpoint on an OOD suite and write results.json.

A thin entry point, as :mod:`oe_lightning.train`; the work is :func:`oe_lightning.runner.evaluate`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from oe_lightning.cli import exit_when_done, report_user_errors, run_task
from oe_lightning.config import config_dir


def _evaluate(cfg: DictConfig) -> float | None:
    return run_task(cfg, "evaluate", "oe_lightning.evaluate")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra task of ``oe-eval``; returns ``cfg.optimized_metric`` (default the mean FPR95)."""
    return report_user_errors(_evaluate, cfg)


def main() -> None:
    """Entry point of ``oe-eval``: run, then leave without tearing down torch's module graph (~2 s)."""
    exit_when_done(hydra_main)


if __name__ == "__main__":
    main()
