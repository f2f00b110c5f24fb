"""The end of a Hydra multirun: which jobs finished, which failed and why, in one table.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``conf/hydra/default.yaml``). It
runs in the process that launched the sweep, whatever the launcher (basic, joblib, submitit), and
reads each job directory: a complete ``results.json`` is a finished job, ``error.txt`` (written by
a job that stopped on bad input) or no results at all is a failed one. Failed jobs never stop the
others; the summary lists them and the sweep then exits with code 1, so scripts notice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from oe_lightning.escaping import rich_text
from oe_lightning.results import RESULTS_FILE, is_complete, read_results_or_none

SUMMARY_FILE = "sweep_summary.json"
EXIT_FAILED_JOBS = 1


def release_parallel_workers(config: DictConfig) -> None:
    """End the joblib launcher's idle worker processes now. joblib keeps them for 300 s in case more
    work comes; they hold the command's stdout and stderr open, so ``oe-train -m ... | tee log`` (or any
    caller reading the output to its end) waited five minutes after the sweep was done."""
    target = str(config.hydra.get("launcher", {}).get("_target_", ""))
    if "joblib" not in target.lower() or "joblib" not in sys.modules:
        return
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def job_status(job_dir: Path) -> dict[str, Any]:
    """``{"job", "status": done|failed, "mean_fpr95", "error"}`` of one sweep job directory."""
    entry: dict[str, Any] = {"job": job_dir.name, "status": "failed", "mean_fpr95": None, "error": None}
    results = read_results_or_none(job_dir)
    if is_complete(results):
        entry.update(status="done", mean_fpr95=results["mean"].get("fpr95"))
        return entry
    if isinstance(results, dict) and results.get("partial") and isinstance(results.get("mean"), dict):
        entry.update(status="partial", mean_fpr95=results["mean"].get("fpr95"),
                     error="scored part of the test sets only (fast_dev_run / limit_test_batches)")
        return entry
    error = job_dir / "error.txt"
    entry["error"] = (" ".join(error.read_text().split()) if error.is_file()
                      else "no results.json: the job crashed or was stopped; see its .log file")
    return entry


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """Job directories of a sweep: those holding a Hydra config or a result of ours."""
    markers = (".hydra", RESULTS_FILE, "error.txt")
    return sorted(p for p in Path(sweep_dir).iterdir()
                  if p.is_dir() and any((p / m).exists() for m in markers))


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    """Status of every job of a sweep, written to ``SWEEP_DIR/sweep_summary.json``."""
    entries = [job_status(d) for d in sweep_jobs(sweep_dir)]
    (Path(sweep_dir) / SUMMARY_FILE).write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def summary_table(entries: list[dict[str, Any]], sweep_dir: Path) -> Table:
    """A rich table of the sweep's jobs: name, status, mean FPR95 (in %) and error, coloured by status."""
    done = sum(e["status"] == "done" for e in entries)
    table = Table(title=rich_text(f"sweep {sweep_dir}: {done}/{len(entries)} jobs done"))
    for name in ("job", "status", "mean FPR95 %", "error"):
        table.add_column(name, overflow="fold")
    for e in entries:  # job names and errors hold paths and values of the user's: never rich markup
        fpr = "" if e["mean_fpr95"] is None else f"{100 * e['mean_fpr95']:.2f}"
        table.add_row(rich_text(e["job"]), e["status"], fpr, rich_text(e["error"] or ""),
                      style={"done": None, "partial": "yellow"}.get(e["status"], "red"))
    return table


class SweepSummary(Callback):
    """Print the sweep's job table at the end of a multirun; exit 1 if any job failed."""

    def __init__(self, fail_on_error: bool = True):
        self.fail_on_error = fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """End joblib's idle workers, write and print the sweep summary; exit 1 if a job failed and
        ``fail_on_error`` is set."""
        release_parallel_workers(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        entries = summarize(sweep_dir)
        Console(width=120, stderr=True).print(summary_table(entries, sweep_dir))
        failed = [e["job"] for e in entries if e["status"] == "failed"]
        if failed and self.fail_on_error:
            print(f"\n{len(failed)} of {len(entries)} sweep jobs failed: {', '.join(failed)}. The others "
                  f"finished; fix the cause and re-run the same command with hydra.sweep.dir={sweep_dir} "
                  f"to run only the failed jobs.", file=sys.stderr)
            sys.exit(EXIT_FAILED_JOBS)
