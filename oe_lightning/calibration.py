"""Calibration as the paper measures it (App. G.1, Table 12): RMS and MAD calibration error over adaptive
bins, soft F1 of the mistakes, the temperature tuned on held-out data, ID mixed with OOD samples counted as
wrong; and the 15-bin ECE. In float64."""

from __future__ import annotations

import torch
from torch import Tensor

from oe_lightning.metrics import checked_1d


def expected_calibration_error(confidence: Tensor, correct: Tensor, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width confidence bins (Guo et al., 2017): sum over bins of
    (bin share) * |accuracy - mean confidence|; a bin is (lo, hi], the first [0, hi]."""
    conf = checked_1d("confidences", confidence).double()
    hit = checked_1d("correctness", correct).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(conf, edges[1:-1], right=False)  # (lo, hi] bins
    total = conf.numel()
    error = 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        if count:
            error += count / total * abs(float(hit[mask].mean() - conf[mask].mean()))
    return error


CALIBRATION_RULE = ("bins of 100 samples sorted by confidence, the last (highest-confidence) bin left out "
                    "as hendrycks/outlier-exposure utils/calibration_tools.py:14")


def calibration_error(confidence: Tensor, correct: Tensor, bin_size: int = 100, norm: str = "rms",
                      drop_last_bin: bool = True) -> float:
    """Calibration error with adaptive bins of ``bin_size`` samples (Hendrycks et al.'s ``calib_err``).

    Samples are sorted by confidence and cut into consecutive bins of ``bin_size``; the last bin
    takes the remainder. Each bin adds ``|mean confidence - accuracy|`` (``norm="mad"``) or its
    square (``"rms"``, then the root), weighted by its share of *all* samples. With
    ``drop_last_bin`` (the default) the last bin is left out of the sum, as the reference loop
    ``for i in range(len(bins) - 1)`` does (utils/calibration_tools.py:14); the paper's numbers
    are computed that way. With fewer than two bins' worth of samples nothing is counted and the
    error is undefined: ``nan`` (reported as n/a), never a perfect 0.
    """
    if norm not in ("rms", "mad"):
        raise ValueError(f"norm must be 'rms' or 'mad', got {norm!r}.")
    conf = torch.as_tensor(confidence, dtype=torch.float64).reshape(-1).cpu()
    corr = torch.as_tensor(correct, dtype=torch.float64).reshape(-1).cpu()
    if conf.numel() == 0:
        raise ValueError("calibration_error got no samples.")
    if conf.numel() != corr.numel():
        raise ValueError(f"calibration_error got {conf.numel()} confidences but {corr.numel()} "
                         f"correctness values; pass one of each per sample.")
    order = torch.argsort(conf, stable=True)
    conf, corr = conf[order], corr[order]
    n_bins = max(conf.numel() // bin_size, 1)
    bounds = [i * bin_size for i in range(n_bins)] + [conf.numel()]
    pairs = list(zip(bounds[:-1], bounds[1:], strict=True))
    if drop_last_bin and len(pairs) < 2:
        return float("nan")
    total = 0.0
    for lo, hi in pairs[:-1] if drop_last_bin else pairs:
        gap = abs(float(conf[lo:hi].mean() - corr[lo:hi].mean()))
        total += (hi - lo) / conf.numel() * (gap ** 2 if norm == "rms" else gap)
    return total ** 0.5 if norm == "rms" else total


def soft_f1(confidence: Tensor, correct: Tensor) -> float:
    """Soft F1 of the mistakes (positive) against the confidence that a sample is a mistake, 1 - c:
    ``c_a·m / (1·(c_a + m) / 2)`` (paper App. G.1; utils/calibration_tools.py:38-47). Higher is better."""
    conf = torch.as_tensor(confidence, dtype=torch.float64).reshape(-1).cpu()
    wrong = 1.0 - torch.as_tensor(correct, dtype=torch.float64).reshape(-1).cpu()
    return float(2 * ((1 - conf) * wrong).sum() / (1 - conf + wrong).sum())


def rms_calibration_error(confidence: Tensor, correct: Tensor, bin_size: int = 100,
                          drop_last_bin: bool = True) -> float:
    """Root-mean-square calibration error, see :func:`calibration_error`."""
    return calibration_error(confidence, correct, bin_size, "rms", drop_last_bin)


def tune_temperature(logits: Tensor, labels: Tensor, lower: float = 0.2, upper: float = 5.0,
                     tol: float = 1e-4) -> float:
    """The softmax temperature in ``[lower, upper]`` that minimises the cross-entropy of ``logits / T``.

    Bisection on the sign of d CE / d T (analytic, so it runs under inference mode), then the
    best of the last bracket's ends and middle, as the paper's ``tune_temp``
    (utils/calibration_tools.py:50-68, its defaults 0.2, 5.0, 1e-4).
    The CE is convex in 1/T, so the derivative changes sign at most once.
    """
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).detach().to("cpu", torch.long).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.numel() or z.shape[0] == 0:
        raise ValueError(f"tune_temperature needs logits (N, classes) and N labels, got "
                         f"{tuple(z.shape)} and {y.numel()}.")

    def nll(t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / t, y))

    picked = z.gather(1, y[:, None]).squeeze(1)
    while upper - lower > tol:
        mid = 0.5 * (lower + upper)
        # d CE(z / T) / dT = mean(z_y - E_softmax(z/T)[z]) / T^2: only its sign matters
        expected = (torch.softmax(z / mid, dim=1) * z).sum(dim=1)
        if float((picked - expected).mean()) > 0:
            upper = mid
        else:
            lower = mid
    return min((lower, 0.5 * (lower + upper), upper), key=nll)


def ood_calibration(conf_in: Tensor, correct_in: Tensor, conf_out: Tensor, num_out: int,
                    repeats: int = 1, seed: int = 0, bin_size: int = 100) -> dict[str, float]:
    """Calibration on ID test data mixed with ``num_out`` OOD samples counted as wrong predictions.

    The paper's setting (hendrycks/outlier-exposure CIFAR/test_calibration.py:176-182): a
    classifier facing OOD inputs should be unconfident on them. ``repeats`` random OOD subsets
    (drawn from the sorted confidences, so the draw does not depend on gathering order) are each
    mixed with all ID samples; returns the mean ``rms``, ``mad`` and ``soft_f1`` over them.
    """
    c_out = torch.as_tensor(conf_out, dtype=torch.float64).reshape(-1).cpu().sort().values
    c_in = torch.as_tensor(conf_in, dtype=torch.float64).reshape(-1).cpu()
    ok_in = torch.as_tensor(correct_in, dtype=torch.float64).reshape(-1).cpu()
    g = torch.Generator().manual_seed(seed)
    num_out = min(num_out, c_out.numel())
    runs = []
    for _ in range(repeats):
        picked = c_out[torch.randperm(c_out.numel(), generator=g)[:num_out]]
        conf, corr = torch.cat([picked, c_in]), torch.cat([torch.zeros_like(picked), ok_in])
        runs.append(calibration_summary(conf, corr, bin_size))
    return {k: sum(r[k] for r in runs) / repeats for k in runs[0]}


def calibration_summary(confidence: Tensor, correct: Tensor, bin_size: int = 100) -> dict[str, float]:
    """``{"rms", "mad", "soft_f1"}``: the paper's three calibration measures (App. G.1, Table 12)."""
    return {"rms": calibration_error(confidence, correct, bin_size, "rms"),
            "mad": calibration_error(confidence, correct, bin_size, "mad"),
            "soft_f1": soft_f1(confidence, correct)}
