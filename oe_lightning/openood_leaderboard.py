"""OpenOOD v1.5's published leaderboard numbers (Zhang et al., 2023), as data.

Jingkang50/OpenOOD, branch ``leaderboard`` (f969dfa3), ``results/<benchmark>.csv``: columns Training,
Postprocessor, Near-OOD_AUROC, Far-OOD_AUROC, ID_Accuracy (line 1), each "mean ± std" over 3 runs, in %;
ResNet-18 (32×32 for CIFAR, 100 epochs; 224×224 for ImageNet-200, 90 epochs), scored by MSP. The leaderboard
publishes no FPR@95 or AUPR. The near and far AUROC is the unweighted mean over each group's sets
(openood/evaluation_api/evaluator.py:366-367).
"""

from __future__ import annotations

# method -> (near AUROC, far AUROC, ID accuracy), means as printed (the ± std is in the comment)
LEADERBOARD: dict[str, dict[str, tuple[float, float, float]]] = {
    "cifar10": {
        "baseline": (88.03, 90.73, 95.06),  # cifar10.csv:3  CE + MSP: ±0.25, ±0.43, ±0.30
        "oe": (94.82, 96.00, 94.63),        # cifar10.csv:35 OE + MSP: ±0.21, ±0.13, ±0.26
        "mixoe": (88.73, 91.93, 94.55),     # cifar10.csv:38 MixOE + MSP: ±0.82, ±0.69, ±0.32
    },
    "cifar100": {
        "baseline": (80.27, 77.76, 77.25),  # cifar100.csv:3  CE + MSP: ±0.11, ±0.44, ±0.10
        "oe": (88.30, 81.41, 76.84),        # cifar100.csv:33 OE + MSP: ±0.10, ±1.49, ±0.42
        "mixoe": (80.95, 76.40, 75.13),     # cifar100.csv:36 MixOE + MSP: ±0.20, ±1.44, ±0.06
    },
    "imagenet200": {                        # imagenet200_ood.csv, ResNet-18 (224x224), 90 epochs
        "baseline": (83.34, 90.13, 86.37),  # imagenet200_ood.csv:3  CE + MSP: ±0.06, ±0.09, ±0.08
        "oe": (84.84, 89.02, 85.82),        # imagenet200_ood.csv:32 OE + MSP: ±0.16, ±0.18, ±0.21
        "mixoe": (82.62, 88.27, 85.71),     # imagenet200_ood.csv:35 MixOE + MSP: ±0.03, ±0.41, ±0.07
    },
}

# the ood= suite whose groups the leaderboard's columns are over, per benchmark
SUITES = {"cifar10": "openood_v15/cifar10", "cifar100": "openood_v15/cifar100",
          "imagenet200": "openood_v15/imagenet200"}

# our loss class -> the leaderboard's training method (OE: cross-entropy to uniform, oe_trainer.py:56-59)
METHODS = {"UniformCrossEntropy": "oe", "MixOE": "mixoe"}


def leaderboard_row(benchmark: str, method: str) -> dict[str, float] | None:
    """``{"near_auroc", "far_auroc", "id_accuracy"}`` in %, or None if the leaderboard has no such row."""
    row = LEADERBOARD.get(benchmark, {}).get(method)
    return None if row is None else dict(zip(("near_auroc", "far_auroc", "id_accuracy"), row, strict=True))
