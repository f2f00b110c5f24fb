"""Exact OOD-detection metrics and calibration, in float64.

Conventions (as the Outlier Exposure paper's code): scores are *larger for more OOD*; OOD is the
positive class for FPR and AUPR-Out, ID for AUPR-In; AUPR is average precision (sklearn's
definition); tied scores form one threshold, as in sklearn. Scores are never squashed through a
sigmoid, so any scale (logits, energies, probabilities, 1e4-sized values) gives the same result.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

FprRule = Literal["first", "nearest"]
METRIC_NAMES = ("fpr95", "auroc", "aupr_in", "aupr_out")
PROTOCOLS = ("full", "paper")


def _as_1d_float64(name: str, values: Tensor | object) -> Tensor:
    t = torch.as_tensor(values).detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    if t.numel() == 0:
        raise ValueError(f"ood_metrics got no {name}: both ID and OOD scores are needed.")
    if torch.isnan(t).any():
        raise ValueError(
            f"ood_metrics got NaN among the {name} ({int(torch.isnan(t).sum())} of {t.numel()}); "
            f"the model produced non-finite logits, check the checkpoint or the training run."
        )
    return t


def _labelled(scores_in: Tensor, scores_out: Tensor) -> tuple[Tensor, Tensor]:
    """All scores (float64, checked) and an ``is_ood`` mask: OOD is the positive class."""
    s_in, s_out = _as_1d_float64("ID scores", scores_in), _as_1d_float64("OOD scores", scores_out)
    is_ood = torch.cat([torch.zeros_like(s_in, dtype=torch.bool), torch.ones_like(s_out, dtype=torch.bool)])
    return torch.cat([s_in, s_out]), is_ood


def binary_clf_curve(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """False and true positive counts at each distinct threshold, highest threshold first.

    Returns ``(fps, tps, thresholds)`` where entry i counts the samples with score >= thresholds[i].
    """
    order = torch.argsort(scores, descending=True, stable=True)
    scores, positive = scores[order], positive[order].to(torch.float64)
    last_of_run = torch.nonzero(scores[1:] != scores[:-1]).reshape(-1)
    idx = torch.cat([last_of_run, torch.tensor([scores.numel() - 1])])
    tps = torch.cumsum(positive, 0)[idx]
    fps = (idx + 1).to(torch.float64) - tps
    return fps, tps, scores[idx]


def auroc(fps: Tensor, tps: Tensor) -> float:
    """Area under the ROC curve (trapezoidal, through (0, 0)) from a :func:`binary_clf_curve`."""
    fpr = torch.cat([fps.new_zeros(1), fps / fps[-1]])
    tpr = torch.cat([tps.new_zeros(1), tps / tps[-1]])
    return float(torch.trapezoid(tpr, fpr))


def average_precision(fps: Tensor, tps: Tensor) -> float:
    """Average precision, sum_i (R_i - R_{i-1}) P_i, as sklearn's ``average_precision_score``."""
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    d_recall = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((d_recall * precision).sum())


def fpr_at_recall(fps: Tensor, tps: Tensor, recall: float = 0.95, rule: FprRule = "first") -> float:
    """False positive rate at the threshold where the true positive rate reaches ``recall``.

    ``rule="first"``: the first (highest) threshold with TPR >= recall (OpenOOD, pytorch-ood).
    ``rule="nearest"``: the threshold whose TPR is nearest to ``recall`` among those up to full
    recall, ties going to the lower threshold, exactly as ``fpr_and_fdr_at_recall`` in the
    paper's code.
    """
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    if rule == "first":
        i = int(torch.searchsorted(tpr, torch.tensor([recall], dtype=torch.float64)))
        return float(fpr[min(i, tpr.numel() - 1)])
    if rule == "nearest":
        full = int(torch.searchsorted(tps, tps[-1:]))  # first threshold reaching full recall
        gap = (tpr[: full + 1] - recall).abs()
        i = int(torch.nonzero(gap == gap.min()).max())
        return float(fpr[i])
    raise ValueError(f"fpr_rule must be 'first' or 'nearest', got {rule!r}.")


POSITIVES = ("out", "in")


