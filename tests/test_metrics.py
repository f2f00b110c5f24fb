import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from oe_lightning.calibration import calibration_error, ood_calibration, rms_calibration_error, tune_temperature
from oe_lightning.metrics import (
    OODMetrics,
    SortedScores,
    average_precision,
    binary_clf_curve,
    fpr_at_recall,
    ood_metrics,
    sort_scores,
)


def _tied_scores(rng, scale):
    """Integer-valued scores (many ties) scaled up to ``scale``; OOD shifted upwards."""
    s_in = rng.integers(0, 30, rng.integers(50, 400)).astype(np.float64)
    s_out = rng.integers(8, 40, rng.integers(50, 400)).astype(np.float64)
    return s_in * scale, s_out * scale


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_auroc_and_aupr_match_sklearn_with_ties_at_any_scale(scale):
    rng = np.random.default_rng(int(scale * 1000) % 97)
    for _ in range(25):
        s_in, s_out = _tied_scores(rng, scale)
        y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
        s = np.r_[s_in, s_out]
        m = ood_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out))
        assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
        assert m["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
        assert m["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-6)


def test_continuous_scores_of_large_magnitude_match_sklearn():
    rng = np.random.default_rng(1)
    s_in, s_out = rng.normal(0, 1e4, 1000), rng.normal(5e3, 1e4, 700)
    y, s = np.r_[np.zeros(1000), np.ones(700)], np.r_[s_in, s_out]
    m = ood_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-6)


def _pytorch_ood_metrics():
    try:
        from pytorch_ood.metrics import OODMetrics as Oracle
    except ImportError:  # pytorch-ood < 0.3
        from pytorch_ood.utils import OODMetrics as Oracle
    return Oracle()


def test_fpr95_and_auroc_match_pytorch_ood():
    pytest.importorskip("pytorch_ood")
    rng = np.random.default_rng(2)
    for trial in range(20):
        s_in, s_out = _tied_scores(rng, 10.0 ** (trial % 5 - 1))
        oracle = _pytorch_ood_metrics()
        scores = torch.from_numpy(np.r_[s_in, s_out])
        labels = torch.cat([torch.zeros(len(s_in), dtype=torch.long),
                            -torch.ones(len(s_out), dtype=torch.long)])  # < 0 marks OOD
        oracle.update(scores, labels)
        expected = oracle.compute()
        m = ood_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out), fpr_rule="first")
        assert m["fpr95"] == pytest.approx(float(expected["FPR95TPR"]), abs=1e-9)
        assert m["auroc"] == pytest.approx(float(expected["AUROC"]), abs=1e-9)


def test_fpr_rules_on_a_hand_made_example():
    # 20 OOD scores 1..20, ID scores 0.5, 2.5, 4.5, ... : at TPR 19/20 = 0.95 exactly the
    # threshold is 2 (OOD 2..20 detected), ID above 2: 2.5..., count them by hand.
    s_out = torch.arange(1, 21, dtype=torch.float64)
    s_in = torch.tensor([0.5, 2.5, 4.5, 6.5, 30.0])
    first = ood_metrics(s_in, s_out, fpr_rule="first")["fpr95"]
    assert first == pytest.approx(4 / 5)  # 2.5, 4.5, 6.5, 30 score >= 2
    # TPR never hits 0.9 exactly between 17/20 and 18/20? It does: 18/20 = 0.9 at threshold 3
    assert ood_metrics(s_in, s_out, recall=0.9)["fpr90"] == pytest.approx(3 / 5)


def test_nearest_rule_differs_from_first_as_the_papers_code():
    # OOD 10..19 (TPR moves in steps of 0.1); ID 12.5 and 10.5 sit between OOD scores.
    # recall 0.88: "first" takes the first threshold with TPR >= 0.88, i.e. TPR 0.9 at score 11
    # (ID above: 12.5 -> FPR 1/4). "nearest" takes TPR 0.9 too, but of the thresholds with that
    # TPR the paper's code takes the lowest, 10.5, which also flags ID 10.5 -> FPR 2/4.
    s_out = torch.arange(10, 20, dtype=torch.float64)
    s_in = torch.tensor([12.5, 10.5, 0.0, 1.0])
    assert ood_metrics(s_in, s_out, recall=0.88, fpr_rule="first")["fpr88"] == pytest.approx(1 / 4)
    assert ood_metrics(s_in, s_out, recall=0.88, fpr_rule="nearest")["fpr88"] == pytest.approx(2 / 4)
    # recall 0.95 lies between TPR 0.9 and 1.0, equally far: both rules end at FPR 2/4
    assert ood_metrics(s_in, s_out, fpr_rule="nearest")["fpr95"] == pytest.approx(2 / 4)
    assert ood_metrics(s_in, s_out, fpr_rule="first")["fpr95"] == pytest.approx(2 / 4)


