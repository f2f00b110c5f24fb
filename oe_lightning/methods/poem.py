"""POEM (Ming et al., ICML 2022): outlier mining by posterior sampling.

A Bayesian linear regression on the network's penultimate features separates ID (target -conf) from the
outliers trained on in the last ``buffer_epochs`` epochs (+conf); each epoch one weight vector β is drawn from
its posterior and the pool's candidates closest to that sampled boundary (smallest |β·z|) are kept
(deeplearning-wisc/poem train_poem.py:279-324, neural_linear_opt.py:52-196). The training loss is the energy
OE term (``loss=poem``: energy margins and weight 0.1, neural_linear_opt.py:109-119).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from oe_lightning.errors import OEUserError
from oe_lightning.methods.mining import OutlierMining
from oe_lightning.models.contract import feature_backbone


def blr_posterior(z_id: Tensor, z_ood: Tensor, id_repeats: int, conf: float, noise: float, sigma: float,
                  sigma_n: float) -> tuple[Tensor, Tensor]:
    """The posterior mean and covariance of the reference's regression, in float64 (neural_linear_opt.py:177-196):
    rows ``z_id`` (each counted ``id_repeats`` times, as the reference repeats its ID set to match the buffered
    outliers, :144-147) with target ``-conf + noise``, rows ``z_ood`` with ``conf + noise`` (:80-82);
    ``A = ZᵀZ/σ_n + I/σ``, ``μ = A⁻¹Zᵀy/σ_n``, ``Σ = σ·A⁻¹`` (as written there)."""
    z_id, z_ood = z_id.double(), z_ood.double()
    gram = id_repeats * z_id.T @ z_id + z_ood.T @ z_ood
    target = id_repeats * z_id.sum(0) * (-conf + noise) + z_ood.sum(0) * (conf + noise)
    precision = gram / sigma_n + torch.eye(gram.shape[0], dtype=torch.float64) / sigma
    inverse = torch.linalg.inv(precision)
    return inverse @ target / sigma_n, sigma * inverse


def sample_weights(mean: Tensor, covariance: Tensor, generator: torch.Generator) -> Tensor:
    """β ~ N(mean, covariance), from the eigen-decomposition with |eigenvalues| (the reference's fix for a
    covariance that rounding left indefinite, neural_linear_opt.py:190-196)."""
    values, vectors = torch.linalg.eigh((covariance + covariance.T) / 2)
    noise = torch.randn(mean.shape[0], generator=generator, dtype=torch.float64)
    return mean + vectors @ (values.abs().sqrt() * noise)


class PosteriorSampledMining(OutlierMining):
    """POEM's choice of each epoch's outliers (a Lightning callback; ``loss=poem`` adds it).

    Args:
        keep: outliers per epoch, as a multiple of the ID training images (ood_factor 1, train_poem.py:87, 208).
        pool: candidates scored, as a multiple of ``keep`` (200 × 2000 = 400,000 = 8 × 50,000, :67-69).
        conf: the regression targets ±conf (:77); sigma, sigma_n: the prior and noise variances (:75-76).
        buffer_epochs: how many epochs of chosen outliers the regression keeps (BUF_SIZE 4, :101).

    The first epoch draws β from the prior (mean ~ N(0, 0.01²), covariance σ·I: neural_linear_opt.py:44-46).
    The chosen outliers of the last epochs are saved in checkpoints with the epoch's choice.
    """

    def __init__(self, keep: float = 1.0, pool: float = 8.0, conf: float = 3.0, sigma: float = 20.0,
                 sigma_n: float = 0.5, buffer_epochs: int = 4, batch_size: int = 512):
        super().__init__(quantile=0.0, keep=keep, pool=pool, batch_size=batch_size)
        if not (conf > 0 and sigma > 0 and sigma_n > 0 and buffer_epochs >= 1):
            raise OEUserError(f"loss.mining (POEM) needs conf, sigma, sigma_n > 0 and buffer_epochs >= 1; got conf="
                              f"{conf}, sigma={sigma}, sigma_n={sigma_n}, buffer_epochs={buffer_epochs} (POEM: 3, 20, "
                              f"0.5, 4).")
        self.conf, self.sigma, self.sigma_n = float(conf), float(sigma), float(sigma_n)
        self.buffer_epochs = buffer_epochs
        self.history: list[list[int]] = []  # the chosen outliers of the last buffer_epochs epochs

    def mine(self, trainer: pl.Trainer, pl_module: pl.LightningModule, oe_set: Any, id_size: int, seed: int,
             num_workers: int = 0) -> Tensor:
        """The epoch's choice, remembered (on every rank) for the next epochs' regressions."""
        chosen = super().mine(trainer, pl_module, oe_set, id_size, seed, num_workers)
        self.history = [*self.history, chosen.tolist()][-self.buffer_epochs:]
        return chosen

    def choose(self, pl_module: pl.LightningModule, oe_set: Any, pool: Tensor, skipped: int, kept: int, seed: int,
               num_workers: int) -> Tensor:
        """The ``kept`` candidates with the smallest |β·z| under this epoch's sampled β (train_poem.py:308-314)."""
        g = torch.Generator().manual_seed(seed + 104729)
        run_seed = self.datamodule.oe_sampler.seed  # the same every epoch: one shift for every target, :80-82
        noise = float(torch.randn((), generator=torch.Generator().manual_seed(run_seed), dtype=torch.float64))
        noise *= self.sigma_n ** 0.5
        features = self.features(pl_module, Subset(oe_set, pool.tolist()), num_workers)
        if not self.history:
            mean = torch.randn(features.shape[1], generator=g, dtype=torch.float64) * 0.01
            beta = sample_weights(mean, self.sigma * torch.eye(features.shape[1], dtype=torch.float64), g)
        else:
            outliers = Subset(oe_set, [i for chosen in self.history for i in chosen])
            z_id = self.features(pl_module, self.datamodule.train_set, num_workers)
            z_ood = self.features(pl_module, outliers, num_workers)
            mean, covariance = blr_posterior(z_id, z_ood, len(self.history), self.conf, noise, self.sigma,
                                             self.sigma_n)
            beta = sample_weights(mean, covariance, g)
        distance = (features.double() @ beta).abs()
        return pool[torch.argsort(distance, stable=True)[:kept]]

    def features(self, pl_module: pl.LightningModule, data: Dataset, num_workers: int) -> Tensor:
        """Penultimate features (the feature contract) of every item, in eval mode, no bias column
        (neural_linear_opt.py:58-62, 174-175)."""
        view = feature_backbone(pl_module.backbone, "loss=poem (POEM's regression on features)")
        return self.over(pl_module, data, num_workers,
                         lambda _, x: view.forward_head(view.forward_features(x), pre_logits=True))

    def state_dict(self) -> dict[str, Any]:
        """The epoch's choice and the buffered choices of the last epochs."""
        return {**super().state_dict(), "history": [list(c) for c in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore them (checked: lists of integer indices)."""
        super().load_state_dict(state_dict)
        history = state_dict.get("history")
        if isinstance(history, list) and all(isinstance(c, list) and all(isinstance(i, int) for i in c)
                                             for c in history):
            self.history = history[-self.buffer_epochs:]