def ood_metrics(scores_in: Tensor, scores_out: Tensor, recall: float = 0.95,
                fpr_rule: FprRule = "first", positive: str = "out") -> dict[str, float]:
    """FPR at ``recall`` TPR, AUROC, AUPR-In and AUPR-Out (fractions) for one OOD set.

    Args:
        scores_in: OOD scores of in-distribution samples (larger = more OOD).
        scores_out: OOD scores of out-of-distribution samples.
        recall: the TPR at which the FPR is read, 0.95 by default.
        fpr_rule: ``"first"`` or ``"nearest"``, see :func:`fpr_at_recall`.
        positive: the positive class of the FPR. ``"out"`` (the OE paper, hendrycks/outlier-exposure
            CIFAR/test.py:174 ``get_measures(out_score, in_score)``): the share of ID samples flagged
            when ``recall`` of the OOD samples are caught. ``"in"`` (the energy paper, wetliu/energy_ood
            CIFAR/test.py:218-221 ``get_measures(-in_score, -out_score)``): the share of OOD samples
            accepted when ``recall`` of the ID samples are kept. AUROC and both AUPRs are the same either way.

    Returns:
        ``{"fpr95": ..., "auroc": ..., "aupr_in": ..., "aupr_out": ...}``; the first key is
        named after ``recall`` (``fpr90`` for 0.9).
    """
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}.")
    if positive not in POSITIVES:
        raise ValueError(f"positive must be 'out' (OOD, the OE paper) or 'in' (ID, the energy paper), "
                         f"got {positive!r}.")
    scores, is_ood = _labelled(scores_in, scores_out)
    fps, tps, _ = binary_clf_curve(scores, is_ood)
    fps_in, tps_in, _ = binary_clf_curve(-scores, ~is_ood)
    fpr = fpr_at_recall(fps, tps, recall, fpr_rule) if positive == "out" else \
        fpr_at_recall(fps_in, tps_in, recall, fpr_rule)
    return {
        f"fpr{round(recall * 100)}": fpr,
        "auroc": auroc(fps, tps),
        "aupr_in": average_precision(fps_in, tps_in),
        "aupr_out": average_precision(fps, tps),
    }


def roc_curve(scores_in: Tensor, scores_out: Tensor, max_points: int = 201) -> dict[str, list[float]]:
    """The ROC curve (OOD positive) as at most ``max_points`` ``(fpr, tpr)`` points, for plots.

    The exact curve is reduced by keeping, for each of ``max_points - 1`` evenly spaced FPR
    levels, the last point at or below it, plus both end points: the plotted curve stays on the
    exact staircase. Returns ``{"fpr": [...], "tpr": [...]}`` starting at (0, 0).
    """
    fps, tps, _ = binary_clf_curve(*_labelled(scores_in, scores_out))
    fpr = torch.cat([fps.new_zeros(1), fps / fps[-1]])
    tpr = torch.cat([tps.new_zeros(1), tps / tps[-1]])
    if fpr.numel() > max_points:
        levels = torch.linspace(0, 1, max_points - 1, dtype=torch.float64)
        keep = torch.searchsorted(fpr, levels, right=True) - 1
        keep = torch.unique(torch.cat([torch.tensor([0, fpr.numel() - 1]), keep.clamp(min=0)]))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def score_histograms(scores_in: Tensor, scores_out: Tensor, bins: int = 50) -> dict[str, list[float]]:
    """Histograms of ID and OOD scores over shared bin edges (counts, not raw scores)."""
    s_in, s_out = _as_1d_float64("ID scores", scores_in), _as_1d_float64("OOD scores", scores_out)
    both = torch.cat([s_in, s_out])
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return {"edges": edges.tolist(),
            "in": torch.histc(s_in, bins, lo, hi).tolist(),
            "out": torch.histc(s_out, bins, lo, hi).tolist()}


PAPER_TEST_BATCH = 200  # the reference's --test_bs (CIFAR/test.py:30)


def paper_subset_size(num_in: int) -> int:
    """OOD samples per subset in the paper's protocol: ``len(ID test) // 5`` (CIFAR/test.py:104,
    SVHN/test.py:95), read in whole batches of 200 up to ``ood_num_examples // test_bs`` of them
    (CIFAR/test.py:118, SVHN/test.py:109): 2,000 for CIFAR and Tiny ImageNet, 5,200 for SVHN's
    26,032 (not 5,206). Sets under 200 keep ``len // 5`` (at least 1)."""
    per_run = num_in // 5
    if per_run >= PAPER_TEST_BATCH:
        per_run = per_run // PAPER_TEST_BATCH * PAPER_TEST_BATCH
    return max(per_run, 1)


