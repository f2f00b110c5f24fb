"""A run is identified by its resolved config (minus output-only keys), not by a hand-kept key list."""

from __future__ import annotations

import json

import pytest

from oe_lightning.results import group_identity, identity_hash, run_identity
from oe_lightning.table import collect_runs, group_runs
from tests.conftest import train_in_process
from tests.test_config import compose_train


def _ids(*overrides):
    identity = run_identity(compose_train(*overrides))
    return identity_hash(identity), identity_hash(group_identity(identity))


def test_output_only_keys_keep_the_identity_and_everything_else_changes_it():
    base_run, base_group = _ids()
    # where and how a run reports: the same run
    assert _ids("logger=wandb", "paths.output_dir=/elsewhere", "data.num_workers=3", "tags=[x]",
                "trainer.enable_progress_bar=false", "print_config=false") == (base_run, base_group)
    # keys a hand-kept list used to miss: each a run (and an experiment) of its own
    for override in ("loss=energy", "data.oe_batch_size=64", "score=energy", "model.width=16",
                     "evaluation.positive=in", "data.val_fraction=0.2", "ood.gaussian.num_samples=10",
                     # how a run trains: the optimiser and the arithmetic change its numbers
                     "module.optimizer.lr=0.05", "optim=adamw", "trainer.precision=bf16-mixed",
                     "data.batch_augment=null"):
        run, group = _ids(override)
        assert run != base_run and group != base_group, override
    assert len({_ids("loss=energy", f"loss.fn.m_out={m}")[1] for m in (-3, -4)}) == 2
    # data.device_augment is a recipe: what a run uses of it is in data.batch_augment (speed=resident)
    cifar = run_identity(compose_train("data=cifar10"))
    assert not any(k.startswith(("data.device_augment", "data.batch_augment")) for k in cifar)
    resident = run_identity(compose_train("data=cifar10", "speed=resident"))
    assert resident["data.batch_augment.in.padding"] == 4 and resident["data.resident"] is True
    assert not any(k.startswith("data.device_augment") for k in resident)
    # another seed: another run of the same experiment
    seed_run, seed_group = _ids("seed=1")
    assert seed_run != base_run and seed_group == base_group
    # fine-tuned from another seed's checkpoint: the same experiment, not the same as from scratch
    tuned = [_ids(f"module.pretrained=b/seed_{s}/last.ckpt")[1] for s in (0, 1)]
    assert tuned[0] == tuned[1] != base_group


def test_runs_differing_only_in_the_energy_margin_are_two_rows_and_resuming_names_the_key(tmp_path, capsys):
    for m_out in (-3, -4):
        res = train_in_process(tmp_path / f"m{m_out}", "loss=energy", f"loss.fn.m_out={m_out}", "trainer.max_epochs=1")
        assert res["identity"]["loss.fn.m_out"] == m_out and len(res["run_id"]) == 16
    groups = [g for g in group_runs(collect_runs(tmp_path)[0]) if g.lambda_oe > 0]
    assert len(groups) == 2
    assert sorted(g.label for g in groups) == ["EnergyMargin λ=0.1 (scratch) [loss.fn.m_out=-3]",
                                               "EnergyMargin λ=0.1 (scratch) [loss.fn.m_out=-4]"]
    # the same config again in the same directory: skipped (its run_id matches)
    before = json.loads((tmp_path / "m-3" / "results.json").read_text())
    again = train_in_process(tmp_path / "m-3", "loss=energy", "loss.fn.m_out=-3", "trainer.max_epochs=1")
    assert again["wall_time_s"] == before["wall_time_s"]
    # another margin into that directory: auto_resume refuses its checkpoint, naming the key
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(tmp_path / "m-3", "loss=energy", "loss.fn.m_out=-5", "trainer.max_epochs=1")
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "already holds a checkpoint of a different run (loss.fn.m_out: -3 there, -5 now" in err
