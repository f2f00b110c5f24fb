"""Exact OOD-detection metrics and calibration, in float64.

Conventions (as the Outlier Exposure paper's code): scores are *larger for more OOD*; OOD is the
positive class for FPR and AUPR-Out, ID for AUPR-In; AUPR is average precision (sklearn's
definition); tied scores form one threshold, as in sklearn. Scores are never squashed through a
sigmoid, so any scale (logits, energies, probabilities, 1e4-sized values) gives the same result.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from oe_lightning.compat import metric_should_sync
from oe_lightning.evaluation_settings import (  # noqa: F401 (POSITIVES, PROTOCOLS: re-exported)
    POSITIVES,
    PROTOCOLS,
    EvaluationSettings,
    check_settings,
)

FprRule = Literal["first", "nearest"]


METRIC_NAMES = ("fpr95", "auroc", "aupr_in", "aupr_out")


def _as_1d_float64(name: str, values: Tensor | object) -> Tensor:
    t = checked_1d(name, values).to(torch.float64)
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
    check_settings(recall=recall, fpr_rule=rule)
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    if rule == "first":
        i = int(torch.searchsorted(tpr, torch.tensor([recall], dtype=torch.float64)))
        return float(fpr[min(i, tpr.numel() - 1)])
    full = int(torch.searchsorted(tps, tps[-1:]))  # "nearest": first threshold reaching full recall
    gap = (tpr[: full + 1] - recall).abs()
    i = int(torch.nonzero(gap == gap.min()).max())
    return float(fpr[i])


_CHUNK = 1 << 16  # scores per block of the per-sample passes: bounds their temporary memory


class SortedScores(NamedTuple):
    """One set's OOD scores, checked and sorted ascending once (:func:`sort_scores`; a numpy array
    in the scores' own float precision): pass it to :func:`ood_metrics` in place of a tensor to
    score many OOD sets against one ID set."""

    values: np.ndarray


def sort_scores(scores: Tensor | SortedScores | object, name: str = "scores") -> SortedScores:
    """``scores`` (one per sample) checked and sorted ascending (numpy's vectorised sort: ~15x
    torch's on CPU for float32)."""
    if isinstance(scores, SortedScores):
        return scores
    t = checked_1d(name, scores)
    ordered = np.sort(t.numpy())
    if np.isnan(ordered[-1]):  # NaN sorts last
        raise ValueError(
            f"ood_metrics got NaN among the {name} ({int(np.isnan(ordered).sum())} of {t.numel()}); the model "
            f"produced non-finite logits, check the checkpoint or the training run."
        )
    return SortedScores(ordered)


def checked_1d(name: str, values: Tensor | object) -> Tensor:
    """A 1-D CPU float tensor (float32 stays float32); an array of per-class values is refused."""
    t = torch.as_tensor(values).detach()
    if sum(d > 1 for d in t.shape) > 1:
        raise ValueError(
            f"ood_metrics got {name} of shape {tuple(t.shape)}: pass one score per sample (a 1-D array), "
            f"e.g. a detector's output, not logits or probabilities per class."
        )
    t = t.reshape(-1).cpu()
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float64 if not t.is_floating_point() else torch.float32)
    if t.numel() == 0:
        raise ValueError(f"ood_metrics got no {name}: both ID and OOD scores are needed.")
    return t


def _smallest_count(share: float, n: int) -> int:
    """The smallest k in [1, n] with k / n >= share, compared in float64 as the metrics do."""
    k = min(max(math.ceil(share * n), 1), n)
    while k > 1 and (k - 1) / n >= share:
        k -= 1
    while k < n and k / n < share:
        k += 1
    return k


