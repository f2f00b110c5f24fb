"""Outlier mining (NTOM, Chen et al., ECML 2021): each epoch, train on the OE samples that the current model
finds hardest but one, chosen from a larger random pool by their OOD score.

jfc43/informative-outlier-mining train_ntom.py ``select_ood`` (:248-306), called at every epoch's start (:234):
a pool of candidates (400,000 = 4 × the kept number, :266-286) is scored in eval mode by the K+1-th class's
softmax probability (:280), sorted ascending (most ID-like first, :287), the hardest ``quantile`` (0.125, :36)
is skipped and the next ``2 × |ID train|`` are kept (:175, :290). Here the score is any OOD score on the model's
logits (larger = more OOD; energy on a :class:`~oe_lightning.models.background.BackgroundClassifier` ranks
exactly as the background probability), and the epoch's OE batches are drawn from the kept samples by the
OE sampler as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from oe_lightning.data.datamodule import worker_context
from oe_lightning.errors import OEUserError
from oe_lightning.scores import Energy


class OutlierMining(pl.Callback):
    """Chooses each epoch's OE samples (a Lightning callback; ``loss=ntom`` adds it).

    Args:
        quantile: the share of the pool, most ID-like first, that is skipped (NTOM's q).
        keep: how many samples the epoch draws from, as a multiple of the ID training images.
        pool: how many candidates are scored, as a multiple of ``keep`` (capped by the OE set's size).
        score: OOD score from logits, larger = more OOD; default energy.
        batch_size: the scoring pass's batch size.

    The pool is drawn from ``(seed, epoch)``; rank 0 scores it and every rank takes its choice; the choice is
    saved in checkpoints, so a run resumed mid-epoch trains on the same samples.
    """

    def __init__(self, quantile: float = 0.125, keep: float = 2.0, pool: float = 4.0,
                 score: Callable[[Tensor], Tensor] | None = None, batch_size: int = 512):
        if not 0 <= quantile < 1 or not keep > 0 or not pool >= 1 or batch_size < 1:
            raise OEUserError(f"loss.mining needs 0 <= quantile < 1, keep > 0, pool >= 1 and batch_size >= 1; got "
                              f"quantile={quantile}, keep={keep}, pool={pool}, batch_size={batch_size} (NTOM: "
                              f"0.125, 2, 4).")
        self.quantile, self.keep, self.pool, self.batch_size = float(quantile), float(keep), float(pool), batch_size
        self.score = score if score is not None else Energy()
        self.chosen: dict[str, Any] = {}  # {"epoch": e, "subset": [indices]}: this epoch's choice

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A run resumed mid-epoch (Lightning then skips that epoch's start hooks) trains the rest of the epoch
        on the choice saved with it."""
        sampler = getattr(trainer.datamodule, "oe_sampler", None)
        if sampler is not None and self.chosen.get("epoch") == int(trainer.current_epoch):
            self._narrow(sampler)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Mine (once per epoch; a resumed epoch keeps its saved choice) and narrow the OE sampler to it."""
        datamodule = trainer.datamodule
        sampler = getattr(datamodule, "oe_sampler", None)
        if sampler is None:
            return  # a baseline: no OE data
        epoch = int(trainer.current_epoch)
        self.datamodule = datamodule  # what a subclass may read beside the OE set (POEM: the ID images)
        if self.chosen.get("epoch") != epoch:
            subset = self.mine(trainer, pl_module, datamodule.oe_set, len(datamodule.train_set), sampler.seed + epoch,
                               getattr(datamodule, "num_workers", 0))
            self.chosen = {"epoch": epoch, "subset": subset.tolist()}
        self._narrow(sampler)

    def _narrow(self, sampler: Any) -> None:
        """Draw the epoch's OE samples from the chosen ones (indices checked against the OE set: a saved
        choice is data)."""
        subset = torch.tensor(self.chosen["subset"], dtype=torch.long)
        if len(subset) == 0 or int(subset.min()) < 0 or int(subset.max()) >= sampler.size:
            raise OEUserError(f"The saved outlier-mining choice of epoch {self.chosen['epoch']} holds indices outside "
                              f"the OE set of {sampler.size} images: the checkpoint belongs to another OE set. Resume "
                              f"with the oe= of the run that wrote it.")
        sampler.subset = subset

    def counts(self, oe_size: int, id_size: int) -> tuple[int, int, int]:
        """(pool, skipped, kept) sample counts for an OE set and an ID training set of these sizes."""
        keep = max(1, round(self.keep * id_size))
        pool = min(oe_size, max(1, round(self.pool * keep)))
        skipped = int(self.quantile * pool)
        return pool, skipped, max(1, min(keep, pool - skipped))

    @torch.no_grad()
    def mine(self, trainer: pl.Trainer, pl_module: pl.LightningModule, oe_set: Any, id_size: int,
             seed: int, num_workers: int = 0) -> Tensor:
        """The OE indices this epoch trains on: rank 0 scores a seeded random pool, every rank gets its choice."""
        pool_size, skipped, kept = self.counts(len(oe_set), id_size)
        g = torch.Generator().manual_seed(seed + 7919)
        pool = torch.randperm(len(oe_set), generator=g)[:pool_size] if len(oe_set) <= 1 << 24 else \
            torch.randint(len(oe_set), (pool_size,), generator=g)
        chosen = torch.zeros(kept, dtype=torch.long)
        if trainer.is_global_zero:
            chosen = self.choose(pl_module, oe_set, pool, skipped, kept, seed, num_workers)
        return trainer.strategy.broadcast(chosen, src=0)

    def choose(self, pl_module: pl.LightningModule, oe_set: Any, pool: Tensor, skipped: int, kept: int, seed: int,
               num_workers: int) -> Tensor:
        """NTOM's slice of the pool: sorted by the OOD score, most ID-like first, ``skipped`` left out."""
        scores = self.pool_scores(pl_module, Subset(oe_set, pool.tolist()), num_workers)
        order = torch.argsort(scores, stable=True)  # most ID-like (lowest OOD score) first
        return pool[order[skipped: skipped + kept]]

    def pool_scores(self, pl_module: pl.LightningModule, candidates: Subset, num_workers: int = 0) -> Tensor:
        """The OOD score of every candidate."""
        return self.over(pl_module, candidates, num_workers, lambda model, x: self.score(model(x)))

    def over(self, pl_module: pl.LightningModule, data: Dataset, num_workers: int,
             per_batch: Callable[[Any, Tensor], Tensor]) -> Tensor:
        """``per_batch(backbone, images)`` over every item of ``data``, concatenated on the CPU: one pass in eval
        mode without gradients (training mode restored after), read by the data's loader workers."""
        backbone, was_training = pl_module.backbone, pl_module.backbone.training
        family = getattr(getattr(pl_module.trainer, "datamodule", None), "family", None)
        backbone.eval()
        try:
            loader = DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=num_workers,
                                multiprocessing_context=worker_context(num_workers),
                                collate_fn=family.collate("outlier") if family is not None else None)
            with torch.no_grad():
                return torch.cat([per_batch(backbone, (b[0] if isinstance(b, list | tuple) else b).to(pl_module.device))
                                  .float().cpu() for b in loader])
        finally:
            backbone.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        """This epoch's choice, saved in checkpoints."""
        return dict(self.chosen)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a saved choice (checked: an epoch and a list of indices)."""
        epoch, subset = state_dict.get("epoch"), state_dict.get("subset")
        if isinstance(epoch, int) and isinstance(subset, list) and all(isinstance(i, int) for i in subset):
            self.chosen = {"epoch": epoch, "subset": subset}