def _reference_fpr_nearest(s_in, s_out, recall):
    """hendrycks/outlier-exposure utils/display_results.py:26-63 (fpr_and_fdr_at_recall), restated in
    numpy as an independent oracle of the "nearest" rule: OOD positive, thresholds at the distinct
    scores from the top, the curve cut at the first full-recall threshold and walked from there
    upwards, argmin of |recall - level| (ties: the first found, i.e. the lowest threshold)."""
    scores = np.concatenate([s_out, s_in])
    is_out = np.r_[np.ones(len(s_out)), np.zeros(len(s_in))]
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, is_out = scores[order], is_out[order]
    group_ends = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(is_out)[group_ends]
    fps = group_ends + 1 - tps
    full = int(np.searchsorted(tps, tps[-1]))
    levels = np.r_[(tps / tps[-1])[full::-1], 1.0]
    fps = np.r_[fps[full::-1], 0]
    return fps[int(np.argmin(np.abs(levels - recall)))] / len(s_in)


def test_nearest_rule_equals_the_papers_fpr_and_fdr_at_recall_on_tied_scores():
    """Integer scores (many ties within and across sets) and recall levels exactly half-way between
    two achievable TPRs (dyadic, so |a - r| == |b - r| in floats): the tie goes to the lower threshold."""
    rng = np.random.default_rng(7)
    equidistant = 0
    for trial in range(300):
        n_in, n_out = int(rng.integers(1, 30)), int(rng.choice([2, 4, 8, 16]))
        s_in = rng.integers(0, 6, n_in).astype(np.float64)
        s_out = rng.integers(2, 8, n_out).astype(np.float64)
        for recall in (0.95, 0.9, *((2 * j + 1) / (2 * n_out) for j in range(n_out))):
            got = ood_metrics(torch.tensor(s_in), torch.tensor(s_out), recall=recall, fpr_rule="nearest")
            expected = _reference_fpr_nearest(s_in, s_out, recall)
            assert next(iter(got.values())) == pytest.approx(expected, abs=1e-12), (trial, recall, s_in, s_out)
            equidistant += recall not in (0.95, 0.9)
    assert equidistant > 1000


def test_nearest_rule_ties_in_tpr_take_the_lowest_threshold():
    # OOD: 3, 2, 1 ; ID: 2.5 and 1.5 sit between. TPR 2/3 is reached at threshold 2 and stays
    # 2/3 at threshold 1.5 (one more ID sample): the paper's code reports the latter (FPR 2/2).
    s_out = torch.tensor([3.0, 2.0, 1.0])
    s_in = torch.tensor([2.5, 1.5])
    assert ood_metrics(s_in, s_out, recall=0.7, fpr_rule="nearest")["fpr70"] == pytest.approx(1.0)
    assert ood_metrics(s_in, s_out, recall=0.6, fpr_rule="first")["fpr60"] == pytest.approx(0.5)


def _curve_metrics(s_in, s_out, recall, rule, positive):
    """The threshold-curve computation ood_metrics used before its one-sort rewrite (two float64
    argsorts of all scores, cumulative counts per distinct threshold): the reference."""
    import oe_lightning.metrics as m

    s_in, s_out = torch.as_tensor(s_in, dtype=torch.float64), torch.as_tensor(s_out, dtype=torch.float64)
    scores = torch.cat([s_in, s_out])
    is_ood = torch.cat([torch.zeros(len(s_in), dtype=torch.bool), torch.ones(len(s_out), dtype=torch.bool)])
    fps, tps, _ = binary_clf_curve(scores, is_ood)
    fps_in, tps_in, _ = binary_clf_curve(-scores, ~is_ood)
    fpr = fpr_at_recall(fps, tps, recall, rule) if positive == "out" else fpr_at_recall(fps_in, tps_in, recall, rule)
    return {"fpr": fpr, "auroc": m.auroc(fps, tps), "aupr_in": average_precision(fps_in, tps_in),
            "aupr_out": average_precision(fps, tps)}


def _score_sets():
    """Continuous, heavily tied, separated, inverted, all-equal, tiny and float32 score sets."""
    rng = np.random.default_rng(11)
    yield rng.normal(0, 1, 700), rng.normal(1, 1, 300)
    for scale in (1e-3, 1.0, 1e4):
        yield _tied_scores(rng, scale)
    yield np.zeros(50), np.ones(30)
    yield np.ones(30), np.zeros(50)
    yield np.full(20, 0.5), np.full(7, 0.5)
    yield np.array([0.3]), np.array([0.2])
    yield np.array([1.0, 2.0, 2.0]), np.array([2.0])
    yield rng.integers(0, 3, 40).astype(float), rng.integers(2, 5, 3).astype(float)  # ID above every OOD
    yield rng.normal(0, 1, 500).astype(np.float32), rng.normal(0.5, 1, 400).astype(np.float32)


