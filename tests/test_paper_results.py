import pytest

from oe_lightning.paper_results import MEANS, PER_SET, published


@pytest.mark.parametrize("method", ["baseline", "oe_tune"])
def test_cifar10_per_set_numbers_average_to_the_published_means(method):
    per_set = PER_SET["cifar10"][method]
    assert len(per_set) == 8
    for metric, mean in MEANS["cifar10"][method].items():
        assert sum(row[metric] for row in per_set.values()) / 8 == pytest.approx(mean, abs=0.006)


def test_published_lookup():
    c10 = published("cifar10", "oe_tune")
    assert c10["mean"] == {"fpr95": 9.50, "auroc": 97.81, "aupr_out": 90.48}
    assert c10["test_error"] == 5.27 and c10["per_set"]["svhn"]["fpr95"] == 4.76
    assert published("svhn", "oe_tune")["mean"]["fpr95"] == 0.07
    assert published("cifar100", "oe_scratch")["mean"]["auroc"] == 90.03
    with pytest.raises(KeyError, match="no 'oe_scratch' results for 'svhn'"):
        published("svhn", "oe_scratch")
