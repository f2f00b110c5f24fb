"""Fit + score time and peak memory of the feature detectors, side by side with pytorch-ood.

CIFAR-sized features: 50,000 × 128 ID training features in 10 classes (WRN-40-2's penultimate
width), 10,000 ID + 10,000 OOD test features, a 10-class linear head. Both libraries get the same
tensors in the same process, interleaved, ``--repeats`` times; the median wall time is reported,
with the largest score difference between the two.

    python scripts/benchmark_detectors.py             # pip install -e ".[dev]" for pytorch-ood
    python scripts/benchmark_detectors.py --n-train 5000 --repeats 1    # a quick look
    python scripts/benchmark_detectors.py --n-test 75000 --repeats 1    # 150,000 queries (OpenOOD's far sets)

``knn_faiss`` is ``detector.knn.backend=faiss`` (pip install -e ".[faiss]"), timed when faiss is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch

from oe_lightning.detectors import KNN, Mahalanobis, Outputs, ViM


def make_features(n_train: int, n_test: int, dim: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(classes, dim, generator=g)
    labels = torch.arange(n_train) % classes
    train = (torch.randn(n_train, dim, generator=g) + centres[labels]).relu()
    test = torch.cat([torch.randn(n_test, dim, generator=g) + centres[torch.arange(n_test) % classes],
                      1.5 * torch.randn(n_test, dim, generator=g)]).relu()
    head = torch.nn.Linear(dim, classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.1, generator=g)
        head.bias.normal_(0, 0.1, generator=g)
    return train, labels, test, head


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def timed(fn):
    """Result, wall seconds and peak resident memory above the start (Linux: the high-water mark
    is reset through /proc/self/clear_refs, so torch's C allocations count too)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS")
    started = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - started
    return out, wall, max(_status("VmHWM") - before, 0)


def ours(name: str, train, labels, test, head):
    with torch.no_grad():
        fit = Outputs(head(train), train, labels)
        run = Outputs(head(test), test)
    detector = {"knn": KNN(k=50), "knn_faiss": KNN(k=50, backend="faiss"), "mahalanobis": Mahalanobis(),
                "vim": ViM(d=64)}[name]
    return detector.fit(fit, head).score(run, head)


def theirs(name: str, train, labels, test, head):
    import pytorch_ood.detector as pood

    if name.startswith("knn"):
        return pood.KNN(None, k=50).fit_features(train, labels).predict_features(test)
    if name == "mahalanobis":
        return pood.Mahalanobis(None).fit_features(train, labels).predict_features(test)
    return pood.ViM(None, d=64, w=head.weight, b=head.bias).fit_features(train, labels).predict_features(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000, help="ID test features (and as many OOD)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train, labels, test, head = make_features(args.n_train, args.n_test, args.dim, 10)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n_train} x {args.dim} train, "
          f"{2 * args.n_test} test features; median of {args.repeats}")
    print(f"{'detector':12s} {'ours s':>8s} {'pood s':>8s} {'ratio':>6s} {'ours MB':>8s} {'pood MB':>8s}  max |diff|")
    names = ["knn", *(["knn_faiss"] if importlib.util.find_spec("faiss") else []), "mahalanobis", "vim"]
    for name in names:
        walls = {"ours": [], "pood": []}
        peaks, scores = {}, {}
        for _ in range(args.repeats):  # interleaved
            for who, fn in (("ours", ours), ("pood", theirs)):
                scores[who], wall, peaks[who] = timed(lambda fn=fn, name=name: fn(name, train, labels, test, head))
                walls[who].append(wall)
        a, b = scores["ours"].double(), scores["pood"].double()
        if name == "mahalanobis":  # pytorch-ood: unnormalised covariance, half the distance (tests/test_detectors.py)
            b = 2 * args.n_train * b
        diff = float((a - b).abs().max() / b.abs().max())
        mo, mp = statistics.median(walls["ours"]), statistics.median(walls["pood"])
        print(f"{name:12s} {mo:8.2f} {mp:8.2f} {mo / mp:6.2f} {peaks['ours'] / 2**20:8.1f} "
              f"{peaks['pood'] / 2**20:8.1f}  {diff:.1e} (relative)")


if __name__ == "__main__":
    main()
