"""``oe-eval ckpt_path=...``: score a trained checkpoint on an OOD suite and write results.json.

A thin entry point, as :mod:`oe_lightning.train`; the work is :func:`oe_lightning.runner.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from oe_lightning.cli import report_user_errors
from oe_lightning.config import config_dir, print_config_tree


def _evaluate(cfg: DictConfig) -> float | None:
    if cfg.get("print_config"):
        print_config_tree(cfg, save_to=Path(HydraConfig.get().runtime.output_dir) / "config_tree.log")
    from oe_lightning.distributed import set_entry_module
    from oe_lightning.results import objective
    from oe_lightning.runner import evaluate

    set_entry_module("oe_lightning.evaluate")  # DDP ranks are started as `python -m oe_lightning.evaluate`
    return objective(evaluate(cfg), cfg.get("optimized_metric"))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``oe-eval``; returns ``cfg.optimized_metric`` (default the mean FPR95)."""
    return report_user_errors(_evaluate, cfg)


if __name__ == "__main__":
    main()