def _fpr_sorted(neg: np.ndarray, pos: np.ndarray, recall: float, rule: FprRule) -> float:
    """FPR (share of ``neg`` at or above the threshold) where the TPR of ``pos`` reaches ``recall``;
    both sorted ascending, larger = positive. Only scalar searches: the thresholds' TPR levels
    are ``k / len(pos)``, found from ``recall * len(pos)`` directly (see :func:`fpr_at_recall`)."""
    n, m = neg.size, pos.size
    k = _smallest_count(recall, m)
    value = pos[m - k]  # the lowest positive at or above that level: its group is the threshold
    if rule == "first":
        return float(n - np.searchsorted(neg, value)) / n
    # "nearest": the two achievable levels around recall, the group of `value` (up) and the next
    # one (down); past the top positive, level 0 exists only if a negative scores above it
    after = int(np.searchsorted(pos, value, side="right"))
    k_up = m - int(np.searchsorted(pos, value))
    k_down = m - after if after < m else (0 if neg[-1] > value else None)
    k = k_up if k_down is None or abs(k_up / m - recall) <= abs(k_down / m - recall) else k_down
    # the lowest threshold of level k: just above the top-(k+1) positive, or the lowest positive
    fps = n - (np.searchsorted(neg, pos[m - k - 1], side="right") if k < m else np.searchsorted(neg, pos[0]))
    return float(fps) / n


def _group_bounds(x: np.ndarray, lo: int, hi: int, last: bool) -> np.ndarray:
    """For ``x[lo:hi]`` (``x`` sorted): each element's tie group's first index in ``x``, or with
    ``last`` the index after its group's end, by one accumulate over the block."""
    chunk = x[lo:hi]
    if last:
        bound = np.arange(lo + 1, hi + 1)
        bound[:-1][chunk[1:] == chunk[:-1]] = x.size + 1
        bound[-1] = np.searchsorted(x, chunk[-1], side="right")
        return np.minimum.accumulate(bound[::-1])[::-1]
    bound = np.arange(lo, hi)
    bound[1:][chunk[1:] == chunk[:-1]] = -1
    bound[0] = np.searchsorted(x, chunk[0])
    return np.maximum.accumulate(bound)


def _ranking_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """AUROC, AUPR-In and AUPR-Out of ID scores ``a`` against OOD scores ``b`` (sorted ascending)
    from one binary search of each OOD score among the ID scores, in blocks of integer counts.

    With ``below_j = #(a < b_j)``: AUROC = (sum_j below_j + ID-OOD ties / 2) / (n m) (the trapezoid
    through tied thresholds). Average precision sums, per positive, the precision at its own score:
    OOD sample j has ``#(b >= b_j)`` true and ``n - below_j`` false positives; ID sample i (scores
    negated) has ``#(a <= a_i)`` true and ``#(b <= a_i) = #(below_j <= i)`` false positives, a
    cumulative count of ``below``."""
    n, m = a.size, b.size
    by_rank = np.zeros(n + 1, np.int32 if m < 2**31 else np.int64)  # OOD scores per #ID below them
    rank_sum = ties = 0
    ap_out = ap_in = 0.0
    for lo in range(0, m, _CHUNK):
        chunk = b[lo:lo + _CHUNK]
        below = np.searchsorted(a, chunk)
        first, last = int(below[0]), int(below[-1])  # `below` never decreases: count within its range
        by_rank[first:last + 1] += np.bincount(below - first, minlength=last - first + 1).astype(by_rank.dtype)
        rank_sum += int(below.sum())
        tied = a[np.minimum(below, n - 1)] == chunk  # an ID score equals b_j (rare for float scores)
        if tied.any():
            ties += int((np.searchsorted(a, chunk[tied], side="right") - below[tied]).sum())
        tps = m - _group_bounds(b, lo, lo + chunk.size, last=False)
        ap_out += float((tps / (tps + (n - below))).sum())
    fps_in = np.cumsum(by_rank, out=by_rank)
    for lo in range(0, n, _CHUNK):
        tps = _group_bounds(a, lo, min(lo + _CHUNK, n), last=True)
        ap_in += float((tps / (tps + fps_in[lo:lo + tps.size])).sum())
    return (rank_sum + ties / 2) / (n * m), ap_in / n, ap_out / m


