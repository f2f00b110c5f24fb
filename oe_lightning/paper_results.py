"""The Outlier Exposure paper's published numbers (Hendrycks et al., ICLR 2019), as data.

Values are percentages as printed: FPR95 (FPR90 for the text experiments; lower is better), AUROC and AUPR
(OOD as the positive class, i.e. our ``aupr_out``). ``MEANS`` holds the mean over each D_in's OOD suite, ``PER_SET``
the per-set values (MSP baseline and OE fine-tuning), ``TEST_ERROR`` and ``CALIBRATION`` what the
paper prints of those. Each comment cites the paper's table, row and column; a value the paper does
not print (e.g. from the authors' logs) is not here. Set names are ours (as in the ``ood=`` suites).
"""

from __future__ import annotations

METRICS = ("fpr95", "auroc", "aupr_out")


def _row(fpr95: float, auroc: float, aupr: float) -> dict[str, float]:
    return {"fpr95": fpr95, "auroc": auroc, "aupr_out": aupr}


# Every value is copied from arXiv:1812.04606v3 (= the ICLR 2019 camera-ready). Table 7 (p. 12,
# Appendix A, "Vision OOD example detection for the maximum softmax probability (MSP) baseline
# detector and the MSP detector after fine-tuning with Outlier Exposure") has, per D_in, one row per
# OOD set and a "Mean" row; columns FPR95 / AUROC / AUPR, each "MSP" (our baseline) and "+OE" (our
# oe_tune). Its Mean rows print 2 decimals (Table 1 prints the same means to 1 decimal), its
# per-set rows 1 decimal; both are stored exactly as printed.

# Table 7, rows "<D_in> Mean", columns MSP (baseline) and +OE (oe_tune), in the order FPR95, AUROC, AUPR.
MEANS: dict[str, dict[str, dict[str, float]]] = {
    "svhn": {"baseline": _row(6.28, 97.95, 91.12), "oe_tune": _row(0.07, 99.96, 99.85)},
    "cifar10": {"baseline": _row(34.94, 89.27, 59.16), "oe_tune": _row(9.50, 97.81, 90.48),
                # Appendix C (p. 14), prose: "...from scratch ... the FPR95 is 6.15%"; the paper
                # prints no AUROC/AUPR for OE from scratch, nor any CIFAR-100 from-scratch number.
                "oe_scratch": {"fpr95": 6.15}},
    "cifar100": {"baseline": _row(62.66, 73.11, 30.05), "oe_tune": _row(38.50, 87.89, 58.15)},
    "tiny_imagenet": {"baseline": _row(66.27, 64.86, 27.15), "oe_tune": _row(13.99, 92.18, 79.26)},
}


