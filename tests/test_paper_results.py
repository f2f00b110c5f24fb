"""The paper's published numbers, checked against each other as printed in arXiv:1812.04606v3."""

import pytest

from oe_lightning.paper_results import CALIBRATION, MEAN_SETS, MEANS, PER_SET, TEST_ERROR, published


@pytest.mark.parametrize("data", sorted(PER_SET))
@pytest.mark.parametrize("method", ["baseline", "oe_tune"])
def test_table7_per_set_rows_average_to_its_mean_row(data, method):
    """Table 7's per-set rows (1 decimal) average to its Mean row (2 decimals) within their rounding
    (at most 0.05; the largest gap is 0.03), a check on the transcription of whole rows and columns."""
    per_set = PER_SET[data][method]
    assert tuple(per_set) == MEAN_SETS[data]  # the paper's rows, in its order, in our set names
    for metric, mean in MEANS[data][method].items():
        assert sum(row[metric] for row in per_set.values()) / len(per_set) == pytest.approx(mean, abs=0.05)


def test_only_what_the_paper_prints_is_stored():
    # OE from scratch: only CIFAR-10's FPR95 (Appendix C prose); no CIFAR-100 number at all
    assert MEANS["cifar10"]["oe_scratch"] == {"fpr95": 6.15}
    assert "oe_scratch" not in MEANS["cifar100"]
    assert TEST_ERROR == {"cifar10": {"baseline": 5.16, "oe_tune": 5.27, "oe_scratch": 4.26}}
    # Table 12: OE improves every calibration measure on every D_in (RMS, MAD down; Soft F1 up)
    for data, rows in CALIBRATION.items():
        base, oe = rows["baseline"], rows["oe_tune"]
        assert oe["rms"] < base["rms"] and oe["mad"] < base["mad"] and oe["soft_f1"] > base["soft_f1"], data
        assert base["mad"] <= base["rms"] and oe["mad"] <= oe["rms"]  # MAD lower-bounds RMS (App. G.1)


def test_published_lookup():
    c10 = published("cifar10", "oe_tune")
    assert c10["mean"] == {"fpr95": 9.50, "auroc": 97.81, "aupr_out": 90.48}
    assert c10["test_error"] == 5.27 and c10["per_set"]["svhn"]["fpr95"] == 4.8
    assert c10["calibration"] == {"rms": 9.3, "mad": 5.6, "soft_f1": 69.7}
    assert published("svhn", "oe_tune")["mean"]["fpr95"] == 0.07
    assert published("tiny_imagenet", "baseline")["per_set"]["imagenet_heldout"]["auroc"] == 72.8
    with pytest.raises(KeyError, match="no 'oe_scratch' results for 'svhn'"):
        published("svhn", "oe_scratch")