def ood_metrics(scores_in: Tensor | SortedScores, scores_out: Tensor | SortedScores, recall: float = 0.95,
                fpr_rule: FprRule = "first", positive: str = "out") -> dict[str, float]:
    """FPR at ``recall`` TPR, AUROC, AUPR-In and AUPR-Out (fractions) for one OOD set.

    Exact: one sort per set (pass :class:`SortedScores` to sort an ID set once for many OOD sets),
    then binary searches with integer counts; equal to the threshold-curve computation
    (:func:`binary_clf_curve`) to float rounding.

    Args:
        scores_in: OOD scores of in-distribution samples (larger = more OOD), one per sample.
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
    check_settings(recall=recall, fpr_rule=fpr_rule, positive=positive)
    a, b = sort_scores(scores_in, "ID scores").values, sort_scores(scores_out, "OOD scores").values
    if a.dtype != b.dtype:
        dtype = np.promote_types(a.dtype, b.dtype)
        a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    fpr = _fpr_sorted(a, b, recall, fpr_rule) if positive == "out" else \
        _fpr_sorted(-b[::-1], -a[::-1], recall, fpr_rule)
    area, aupr_in, aupr_out = _ranking_sorted(a, b)
    return {f"fpr{round(recall * 100)}": fpr, "auroc": area, "aupr_in": aupr_in, "aupr_out": aupr_out}


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


# the reference text evaluation's batch: `batch_idx * 64 > ood_num_examples` (eval_OOD_sst.py:273)
PAPER_TEXT_BATCH = 64


def paper_text_subset_size(num_in: int) -> int:
    """OOD samples per subset in the reference's text evaluation: ``ood_num_examples = len(ID test) // 5``
    (eval_OOD_sst.py:74), read in batches of 64 until ``batch_idx * 64 > ood_num_examples`` (:273-274), so whole
    batches up to the first past it: 384 for SST's 1,821 test sentences, 128 for TREC's 500."""
    return (num_in // 5 // PAPER_TEXT_BATCH + 1) * PAPER_TEXT_BATCH


def subsampled_ood_metrics(scores_in: Tensor | SortedScores, scores_out: Tensor | SortedScores, num_out: int,
                           repeats: int = 10, seed: int = 0, recall: float = 0.95,
                           fpr_rule: FprRule = "first", positive: str = "out") -> dict[str, float]:
    """The paper's protocol: ``repeats`` random subsets of ``num_out`` OOD scores, each against
    all ID scores; returns the mean of every metric and its standard deviation (``<name>_std``).
    The subsets are drawn (a seeded ``randperm``) from the OOD scores in ascending order; both sets
    are sorted once, and a subset taken in index order stays sorted."""
    s_in, s_out = sort_scores(scores_in, "ID scores"), sort_scores(scores_out, "OOD scores").values
    g = torch.Generator().manual_seed(seed)
    runs = []
    for _ in range(repeats):
        chosen = np.sort(torch.randperm(s_out.size, generator=g)[:num_out].numpy())
        runs.append(ood_metrics(s_in, SortedScores(s_out[chosen]), recall, fpr_rule, positive))
    out: dict[str, float] = {}
    for key in runs[0]:
        values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(unbiased=False)) if repeats > 1 else 0.0
    return out


def operating_threshold(val_in_scores: Tensor | SortedScores, keep: float = 0.95) -> float:
    """The OOD-score threshold that keeps ``keep`` of the ID *validation* scores: the smallest
    validation score ``t`` with ``#(score <= t) >= keep * n``. A deployed model calls an input ID
    when its score is <= t and OOD above it. Chosen on validation data only, never a test set."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"the ID share to keep must be in (0, 1], got {keep}.")
    s = sort_scores(val_in_scores, "ID validation scores").values
    return float(s[_smallest_count(keep, s.size) - 1])


def accepted_share(scores: Tensor, threshold: float) -> float:
    """The share of ``scores`` at or below ``threshold``: accepted as in-distribution."""
    t = checked_1d("scores", scores)
    return float((t <= threshold).double().mean())