def _sets(names: tuple[str, ...], msp: list[tuple[float, float, float]],
          oe: list[tuple[float, float, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """One Table 7 block: per OOD set (rows in the paper's order), the MSP and the +OE columns."""
    return {"baseline": {n: _row(*v) for n, v in zip(names, msp, strict=True)},
            "oe_tune": {n: _row(*v) for n, v in zip(names, oe, strict=True)}}


# Table 7, per-set rows (1 decimal as printed; "100." there is stored as 100.0), per D_in block.
# Set names are ours (conf/ood/<data>_paper.yaml): the paper's "LSUN" is lsun, "Chars74K" street_letters,
# Tiny ImageNet's "ImageNet" imagenet_heldout.
PER_SET: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "svhn": _sets(
        ("gaussian", "bernoulli", "blobs", "icons50", "textures", "places365", "lsun", "cifar10",
         "street_letters"),
        [(5.4, 98.2, 90.5), (4.4, 98.6, 91.9), (3.7, 98.9, 93.5), (11.4, 96.4, 87.2), (7.2, 97.5, 90.9),
         (5.6, 98.1, 92.5), (6.4, 97.8, 91.0), (6.0, 98.0, 91.2), (6.4, 97.9, 91.5)],
        [(0.0, 100.0, 100.0), (0.0, 100.0, 100.0), (0.0, 100.0, 100.0), (0.3, 99.8, 99.2),
         (0.2, 100.0, 99.7), (0.1, 100.0, 99.9), (0.1, 100.0, 99.9), (0.1, 100.0, 99.9),
         (0.1, 100.0, 99.9)]),
    "cifar10": _sets(
        ("gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun", "cifar100"),
        [(14.4, 94.7, 70.0), (47.6, 79.9, 32.3), (16.2, 94.5, 73.7), (42.8, 88.4, 58.4),
         (28.8, 91.8, 66.9), (47.5, 87.8, 57.5), (38.7, 89.1, 58.6), (43.5, 87.9, 55.8)],
        [(0.7, 99.6, 94.3), (0.5, 99.8, 97.4), (0.6, 99.8, 98.9), (12.2, 97.7, 91.0),
         (4.8, 98.4, 89.4), (17.3, 96.2, 87.3), (12.1, 97.6, 89.4), (28.0, 93.3, 76.2)]),
    "cifar100": _sets(
        ("gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun", "cifar10"),
        [(54.3, 64.7, 19.7), (39.0, 79.4, 30.1), (58.0, 75.3, 29.7), (71.5, 73.8, 33.3),
         (69.3, 71.4, 30.7), (70.4, 74.2, 33.8), (74.0, 70.7, 28.8), (64.9, 75.4, 34.3)],
        [(12.1, 95.7, 71.1), (17.1, 93.0, 56.9), (12.1, 97.2, 86.2), (54.4, 84.8, 56.3),
         (42.9, 86.9, 52.9), (49.8, 86.5, 57.9), (57.5, 83.4, 51.4), (62.1, 75.7, 32.6)]),
    "tiny_imagenet": _sets(
        ("gaussian", "rademacher", "blobs", "textures", "svhn", "places365", "lsun", "imagenet_heldout"),
        [(72.6, 33.7, 12.3), (51.7, 62.0, 18.8), (79.4, 48.2, 14.4), (76.4, 70.4, 31.4),
         (52.3, 80.8, 42.8), (63.6, 76.9, 36.3), (67.0, 74.2, 31.2), (67.3, 72.8, 30.0)],
        [(45.4, 76.5, 28.6), (49.0, 65.1, 20.0), (0.0, 100.0, 99.9), (4.8, 98.5, 95.8),
         (0.4, 99.8, 98.2), (0.4, 99.8, 99.3), (0.4, 99.9, 99.5), (11.6, 97.9, 92.9)]),
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

# Test error (%), Appendix C (p. 14), prose: "classification error rate of 5.16%" (trained normally),
# "Fine-tuned, this network has an error rate of 5.27%", "from scratch ... the error rate is 4.26%".
TEST_ERROR: dict[str, dict[str, float]] = {"cifar10": {"baseline": 5.16, "oe_tune": 5.27, "oe_scratch": 4.26}}

# Table 12 (p. 17, Appendix G.2, "Calibration results for the temperature tuned baseline and temperature
# tuning + OE"): columns "Temperature" (our baseline) and "+OE" (our oe_tune, temperature tuned too), each
# for RMS Calib. Error, MAD Calib. Error and Soft F1 Score. Both tune T on the held-out images
# (calibration=paper). The reference's code (CIFAR/test_calibration.py:176-182) mixes each OOD set's
# len(ID test) // 5 samples with the ID test set, not "equally many" as G.2's prose says; its logs
# (CIFAR/snapshots/cifar10_calib_wrn_{baseline,oe_tune}_test.txt, "Mean Test Results") hold 19.37 and
# 9.25, which round to this table's 19.4 and 9.3. We follow the code.
CALIBRATION: dict[str, dict[str, dict[str, float]]] = {
    "svhn": {"baseline": {"rms": 22.3, "mad": 10.9, "soft_f1": 52.1},
             "oe_tune": {"rms": 4.8, "mad": 2.4, "soft_f1": 87.9}},
    "cifar10": {"baseline": {"rms": 19.4, "mad": 12.6, "soft_f1": 39.9},
                "oe_tune": {"rms": 9.3, "mad": 5.6, "soft_f1": 69.7}},
    "cifar100": {"baseline": {"rms": 14.7, "mad": 11.3, "soft_f1": 52.8},
                 "oe_tune": {"rms": 8.2, "mad": 6.5, "soft_f1": 65.8}},
    "tiny_imagenet": {"baseline": {"rms": 12.0, "mad": 9.0, "soft_f1": 62.9},
                      "oe_tune": {"rms": 6.9, "mad": 4.8, "soft_f1": 72.2}},
}


# The text experiments (Section 4.1, "Natural Language Processing"): Table 2, "Comparisons between the MSP
# baseline and the MSP of the natural language classifier fine-tuned with OE", rows 20 Newsgroups, TREC, SST,
# columns FPR90, AUROC, AUPR, each MSP (our baseline) and +OE (our oe_tune), percentages averaged over the
# OOD sets (hendrycks/outlier-exposure NLP_classification/eval_OOD_sst.py:299-306, conf/ood/nlp_paper.yaml),
# 1 decimal as printed. The keys hold the FPR at 90% recall (``fpr90``).
TEXT_SETS = ("snli", "imdb", "multi30k", "wmt16", "ewt_answers", "ewt_email", "ewt_newsgroup", "ewt_reviews",
             "ewt_weblog", "yelp")


def _text_row(fpr90: float, auroc: float, aupr: float) -> dict[str, float]:
    return {"fpr90": fpr90, "auroc": auroc, "aupr_out": aupr}


MEANS.update({
    "newsgroups20": {"baseline": _text_row(42.4, 82.7, 49.9), "oe_tune": _text_row(4.9, 97.7, 91.9)},
    "trec": {"baseline": _text_row(43.5, 82.1, 52.2), "oe_tune": _text_row(0.8, 99.3, 97.6)},
    "sst": {"baseline": _text_row(74.9, 61.6, 22.9), "oe_tune": _text_row(27.3, 89.3, 59.4)},
})
MEAN_SETS.update({data: TEXT_SETS for data in ("newsgroups20", "trec", "sst")})
MEAN_DIGITS = {"newsgroups20": 1, "trec": 1, "sst": 1}  # decimals of a printed mean (Table 7's: 2)


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
    if method in CALIBRATION.get(dataset, {}):
        out["calibration"] = CALIBRATION[dataset][method]
    return out
