"""A run is identified by its resolved config (minus output-only keys), not by a hand-kept key list."""

from __future__ import annotations

import json

import pytest

from oe_lightning.results import group_identity, identity_hash, run_identity
from oe_lightning.run_groups import collect_runs, group_runs
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


def _earlier_layout(identity: dict) -> dict:
    """An identity as the layout before the detector registry recorded it: the module mirrored the
    evaluation settings and the primary score was a config (score._target_, score.temperature)."""
    old = {k: v for k, v in identity.items() if k != "score"}
    old.update({"module.recall": 0.95, "module.fpr_rule": "first", "module.positive": "out", "module.protocol": "full",
                "module.num_to_avg": 10, "score._target_": "oe_lightning.scores.Energy", "score.temperature": 1.0})
    return old


def test_a_run_recorded_under_the_earlier_config_layout_resumes_and_is_skipped_when_complete(tmp_path):
    """Runs started before score= became a detector name carry other identity keys: they still continue from
    their checkpoint, are skipped once complete, and group with the same run recorded today."""
    import torch

    from oe_lightning.results import upgraded_identity

    now = run_identity(compose_train("score=energy"))
    assert upgraded_identity(_earlier_layout(now)) == now
    odd = {**_earlier_layout(now), "score.temperature": 3.0}  # settings no detector file has: left as they are
    assert upgraded_identity(odd)["score.temperature"] == 3.0

    run = tmp_path / "run"
    first = train_in_process(run, "score=energy", "trainer.max_epochs=1")
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["oe_lightning"]["identity"] = _earlier_layout(checkpoint["oe_lightning"]["identity"])
    torch.save(checkpoint, last)
    results = json.loads((run / "results.json").read_text())
    results["identity"] = _earlier_layout(results["identity"])
    results["run_id"] = identity_hash(results["identity"])
    (run / "results.json").write_text(json.dumps(results))
    assert train_in_process(run, "score=energy", "trainer.max_epochs=1")["run_id"] == results["run_id"]  # skipped
    resumed = train_in_process(run, "score=energy", "trainer.max_epochs=2")  # continues from epoch 1
    assert resumed["run"]["global_step"] == 2 * first["run"]["global_step"]
    groups = group_runs([{**results, "_dir": "old"}, {**first, "config": {**first["config"], "seed": 1}}])
    assert len(groups) == 1 and len(groups[0].runs) == 2