def subsampled_ood_metrics(scores_in: Tensor, scores_out: Tensor, num_out: int, repeats: int = 10,
                           seed: int = 0, recall: float = 0.95,
                           fpr_rule: FprRule = "first", positive: str = "out") -> dict[str, float]:
    """The paper's protocol: ``repeats`` random subsets of ``num_out`` OOD scores, each against
    all ID scores; returns the mean of every metric and its standard deviation (``<name>_std``).
    """
    s_out = _as_1d_float64("OOD scores", scores_out)
    g = torch.Generator().manual_seed(seed)
    runs = [ood_metrics(scores_in, s_out[torch.randperm(s_out.numel(), generator=g)[:num_out]],
                        recall, fpr_rule, positive) for _ in range(repeats)]
    out: dict[str, float] = {}
    for key in runs[0]:
        values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(unbiased=False)) if repeats > 1 else 0.0
    return out


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
    are computed that way.
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


def protocol_metrics(scores_in: Tensor, scores_out: Tensor, protocol: str = "full", num_to_avg: int = 10,
                     seed: int = 0, recall: float = 0.95, fpr_rule: FprRule = "first",
                     positive: str = "out") -> dict[str, float]:
    """:func:`ood_metrics` on every OOD score (``protocol="full"``), or the paper's protocol: the mean
    and std over ``num_to_avg`` subsets of len(ID) // 5 OOD scores (:func:`subsampled_ood_metrics`),
    drawn from the sorted scores, so the draw does not depend on the order ranks gathered them in."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    if protocol == "paper":
        s_in = _as_1d_float64("ID scores", scores_in)
        s_out = _as_1d_float64("OOD scores", scores_out).sort().values
        num_out = min(paper_subset_size(s_in.numel()), s_out.numel())
        return subsampled_ood_metrics(s_in, s_out, num_out, num_to_avg, seed, recall, fpr_rule, positive)
    return ood_metrics(scores_in, scores_out, recall, fpr_rule, positive)


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


class OODMetrics(Metric):
    """torchmetrics wrapper of :func:`ood_metrics`: ``update(scores, is_ood)``, then ``compute()``.

    Scores are kept (one float per sample) and concatenated across processes before the exact
    computation; ``compute`` returns the same dict as :func:`ood_metrics`. With
    ``protocol="paper"`` it instead averages ``num_to_avg`` random subsets of len(ID) // 5 OOD
    samples (:func:`subsampled_ood_metrics`), as the paper's evaluation code.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, recall: float = 0.95, fpr_rule: FprRule = "first", protocol: str = "full",
                 num_to_avg: int = 10, seed: int = 0, positive: str = "out", **kwargs):
        super().__init__(**kwargs)
        if fpr_rule not in ("first", "nearest"):
            raise ValueError(f"fpr_rule must be 'first' or 'nearest', got {fpr_rule!r}.")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
        if positive not in POSITIVES:
            raise ValueError(f"positive must be one of {POSITIVES}, got {positive!r}.")
        self.recall, self.fpr_rule, self.positive = recall, fpr_rule, positive
        self.protocol, self.num_to_avg, self.seed = protocol, num_to_avg, seed
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("is_ood", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, is_ood: Tensor | bool) -> None:
        scores = scores.detach().reshape(-1)
        is_ood = torch.as_tensor(is_ood, device=scores.device).reshape(-1)
        self.scores.append(scores)
        self.is_ood.append(is_ood.to(torch.bool).expand_as(scores))

    def compute(self) -> dict[str, float]:
        s_in, s_out = self._split()
        return protocol_metrics(s_in, s_out, self.protocol, self.num_to_avg, self.seed, self.recall,
                                self.fpr_rule, self.positive)

    def _split(self) -> tuple[Tensor, Tensor]:
        """The ID and the OOD scores held so far."""
        scores, is_ood = dim_zero_cat(self.scores), dim_zero_cat(self.is_ood).to(torch.bool)
        return scores[~is_ood], scores[is_ood]

    def counts(self) -> tuple[int, int]:
        """How many ID and OOD scores were gathered (across ranks; call it on every rank)."""
        with self.sync_context(should_sync=self._to_sync, dist_sync_fn=self.dist_sync_fn):
            s_in, s_out = self._split()
            return int(s_in.numel()), int(s_out.numel())

    def curves(self, max_points: int = 201, bins: int = 50) -> dict[str, dict[str, list[float]]]:
        """Downsampled ROC curve and score histograms over all samples (gathered across ranks).

        Like ``compute``, call it on every rank under DDP (it synchronises the states).
        """
        with self.sync_context(should_sync=self._to_sync, dist_sync_fn=self.dist_sync_fn):
            s_in, s_out = self._split()
            return {"roc": roc_curve(s_in, s_out, max_points),
                    "histogram": score_histograms(s_in, s_out, bins)}
