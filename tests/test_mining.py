"""Outlier mining (NTOM): each epoch's OE samples are the pool's candidates ranked as the reference ranks them
(most ID-like first, the hardest quantile skipped), every OE index of the epoch comes from them, and a run
stopped mid-epoch resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from oe_lightning.errors import OEUserError
from oe_lightning.methods import OutlierMining


class _Snapshot(pl.Callback):
    """Before mining (callbacks run in order): the weights the epoch's choice is made with; after it, the epoch's
    OE indices as the sampler will draw them."""

    def __init__(self):
        self.weights, self.drawn = {}, {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.weights[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}


class _Drawn(pl.Callback):
    def __init__(self, into: _Snapshot):
        self.into = into

    def on_train_epoch_start(self, trainer, pl_module):
        self.into.drawn[trainer.current_epoch] = list(trainer.datamodule.oe_sampler)


def test_each_epoch_trains_on_the_references_slice_of_its_pool(tmp_path):
    from hydra import compose, initialize_config_dir

    from oe_lightning.building import build_datamodule, build_module
    from oe_lightning.config import config_dir
    from oe_lightning.scores import Energy

    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["loss=ntom", "data.resident=false", "data.num_workers=0"])
    pl.seed_everything(0)
    module, datamodule = build_module(cfg), build_datamodule(cfg, with_oe=True)
    mining = OutlierMining(quantile=0.125, keep=0.5, pool=3.0)
    snapshot = _Snapshot()
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[snapshot, mining, _Drawn(snapshot)])
    trainer.fit(module, datamodule)
    oe_set, n_id = datamodule.oe_set, len(datamodule.train_set)
    pool_size, skipped, kept = mining.counts(len(oe_set), n_id)
    assert (pool_size, kept) == (min(len(oe_set), 3 * round(0.5 * n_id)), round(0.5 * n_id))
    for epoch in (0, 1):
        # the reference's rule, restated: a seeded pool, scored in eval mode by the weights at the epoch's start,
        # sorted ascending (train_ntom.py:287), [int(q * N) : int(q * N) + keep] (:290)
        g = torch.Generator().manual_seed(datamodule.oe_sampler.seed + epoch + 7919)
        pool = torch.randperm(len(oe_set), generator=g)[:pool_size]
        model = build_module(cfg).backbone
        model.load_state_dict(snapshot.weights[epoch])
        model.eval()
        with torch.no_grad():
            scores = Energy()(model(torch.stack([oe_set[int(i)] for i in pool])))
        expected = pool[torch.argsort(scores, stable=True)[int(0.125 * pool_size): int(0.125 * pool_size) + kept]]
        assert snapshot.drawn[epoch] and set(snapshot.drawn[epoch]) <= set(expected.tolist())
        if epoch == 1:
            assert mining.chosen["subset"] == expected.tolist()


def test_a_saved_choice_is_kept_for_its_epoch_and_checked_when_loaded(monkeypatch):
    mining = OutlierMining()
    mining.load_state_dict({"epoch": 3, "subset": [5, 1, 4]})
    sampler = SimpleNamespace(seed=0, subset=None, size=6)
    trainer = SimpleNamespace(current_epoch=3, datamodule=SimpleNamespace(oe_sampler=sampler))
    monkeypatch.setattr(mining, "mine", lambda *a: pytest.fail("a resumed epoch must not mine again"))
    mining.on_train_epoch_start(trainer, None)
    assert sampler.subset.tolist() == [5, 1, 4] and mining.state_dict() == {"epoch": 3, "subset": [5, 1, 4]}
    mining.load_state_dict({"epoch": "3", "subset": "rm -rf"})  # not an epoch and indices: ignored
    assert mining.chosen == {"epoch": 3, "subset": [5, 1, 4]}
    sampler.size = 5  # another OE set: index 5 is out of it
    with pytest.raises(OEUserError, match="outside the OE set of 5 images"):
        mining.on_train_epoch_start(trainer, None)
    with pytest.raises(OEUserError, match="quantile"):
        OutlierMining(quantile=1.5)


@pytest.mark.slow
def test_an_ntom_run_stopped_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    from tests.conftest import TINY_CLI, run_cli
    from tests.test_reliability import RESUME_RUN

    args = (*RESUME_RUN, "loss=ntom", *TINY_CLI)
    whole = run_cli("oe-train", *args, f"hydra.run.dir={tmp_path / 'whole'}", tmp_path=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    run = (*args, f"hydra.run.dir={tmp_path / 'run'}")
    stopped = run_cli("oe-train", *run, tmp_path=tmp_path, env={"OE_TEST_KILL_AT": "5"})
    assert stopped.returncode == -9, stopped.stderr[-2000:]
    resumed = run_cli("oe-train", *run, tmp_path=tmp_path)
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout, resumed.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "run"))
    assert b["mean"] == a["mean"] and b["id_accuracy"] == a["id_accuracy"] and b["run"]["global_step"] == 9
    wa, wb = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True) for d in ("whole", "run"))
    assert all(torch.equal(wa["state_dict"][k], wb["state_dict"][k]) for k in wa["state_dict"])
    mined = [v for k, v in wb["callbacks"].items() if "OutlierMining" in k]
    assert mined and mined[0]["epoch"] == 2 and len(mined[0]["subset"]) > 0


@pytest.mark.slow
def test_ddp_ranks_train_on_one_choice_and_draw_disjoint_samples_from_it(tmp_path):
    """trainer=ddp_sim (2 processes): rank 0 mines, both ranks get its choice, and their OE draws are disjoint
    parts of it."""
    from tests.conftest import TINY_CLI, run_cli

    draws = tmp_path / "draws"
    draws.mkdir()
    proc = run_cli("oe-train", "loss=ntom", "trainer=ddp_sim", "trainer.max_epochs=2", *TINY_CLI,
                   "+callbacks.draws._target_=tests.helpers.RecordOEDraws", f"hydra.run.dir={tmp_path / 'run'}",
                   tmp_path=tmp_path, env={"OE_TEST_DRAWS_DIR": str(draws)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for epoch in (0, 1):
        r0, r1 = (json.loads((draws / f"rank{r}_epoch{epoch}.json").read_text()) for r in (0, 1))
        assert r0["subset"] == r1["subset"] and len(r0["subset"]) > 0
        assert set(r0["drawn"]) | set(r1["drawn"]) <= set(r0["subset"])
        assert len(r0["drawn"]) == len(r1["drawn"]) > 0
