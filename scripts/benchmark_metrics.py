"""Exact OOD metrics (FPR95, AUROC, AUPR-In, AUPR-Out) on 1M and 10M scores: ours against scikit-learn,
pytorch-ood and our previous threshold-curve computation, timed in this process (interleaved
repeats, medians), each checked to give the same values; then our peak memory in a fresh process.

    python scripts/benchmark_metrics.py                      # 1M and 10M scores, 3 repeats (~4 min on 2 cores)
    python scripts/benchmark_metrics.py --sizes 1e6 --repeats 5

Half the scores are ID (N(0, 1)), half OOD (N(1, 1)), float32 as a detector returns them. The peers
need the dev extra (scikit-learn, pytorch-ood).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch

from oe_lightning.metrics import auroc as curve_auroc
from oe_lightning.metrics import average_precision, binary_clf_curve, fpr_at_recall, ood_metrics


def scores(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n // 2, generator=g), torch.randn(n - n // 2, generator=g) + 1.0


def ours(s_in: torch.Tensor, s_out: torch.Tensor) -> dict[str, float]:
    return ood_metrics(s_in, s_out)


def previous(s_in: torch.Tensor, s_out: torch.Tensor) -> dict[str, float]:
    """ood_metrics before the one-sort rewrite: two float64 argsorts of all scores, cumulative counts."""
    scores = torch.cat([s_in, s_out]).double()
    is_ood = torch.cat([torch.zeros(len(s_in), dtype=torch.bool), torch.ones(len(s_out), dtype=torch.bool)])
    fps, tps, _ = binary_clf_curve(scores, is_ood)
    fps_in, tps_in, _ = binary_clf_curve(-scores, ~is_ood)
    return {"fpr95": fpr_at_recall(fps, tps), "auroc": curve_auroc(fps, tps),
            "aupr_in": average_precision(fps_in, tps_in), "aupr_out": average_precision(fps, tps)}


def sklearn(s_in: torch.Tensor, s_out: torch.Tensor) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    scores = np.concatenate([s_in.numpy(), s_out.numpy()]).astype(np.float64)
    is_ood = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    fpr, tpr, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    return {"fpr95": float(fpr[np.searchsorted(tpr, 0.95)]), "auroc": roc_auc_score(is_ood, scores),
            "aupr_in": average_precision_score(1 - is_ood, -scores),
            "aupr_out": average_precision_score(is_ood, scores)}


def pytorch_ood(s_in: torch.Tensor, s_out: torch.Tensor) -> dict[str, float]:
    from pytorch_ood.metrics import OODMetrics

    metrics = OODMetrics()  # labels < 0 mark OOD
    metrics.update(torch.cat([s_in, s_out]),
                   torch.cat([torch.zeros(len(s_in), dtype=torch.long), -torch.ones(len(s_out), dtype=torch.long)]))
    out = metrics.compute()
    return {"fpr95": out["FPR95TPR"], "auroc": out["AUROC"], "aupr_in": out["AUPR-IN"], "aupr_out": out["AUPR-OUT"]}


PEERS = {"ours": ours, "previous": previous, "sklearn": sklearn, "pytorch-ood": pytorch_ood}


def peak_memory(n: int) -> float:
    """Our peak extra memory in a fresh process (Linux: the RSS high-water mark, reset once the
    scores exist), in multiples of the scores' own size."""
    code = ("import sys; sys.path.insert(0, 'scripts'); from benchmark_metrics import scores;"
            "from oe_lightning.metrics import ood_metrics;"
            "rss = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]);"
            f"a, b = scores({n}); open('/proc/self/clear_refs', 'w').write('5'); base = rss('VmRSS:');"
            "ood_metrics(a, b); print(rss('VmHWM:') - base)")
    extra_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    return extra_kib * 1024 / (4 * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} interleaved "
          f"repeats; peak memory as extra RSS over the float32 scores' size")
    for n in (int(s) for s in args.sizes):
        s_in, s_out = scores(n)
        times: dict[str, list[float]] = {name: [] for name in PEERS}
        values: dict[str, dict[str, float]] = {}
        for _ in range(args.repeats):
            for name, fn in PEERS.items():
                start = time.perf_counter()
                values[name] = {k: float(v) for k, v in fn(s_in, s_out).items()}
                times[name].append(time.perf_counter() - start)
        for name, got in values.items():  # every peer computes the same numbers
            for key, ref in values["previous"].items():
                assert abs(got[key] - ref) < 1e-6, (name, key, got[key], ref)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"\n{n:,} scores ({n // 2:,} ID + {n - n // 2:,} OOD): fpr95 {values['ours']['fpr95']:.6f}, "
              f"auroc {values['ours']['auroc']:.6f} (all four equal to 1e-6 across peers)")
        print(f"  {'':12} {'seconds':>8} {'ours is x faster':>17}")
        for name in PEERS:
            print(f"  {name:12} {med[name]:8.2f} {med[name] / med['ours']:17.2f}")
        print(f"  ours: peak memory {peak_memory(n):.2f}x the scores' size")
    print(f"\nmax RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