@pytest.mark.parametrize("block", [None, 3])
@pytest.mark.parametrize("positive", ["out", "in"])
@pytest.mark.parametrize("rule", ["first", "nearest"])
def test_one_sort_metrics_equal_the_threshold_curve_computation(monkeypatch, rule, positive, block):
    """The one-sort metrics equal the previous computation to 1e-12 on every score set of the suite,
    at several recalls (the FPR exactly), with the ID set sorted once for many OOD sets; also when
    the per-sample passes run in blocks of 3 scores (tie groups cross block borders)."""
    import oe_lightning.metrics as metrics

    if block:
        monkeypatch.setattr(metrics, "_CHUNK", block)
    for s_in, s_out in _score_sets():
        for recall in (0.95, 0.9, 0.5, 0.05, 1.0, 0.999):
            ref = _curve_metrics(s_in, s_out, recall, rule, positive)
            got = ood_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out), recall, rule, positive)
            fpr_key = f"fpr{round(recall * 100)}"
            assert got[fpr_key] == ref["fpr"], (rule, positive, recall, len(s_in), len(s_out))
            for key in ("auroc", "aupr_in", "aupr_out"):
                assert abs(got[key] - ref[key]) < 1e-12, (key, got[key], ref[key])
        once = sort_scores(torch.from_numpy(s_in))
        assert isinstance(once, SortedScores)
        assert ood_metrics(once, torch.from_numpy(s_out), 0.95, rule, positive) == \
            ood_metrics(torch.from_numpy(s_in), torch.from_numpy(s_out), 0.95, rule, positive)


def test_per_class_arrays_and_fractional_labels_are_refused():
    """Logits passed by mistake used to be flattened into AUROC 1.0; is_ood=0.3 counted as OOD."""
    with pytest.raises(ValueError, match=r"shape \(8, 10\): pass one score per sample"):
        ood_metrics(torch.randn(8, 10), torch.randn(8, 10))
    assert ood_metrics(torch.zeros(5, 1), torch.ones(4))["auroc"] == 1.0  # a column is one score each
    metric = OODMetrics()
    with pytest.raises(ValueError, match="other than 0/1"):
        metric.update(torch.zeros(3), 0.3)
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        metric.update(torch.zeros(3, 2), True)
    metric.update(torch.zeros(3), torch.tensor([0, 1, 1]))
    assert metric.counts() == (1, 2)


def test_perfect_and_inverted_separation():
    s_in, s_out = torch.zeros(50), torch.ones(30)
    assert ood_metrics(s_in, s_out) == {"fpr95": 0.0, "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0}
    inverted = ood_metrics(s_out, s_in)
    assert inverted["fpr95"] == 1.0 and inverted["auroc"] == 0.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="NaN among the OOD scores"):
        ood_metrics(torch.zeros(3), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="no ID scores"):
        ood_metrics(torch.zeros(0), torch.ones(3))
    with pytest.raises(ValueError, match="fpr_rule"):
        ood_metrics(torch.zeros(3), torch.ones(3), fpr_rule="closest")


def test_torchmetrics_wrapper_equals_functional_over_batches():
    rng = np.random.default_rng(3)
    s_in, s_out = (torch.from_numpy(a) for a in _tied_scores(rng, 1.0))
    metric = OODMetrics(fpr_rule="nearest")
    for chunk in torch.split(s_in, 37):
        metric.update(chunk, False)
    for chunk in torch.split(s_out, 41):
        metric.update(chunk, torch.ones(len(chunk), dtype=torch.bool))
    assert metric.compute() == ood_metrics(s_in, s_out, fpr_rule="nearest")
    metric.reset()
    assert metric.scores == []