def protocol_metrics(scores_in: Tensor | SortedScores, scores_out: Tensor | SortedScores, protocol: str = "full",
                     num_to_avg: int = 10,
                     seed: int = 0, recall: float = 0.95, fpr_rule: FprRule = "first",
                     positive: str = "out") -> dict[str, float]:
    """:func:`ood_metrics` on every OOD score (``protocol="full"``), or the paper's protocol: the mean
    and std over ``num_to_avg`` subsets of len(ID) // 5 OOD scores (:func:`subsampled_ood_metrics`),
    drawn from the sorted scores, so the draw does not depend on the order ranks gathered them in."""
    check_settings(protocol=protocol, num_to_avg=num_to_avg)
    if protocol in ("paper", "paper_text"):
        s_in = sort_scores(scores_in, "ID scores")
        s_out = sort_scores(scores_out, "OOD scores")
        size = paper_subset_size if protocol == "paper" else paper_text_subset_size
        num_out = min(size(s_in.values.size), s_out.values.size)
        return subsampled_ood_metrics(s_in, s_out, num_out, num_to_avg, seed, recall, fpr_rule, positive)
    return ood_metrics(scores_in, scores_out, recall, fpr_rule, positive)


def validation_ood_metrics(scores_in: Tensor | SortedScores, scores_out: Tensor | SortedScores,
                           settings: EvaluationSettings) -> dict[str, float]:
    """The validation OOD metrics, every sample once: the FPR at ``settings.recall`` (its rule and
    positive class) and the AUROC. oe-train's ``val/fpr95`` and each detector's ``val`` in results.json."""
    values = ood_metrics(scores_in, scores_out, settings.recall, settings.fpr_rule, settings.positive)
    return {settings.fpr_name: values[settings.fpr_name], "auroc": values["auroc"]}


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
        check_settings(recall=recall, fpr_rule=fpr_rule, protocol=protocol, num_to_avg=num_to_avg, positive=positive)
        self.recall, self.fpr_rule, self.positive = recall, fpr_rule, positive
        self.protocol, self.num_to_avg, self.seed = protocol, num_to_avg, seed
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("is_ood", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, is_ood: Tensor | bool) -> None:
        """Add a batch of scores (one per sample) and whether each is OOD (a bool or one per sample)."""
        if sum(d > 1 for d in scores.shape) > 1:
            raise ValueError(f"OODMetrics.update got scores of shape {tuple(scores.shape)}: pass one score "
                             f"per sample, not logits or probabilities per class.")
        scores = scores.detach().reshape(-1)
        is_ood = torch.as_tensor(is_ood, device=scores.device).reshape(-1)
        if is_ood.dtype != torch.bool and bool(((is_ood != 0) & (is_ood != 1)).any()):
            raise ValueError(f"OODMetrics.update got is_ood values other than 0/1 (e.g. "
                             f"{is_ood[(is_ood != 0) & (is_ood != 1)][0].item()}): pass booleans, True for OOD.")
        self.scores.append(scores)
        self.is_ood.append(is_ood.to(torch.bool).expand_as(scores))

    def compute(self) -> dict[str, float]:
        """The metrics of every score held (gathered across ranks), as :func:`protocol_metrics`."""
        s_in, s_out = self._split()
        return protocol_metrics(s_in, s_out, self.protocol, self.num_to_avg, self.seed, self.recall,
                                self.fpr_rule, self.positive)

    def _split(self) -> tuple[Tensor, Tensor]:
        """The ID and the OOD scores held so far."""
        scores, is_ood = dim_zero_cat(self.scores), dim_zero_cat(self.is_ood).to(torch.bool)
        return scores[~is_ood], scores[is_ood]

    def gathered(self) -> tuple[Tensor, Tensor]:
        """The ID and the OOD scores of every rank (call it on every rank under DDP)."""
        with self.sync_context(should_sync=metric_should_sync(self), dist_sync_fn=self.dist_sync_fn):
            return self._split()

    def counts(self) -> tuple[int, int]:
        """How many ID and OOD scores were gathered (across ranks; call it on every rank)."""
        s_in, s_out = self.gathered()
        return int(s_in.numel()), int(s_out.numel())

    def curves(self, max_points: int = 201, bins: int = 50) -> dict[str, dict[str, list[float]]]:
        """Downsampled ROC curve and score histograms over all samples (gathered across ranks).

        Like ``compute``, call it on every rank under DDP (it synchronises the states).
        """
        with self.sync_context(should_sync=metric_should_sync(self), dist_sync_fn=self.dist_sync_fn):
            s_in, s_out = self._split()
            return {"roc": roc_curve(s_in, s_out, max_points),
                    "histogram": score_histograms(s_in, s_out, bins)}
