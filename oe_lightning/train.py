"""``oe-train``: compose the config, train with Outlier Exposure, test, write results.json.

A thin entry point: Hydra composes and checks the config first; the heavy imports (torch,
Lightning, loggers) happen in :mod:`oe_lightning.runner` only once the config is known to be good.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from oe_lightning.cli import report_user_errors
from oe_lightning.config import config_dir, print_config_tree


def _train(cfg: DictConfig) -> float | None:
    if cfg.get("print_config"):
        print_config_tree(cfg, save_to=Path(HydraConfig.get().runtime.output_dir) / "config_tree.log")
    from oe_lightning.distributed import set_entry_module
    from oe_lightning.results import objective
    from oe_lightning.runner import train

    set_entry_module("oe_lightning.train")  # DDP ranks are started as `python -m oe_lightning.train`
    return objective(train(cfg), cfg.get("optimized_metric"))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``oe-train``; returns ``cfg.optimized_metric`` (what a sweeper minimises)."""
    return report_user_errors(_train, cfg)


if __name__ == "__main__":
    main()