def _reference_calib_err(confidence, correct, p="2", beta=100):
    """hendrycks/outlier-exposure utils/calibration_tools.py:4-32 (calib_err), restated in numpy as
    the oracle: adaptive bins of beta by confidence, the last (remainder) bin left out of the sum."""
    idx = np.argsort(confidence, kind="stable")
    confidence, correct = confidence[idx], correct[idx]
    bins = [[i * beta, (i + 1) * beta] for i in range(len(confidence) // beta)]
    bins[-1] = [bins[-1][0], len(confidence)]
    err = 0.0
    for lo, hi in bins[:-1]:
        gap = abs(confidence[lo:hi].mean() - correct[lo:hi].mean())
        err += (hi - lo) / len(confidence) * (gap ** 2 if p == "2" else gap)
    return np.sqrt(err) if p == "2" else err


def test_calibration_error_equals_the_papers_calib_err_last_bin_left_out():
    rng = np.random.default_rng(0)
    for n in (200, 250, 12_345):
        conf = rng.uniform(0.1, 1.0, n)
        correct = (rng.uniform(size=n) < conf ** 2).astype(float)
        assert calibration_error(torch.tensor(conf), torch.tensor(correct)) == pytest.approx(
            _reference_calib_err(conf, correct), rel=1e-12)
        assert calibration_error(torch.tensor(conf), torch.tensor(correct), norm="mad") == pytest.approx(
            _reference_calib_err(conf, correct, "1"), rel=1e-12)
    # by hand: 4 samples, bins of 2 -> bins (0.6, 0.6) vs (1, 1) and (0.9, 0.9) vs (1, 1); only the
    # first counts: sqrt(2/4 * 0.4^2); with every bin: sqrt((0.4^2 + 0.1^2) / 2)
    conf, correct = torch.tensor([0.6, 0.9, 0.6, 0.9]), torch.ones(4)
    assert rms_calibration_error(conf, correct, bin_size=2) == pytest.approx((0.5 * 0.16) ** 0.5)
    assert rms_calibration_error(conf, correct, bin_size=2, drop_last_bin=False) == pytest.approx(
        ((0.16 + 0.01) / 2) ** 0.5)
    with pytest.raises(ValueError, match="4 confidences but 3"):
        calibration_error(conf, torch.ones(3))


def test_calibration_error_is_undefined_below_two_bins_never_a_perfect_zero():
    # the reference's loop sums nothing below 2 * beta samples and returns 0: a 10%-accurate model
    # would read as perfectly calibrated; we say n/a
    for n in (1, 100, 199):
        conf, correct = torch.full((n,), 0.99), torch.zeros(n)
        if n >= 100:  # below one bin the reference indexes an empty list
            assert _reference_calib_err(conf.numpy(), correct.numpy()) == 0.0
        assert math.isnan(calibration_error(conf, correct)) and math.isnan(calibration_error(conf, correct, norm="mad"))
        assert calibration_error(conf, correct, drop_last_bin=False) == pytest.approx(0.99)
    from oe_lightning.report import calibration_line

    line = calibration_line({"id_accuracy": 0.078, "rms_calibration_error": float("nan")})
    assert "RMS calibration error n/a" in line and "0.00" not in line
    assert "RMS calibration error 1.57" in calibration_line({"id_accuracy": 0.9, "rms_calibration_error": 0.0157})


def test_tuned_temperature_minimises_the_nll_within_the_bracket():
    """The bisection of the paper's tune_temp (utils/calibration_tools.py:50-68) lands on the NLL
    minimum: logits made over-confident by a factor 2.5 give back T ~ 2.5."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (4000,), generator=g)
    true_logits = torch.randn(4000, 10, generator=g) + 2.0 * F.one_hot(labels, 10)
    # labels drawn from softmax(true_logits): the calibrated temperature of 2.5 * true_logits is 2.5
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=g).squeeze(1)
    t = tune_temperature(2.5 * true_logits, labels)
    grid = torch.linspace(0.2, 5.0, 4801)
    nll = torch.stack([F.cross_entropy(2.5 * true_logits / x, labels) for x in grid])
    assert t == pytest.approx(float(grid[nll.argmin()]), abs=2e-3)
    assert t == pytest.approx(2.5, abs=0.15)
    assert tune_temperature(true_logits * 100, labels) <= 5.0  # bracketed as the reference: [0.2, 5]


def test_ood_calibration_counts_ood_samples_as_wrong():
    """CIFAR/test_calibration.py:180-182: OOD confidences join the ID ones with correct = 0; a model
    unconfident on OOD data (confidence 0.1) is better calibrated on the mixture than a confident one."""
    conf_in, correct_in = torch.full((1000,), 0.95), (torch.arange(1000) % 20 != 0).float()
    low = ood_calibration(conf_in, correct_in, torch.full((5000,), 0.1), num_out=200)
    high = ood_calibration(conf_in, correct_in, torch.full((5000,), 0.99), num_out=200)
    # 1,200 samples, 12 bins of 100; ID bins are exact (0.95 vs 95% correct), the OOD ones fill the
    # lowest 2 (gap 0.1) or the highest 2 (gap 0.99), of which the last bin is left out
    assert low["rms"] == pytest.approx((200 / 1200 * 0.1 ** 2) ** 0.5)
    assert high["rms"] == pytest.approx((100 / 1200 * 0.99 ** 2) ** 0.5)
    assert low["mad"] == pytest.approx(200 / 1200 * 0.1)
    # the same draw whatever the order in which ranks gathered the OOD confidences
    c = torch.rand(3000, generator=torch.Generator().manual_seed(1))
    assert ood_calibration(conf_in, correct_in, c, 200, repeats=3) == \
        ood_calibration(conf_in, correct_in, c.flip(0), 200, repeats=3)


def test_downsampled_roc_stays_on_the_exact_curve_and_histograms_count_every_score():
    from sklearn.metrics import roc_curve as sk_roc

    from oe_lightning.metrics import roc_curve, score_histograms

    g = torch.Generator().manual_seed(0)
    s_in, s_out = torch.randn(3000, generator=g), torch.randn(2000, generator=g) + 1.0
    curve = roc_curve(s_in, s_out, max_points=101)
    assert len(curve["fpr"]) <= 101 and curve["fpr"][0] == 0 and curve["tpr"][-1] == 1.0
    fpr, tpr, _ = sk_roc(np.r_[np.zeros(3000), np.ones(2000)], torch.cat([s_in, s_out]).numpy(),
                         drop_intermediate=False)
    exact = set(zip(np.round(fpr, 12), np.round(tpr, 12), strict=True))
    assert all((round(f, 12), round(t, 12)) in exact for f, t in zip(curve["fpr"], curve["tpr"], strict=True))
    area = np.trapezoid(curve["tpr"], curve["fpr"])
    assert area == pytest.approx(roc_auc_score(np.r_[np.zeros(3000), np.ones(2000)],
                                               torch.cat([s_in, s_out]).numpy()), abs=0.01)
    hist = score_histograms(s_in, s_out, bins=20)
    assert len(hist["edges"]) == 21 and sum(hist["in"]) == 3000 and sum(hist["out"]) == 2000


def test_metric_curves_use_all_scores_passed_to_update():
    m = OODMetrics()
    m.update(torch.tensor([0.1, 0.2, 0.3]), False)
    m.update(torch.tensor([0.9, 0.8]), True)
    curves = m.curves()
    assert curves["roc"]["tpr"][-1] == 1.0 and sum(curves["histogram"]["out"]) == 2
    assert m.compute()["auroc"] == 1.0


@pytest.mark.parametrize("rule", ["first", "nearest"])
def test_id_positive_fpr_is_the_energy_papers_get_measures_of_negated_scores(rule):
    """wetliu/energy_ood CIFAR/test.py:218-221: get_measures(-in_score, -out_score), i.e. ID positive:
    the share of OOD samples accepted when 95% of ID samples are kept."""
    from sklearn.metrics import roc_curve

    g = torch.Generator().manual_seed(3)
    s_in, s_out = torch.randn(700, generator=g), torch.randn(300, generator=g) + 1.5
    ours = ood_metrics(s_in, s_out, fpr_rule=rule, positive="in")
    # the same as the OE convention with the roles swapped and the scores negated
    swapped = ood_metrics(-s_out, -s_in, fpr_rule=rule)
    assert ours["fpr95"] == pytest.approx(swapped["fpr95"], abs=1e-12)
    assert ours["auroc"] == pytest.approx(ood_metrics(s_in, s_out)["auroc"], abs=1e-12)  # rule-free metrics
    if rule == "first":  # sklearn's ROC with ID as the positive class
        fpr, tpr, _ = roc_curve(np.r_[np.ones(700), np.zeros(300)], -np.r_[s_in.numpy(), s_out.numpy()])
        assert ours["fpr95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-12)
    assert ours["fpr95"] != pytest.approx(ood_metrics(s_in, s_out, fpr_rule=rule)["fpr95"], abs=1e-3)
    with pytest.raises(ValueError, match="positive='ood' must be out"):
        ood_metrics(s_in, s_out, positive="ood")


def test_paper_subsets_are_whole_batches_of_200_as_the_reference_reads_them():
    """CIFAR/test.py:104,118 and SVHN/test.py:95,109: len(test) // 5, cut to whole batches of test_bs=200."""
    from oe_lightning.metrics import paper_subset_size

    assert paper_subset_size(10_000) == 2000  # CIFAR-10/100, Tiny ImageNet val
    assert paper_subset_size(26_032) == 5200  # SVHN test: 5206 // 200 * 200
    assert paper_subset_size(539) == 107 and paper_subset_size(3) == 1  # small sets: len // 5
