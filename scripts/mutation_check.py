#!/usr/bin/env python
"""Would the tests notice a small bug? Plant each mutation below in a copy of a revision and run the
tests that guard that code; a mutation the tests pass is a survivor (a test that cannot fail).

    python scripts/mutation_check.py                      # every mutation, at HEAD
    python scripts/mutation_check.py --rev 9509a82 --rev HEAD --only nearest_tie knn_default
    python scripts/mutation_check.py --list

Each revision is copied with ``git archive`` into a temporary folder and imported from there (its
tests against its own code); mutations whose code is not in a revision are reported as ``n/a``.
One mutation at a time, tests on one process (``-p no:xdist``): minutes per mutation on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (text, replacement), each must occur in the file
    tests: tuple[str, ...]
    marker: str = "not slow"


MUTATIONS = [
    Mutation("nearest_tie", "the nearest FPR rule's tie-break '<=' -> '<' (a real difference on tied scores)",
             "oe_lightning/metrics.py",
             (("abs(k_up / m - recall) <= abs(k_down / m - recall)",
               "abs(k_up / m - recall) < abs(k_down / m - recall)"),),
             ("tests/test_metrics.py",)),
    Mutation("oe_term_sign", "the OE term's sign flipped (CE to uniform becomes its negative)",
             "oe_lightning/losses.py",
             (("return (torch.logsumexp(logits_oe, dim=1) - logits_oe.mean(dim=1)).mean()",
               "return (logits_oe.mean(dim=1) - torch.logsumexp(logits_oe, dim=1)).mean()"),),
             ("tests/test_losses.py", "tests/test_module.py")),
    Mutation("lambda_ignored", "λ no longer weighs the OE term", "oe_lightning/module.py",
             (("loss = loss_in + self.lambda_oe * loss_oe", "loss = loss_in + loss_oe"),), ("tests/test_module.py",)),
    Mutation("parts_swapped", "the logged ID and OE training parts swapped", "oe_lightning/module.py",
             (('STEP_NAMES = ("train/loss_step", "train/loss_in_step", "train/loss_oe_step")',
               'STEP_NAMES = ("train/loss_step", "train/loss_oe_step", "train/loss_in_step")'),),
             ("tests/test_module.py",)),
    Mutation("unweighted_epoch", "epoch means without per-sample weights (a mean of batch means)",
             "oe_lightning/module.py",
             (("sums[:3] += parts.double() * n", "sums[:3] += parts.double()"),
              ("sums[3] += correct\n", "sums[3] += correct / n\n"),
              ("self._epoch_seen += n", "self._epoch_seen += 1")),
             ("tests/test_module.py",)),
    Mutation("knn_default", "conf/detector/knn.yaml k 50 -> 5 (the README says 50)", "conf/detector/knn.yaml",
             (("  k: 50", "  k: 5"),), ("tests/test_config.py", "tests/test_detectors.py")),
    Mutation("oe_not_augmented", "OE batches no longer augmented on the default path",
             "oe_lightning/data/device_batches.py",
             (("            if role not in batch:\n", "            if role not in batch or role == \"oe\":\n"),),
             ("tests/test_batch_augment.py",)),
    Mutation("keep_id_widened", "evaluation.keep_id's range widened to (0, 2]", "oe_lightning/validate.py",
             (('("evaluation.keep_id", number(0, 1, low_open=True)',
               '("evaluation.keep_id", number(0, 2, low_open=True)'),),
             ("tests/test_config.py", "tests/test_reliability.py")),
    Mutation("optimizer_output_only", "optimiser and precision treated as output-only in the run identity",
             "oe_lightning/results.py",
             (('               "data.pin_memory",',
               '               "data.pin_memory", "module.optimizer", "trainer.precision",'),),
             ("tests/test_identity.py",)),
    Mutation("threshold_direction", "the deployed threshold's direction flipped (score < threshold is OOD)",
             "oe_lightning/deployment.py",
             (("return logits, score, score > self.threshold", "return logits, score, score < self.threshold"),),
             ("tests/test_operating_point.py", "tests/test_deployment.py")),
    Mutation("rejection_as_acceptance", "the deployed OOD rejection computed as the acceptance share",
             "oe_lightning/evaluation.py",
             (("rejected = {name: 1.0 - accepted_share(scores[name], threshold)",
               "rejected = {name: accepted_share(scores[name], threshold)"),),
             ("tests/test_operating_point.py",)),
    Mutation("calibration_zero", "the calibration error of too few samples reported as 0 again",
             "oe_lightning/metrics.py",
             (('    if drop_last_bin and len(pairs) < 2:\n        return float("nan")\n', ""),),
             ("tests/test_metrics.py",)),
    Mutation("progress_disabled_rank", "the progress bar reads its totals on ranks where it is disabled (DDP)",
             "oe_lightning/progress.py",
             (("if self.is_enabled and self._due(batch_idx + 1, self.total_val_batches_current_dataloader)",
               "if self._due(batch_idx + 1, self.total_val_batches_current_dataloader)"),),
             ("tests/test_distributed.py",), marker=""),
    Mutation("package_forgotten", "a sub-package left out of the wheel", "setup.py",
             (('[*find_packages(include=["oe_lightning", "oe_lightning.*"]), "oe_lightning.conf"]',
               '[*find_packages(include=["oe_lightning", "oe_lightning.*"], exclude=["oe_lightning.detectors"]), '
               '"oe_lightning.conf"]'),),
             ("tests/test_packaging.py",)),
    Mutation("csv_formula", "a name starting with '=' written into a CSV cell unescaped", "oe_lightning/escaping.py",
             (('FORMULA_STARTS = ("=", "+", "-", "@", "\\t", "\\r")',
               'FORMULA_STARTS = ("+", "-", "@", "\\t", "\\r")'),),
             ("tests/test_hostile_names.py",)),
    Mutation("temp_fixed_name", "the atomic writer's temporary file at a fixed name again (follows a planted link)",
             "oe_lightning/results.py",
             (('    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)',
               '    tmp = str(path) + ".tmp"\n    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)'),),
             ("tests/test_hostile_files.py",)),
    Mutation("eval_into_training_run", "oe-eval allowed to write into a training run's folder",
             "oe_lightning/run_folder.py",
             (('    if task == "eval" and (', '    if False and task == "eval" and ('),),
             ("tests/test_hostile_outputs.py",)),
    Mutation("seed_unbounded", "a seed beyond numpy's range accepted (fails late)", "oe_lightning/validate.py",
             (("MAX_SEED = 2**32 - 1", "MAX_SEED = 2**40"),), ("tests/test_hostile_values.py",)),
]


def copy_revision(rev: str, into: Path) -> Path:
    """The files of ``rev`` (a commit, or ``WORKTREE`` for the working tree as it is) under ``into``."""
    into.mkdir(parents=True)
    if rev == "WORKTREE":
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.split()
        with tempfile.TemporaryFile() as buffer:
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for name in files:
                    if (REPO / name).is_file():
                        tar.add(REPO / name, arcname=name)
            buffer.seek(0)
            with tarfile.open(fileobj=buffer) as tar:
                tar.extractall(into, filter="data")
        return into
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as buffer:
        buffer.write(archive)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as tar:
            tar.extractall(into, filter="data")
    return into


def run(mutation: Mutation, rev: str, workdir: Path, timeout: int) -> tuple[str, float]:
    """``caught`` / ``SURVIVED`` / ``n/a`` (the code is not in this revision) and the seconds taken."""
    tree = copy_revision(rev, workdir / f"{mutation.name}-{rev}")
    target = tree / mutation.file
    text = target.read_text() if target.is_file() else ""
    if not all(old in text for old, _ in mutation.edits):
        return "n/a", 0.0
    for old, new in mutation.edits:
        text = text.replace(old, new, 1)
    target.write_text(text)
    tests = [t for t in mutation.tests if (tree / t).is_file()]
    if not tests:
        return "n/a", 0.0
    env = {**os.environ, "PYTHONPATH": str(tree), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:cacheprovider",
               "-o", "addopts=", *tests]
    if mutation.marker:
        command += ["-m", mutation.marker]
    try:
        proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if proc.returncode == 5:  # no tests collected
        return "n/a", seconds
    return ("caught" if proc.returncode != 0 else "SURVIVED"), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", help="git revision(s) to test, or WORKTREE (default: HEAD)")
    parser.add_argument("--only", nargs="*", help="mutation names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutation and revision")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:24s} {m.what}  [{m.file}; {' '.join(m.tests)}]")
        return
    revs = args.rev or ["HEAD"]
    print("| mutation | " + " | ".join(revs) + " |")
    print("| --- | " + " | ".join("---" for _ in revs) + " |")
    with tempfile.TemporaryDirectory(prefix="mutation_") as tmp:
        for m in chosen:
            cells = []
            for rev in revs:
                verdict, seconds = run(m, rev, Path(tmp), args.timeout)
                cells.append(f"{verdict} ({seconds:.0f} s)" if seconds else verdict)
            print(f"| {m.what} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
