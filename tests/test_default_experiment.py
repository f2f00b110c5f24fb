"""The default embedded experiment trained for real (30 epochs, baseline and OE): the README's claims.

One file, so that pytest-xdist (``--dist loadfile``) builds the ``default_runs`` fixture once.
"""

import pytest

from oe_lightning.results import is_complete
from tests.conftest import train_in_process


# ---- the default experiment, for real ---------------------------------------------------------
@pytest.mark.slow
def test_default_benchmark_accuracy_and_oe_halves_the_baseline_fpr95(default_runs):
    """The README's claim for the default experiment (30 epochs): OE at least halves the mean FPR95."""
    assert sorted(default_runs) == [0.0, 0.5]
    baseline, oe = default_runs[0.0]["results"], default_runs[0.5]["results"]
    assert baseline["id_accuracy"] >= 0.95 and oe["id_accuracy"] >= 0.95
    assert oe["mean"]["fpr95"] <= 0.5 * baseline["mean"]["fpr95"], (baseline["mean"], oe["mean"])
    assert set(oe["ood"]) == {"flower_crops", "gaussian", "rademacher", "blobs", "uniform"}
    assert oe["test_set_sizes"] == {"val": 126, "val_ood": 126, "in": 539, "flower_crops": 500, "gaussian": 500,
                                    "rademacher": 500, "blobs": 500, "uniform": 500}
    assert oe["scored"] == oe["test_set_sizes"] and is_complete(oe)
    assert oe["run"]["global_step"] == 30 * 9  # 30 epochs of 9 steps (1,132 training digits, batch 128)


@pytest.mark.slow
def test_oe_fine_tuning_starts_from_the_baseline_checkpoint(default_runs, tmp_path):
    baseline = default_runs[0.0]
    ckpt = baseline["dir"] / "checkpoints" / "last.ckpt"
    res = train_in_process(tmp_path / "tune", "experiment=digits_oe_tune", f"module.pretrained={ckpt}",
                           tiny=False)
    # 5 epochs from scratch reach ~90% accuracy; from the baseline's weights it stays high
    assert res["id_accuracy"] >= 0.95
    assert res["mean"]["fpr95"] < baseline["results"]["mean"]["fpr95"]
    assert res["config"]["pretrained"] == str(ckpt)
