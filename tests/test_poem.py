"""POEM: the posterior of its Bayesian linear regression restated from the reference (with the ID rows repeated
as it repeats them), the epoch's choice = the pool's smallest |β·z|, and a run that trains, saves its buffer and
resumes its choice."""

from __future__ import annotations

import json

import pytest
import torch

from oe_lightning.errors import OEUserError
from oe_lightning.methods import PosteriorSampledMining
from oe_lightning.methods.poem import blr_posterior, sample_weights
from tests.conftest import train_in_process


def test_posterior_is_the_references_regression_with_repeated_id_rows():
    g = torch.Generator().manual_seed(0)
    z_id, z_ood = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g)
    conf, noise, sigma, sigma_n = 3.0, 0.2, 20.0, 0.5
    mean, cov = blr_posterior(z_id, z_ood, 3, conf, noise, sigma, sigma_n)
    # neural_linear_opt.py:80-82, 144-147, 183-189 restated: Z = [z_id x3; z_ood], y = [-conf+ε ...; conf+ε ...]
    z = torch.cat([z_id, z_id, z_id, z_ood]).double()
    y = torch.cat([torch.full((21,), -conf + noise), torch.full((9,), conf + noise)]).double()
    a = z.T @ z / sigma_n + torch.eye(5, dtype=torch.float64) / sigma
    torch.testing.assert_close(mean, torch.linalg.inv(a) @ z.T @ y / sigma_n)
    torch.testing.assert_close(cov, sigma * torch.linalg.inv(a))
    draws = torch.stack([sample_weights(mean, cov, torch.Generator().manual_seed(i)) for i in range(4000)])
    torch.testing.assert_close(draws.mean(0), mean, atol=0.15 * float(cov.diagonal().max().sqrt()), rtol=0)


def test_the_choice_is_the_pools_smallest_distance_to_the_sampled_boundary(monkeypatch):
    mining = PosteriorSampledMining()
    features = torch.tensor([[1.0, 0.0], [0.1, 0.0], [-0.05, 0.0], [2.0, 0.0], [-0.5, 0.0]])
    monkeypatch.setattr(mining, "features", lambda *a: features)
    mining.datamodule = type("DM", (), {"oe_sampler": type("S", (), {"seed": 0})()})()
    pool = torch.tensor([10, 11, 12, 13, 14])
    chosen = mining.choose(type("M", (), {"current_epoch": 0})(), None, pool, 0, 2, 3, 0)
    beta = sample_weights(torch.randn(2, generator=torch.Generator().manual_seed(3 + 104729), dtype=torch.float64)
                          * 0.01, 20 * torch.eye(2, dtype=torch.float64), torch.Generator().manual_seed(3 + 104729))
    expected = pool[torch.argsort((features.double() @ beta).abs(), stable=True)[:2]]
    assert chosen.tolist() == expected.tolist() == [12, 11]  # |β·z| is |β_0| |z_0|: the two nearest 0
    with pytest.raises(OEUserError, match="sigma"):
        PosteriorSampledMining(sigma=0)


def test_loss_poem_trains_and_keeps_the_buffer_in_its_checkpoints(tmp_path):
    results = train_in_process(tmp_path, "loss=poem", "trainer.max_epochs=3", "score=energy")
    assert results["config"]["loss"] == "EnergyMargin" and results["config"]["mining"] == "PosteriorSampledMining"
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    saved = next(v for k, v in state.items() if "PosteriorSampledMining" in k)
    assert saved["epoch"] == 2 and len(saved["history"]) == 3 and saved["history"][-1] == saved["subset"]
    assert len(saved["subset"]) == round(1.0 * results["run"]["train_samples_per_rank"]["in"])
    json.dumps(results)
