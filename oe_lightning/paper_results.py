"""The Outlier Exposure paper's published numbers (Hendrycks et al., ICLR 2019), as data.

Values are percentages as printed: FPR95 (lower is better), AUROC and AUPR (OOD as the positive
class, i.e. our ``aupr_out``). ``MEANS`` holds the mean over each D_in's OOD suite; ``PER_SET``
the per-set values where the paper lists them (CIFAR-10, MSP baseline and OE fine-tuning).
Set names are ours (as in the ``ood=`` suites); ``lsun`` is the paper's LSUN column.
"""

from __future__ import annotations

METRICS = ("fpr95", "auroc", "aupr_out")


def _row(fpr95: float, auroc: float, aupr: float) -> dict[str, float]:
    return {"fpr95": fpr95, "auroc": auroc, "aupr_out": aupr}


MEANS: dict[str, dict[str, dict[str, float]]] = {
    "svhn": {"baseline": _row(6.28, 97.95, 91.12), "oe_tune": _row(0.07, 99.96, 99.85)},
    "cifar10": {"baseline": _row(34.94, 89.27, 59.16), "oe_tune": _row(9.50, 97.81, 90.48),
                "oe_scratch": _row(6.15, 98.56, 93.75)},
    "cifar100": {"baseline": _row(62.66, 73.11, 30.05), "oe_tune": _row(38.50, 87.89, 58.15),
                 "oe_scratch": _row(32.59, 90.03, 65.50)},
    "tiny_imagenet": {"baseline": _row(66.27, 64.86, 27.15), "oe_tune": _row(13.99, 92.18, 79.26)},
}

PER_SET: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "cifar10": {
        "baseline": {
            "gaussian": _row(14.39, 94.72, 70.00), "rademacher": _row(47.55, 79.93, 32.29),
            "blobs": _row(16.20, 94.54, 73.71), "textures": _row(42.82, 88.37, 58.44),
            "svhn": _row(28.82, 91.83, 66.93), "places365": _row(47.54, 87.80, 57.49),
            "lsun": _row(38.74, 89.08, 58.58), "cifar100": _row(43.47, 87.88, 55.81),
        },
        "oe_tune": {
            "gaussian": _row(0.69, 99.60, 94.28), "rademacher": _row(0.49, 99.78, 97.39),
            "blobs": _row(0.57, 99.83, 98.92), "textures": _row(12.16, 97.72, 90.97),
            "svhn": _row(4.76, 98.43, 89.41), "places365": _row(17.28, 96.23, 87.27),
            "lsun": _row(12.08, 97.57, 89.42), "cifar100": _row(27.95, 93.31, 76.22),
        },
    },
}

# The sets each published mean is over (hendrycks/outlier-exposure CIFAR/test.py:284-285,
# SVHN/test.py:285-286, TinyImageNet/test.py:277-278), in our names (conf/ood/<data>_paper.yaml).
MEAN_SETS: dict[str, tuple[str, ...]] = {
    "cifar10": ("gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun", "cifar100"),
    "cifar100": ("gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun", "cifar10"),
    "svhn": ("gaussian", "bernoulli", "blobs", "icons50", "textures", "places365", "lsun", "cifar10",
             "street_letters"),
    "tiny_imagenet": ("gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun",
                      "imagenet_heldout"),
}
PAPER_FPR_RULE = "nearest"  # utils/display_results.py:64: the TPR nearest 0.95

# The energy paper's (Liu et al., NeurIPS 2020) mean FPR95 over its 6 sets (conf/ood/cifar10_energy.yaml),
# ID positive, WRN-40-2, energy score; it publishes no per-set, AUROC or AUPR values.
# wetliu/energy_ood README.md:45-54 (CIFAR-10) and :71-79 (CIFAR-100), "Energy with fine-tune".
ENERGY_MEAN_FPR95: dict[str, float] = {"cifar10": 3.32, "cifar100": 47.55}
ENERGY_SETS = ("textures", "svhn", "places365", "lsun_crop", "lsun_resize", "isun")

TEST_ERROR: dict[str, dict[str, float]] = {"cifar10": {"baseline": 5.16, "oe_tune": 5.27}}


def published(dataset: str, method: str) -> dict[str, object]:
    """``{"mean": {...}, "per_set": {...}, "test_error": ...}`` for a D_in and a method.

    ``method`` is ``baseline``, ``oe_tune`` or ``oe_scratch``; missing entries are omitted.
    """
    if dataset not in MEANS or method not in MEANS[dataset]:
        known = {d: sorted(m) for d, m in MEANS.items()}
        raise KeyError(f"The paper publishes no {method!r} results for {dataset!r}; it has {known}.")
    out: dict[str, object] = {"mean": MEANS[dataset][method]}
    if method in PER_SET.get(dataset, {}):
        out["per_set"] = PER_SET[dataset][method]
    if method in TEST_ERROR.get(dataset, {}):
        out["test_error"] = TEST_ERROR[dataset][method]
    return out
