"""``oe-table SWEEP_DIR [...]``: many runs' ``results.json`` -> the paper's tables, a CSV and a λ plot.

Runs are grouped by their key config (``results.json`` → ``config``) minus the seed: runs that
differ only in seed are one group, reported as mean ± sample std over seeds. λ = 0 runs are the
baseline of their dataset (their OE loss is irrelevant; repeated runs of one seed count once).
Output:

- an overview with one row per group (dataset, method, loss, λ, seeds, mean FPR95/AUROC/AUPR,
  ID accuracy);
- for every OE group with a baseline on the same data: rows = OOD sets + mean, columns = FPR95,
  AUROC, AUPR for baseline and OE and, where the paper published them (MSP score, the paper's
  loss), its numbers and our difference to them;
- Markdown, LaTeX and a tidy CSV, and ``fpr95_vs_lambda.png`` when λ took several values.

AUPR is AUPR-Out (OOD positive), the paper's AUPR. Values are percentages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from oe_lightning import escaping
from oe_lightning.rescore import parse_settings
from oe_lightning.run_groups import (
    collect_runs,
    group_runs,
)
from oe_lightning.table_content import (
    ci_tables,
    paired_tables,
    rescore_runs,
)
from oe_lightning.table_render import (
    plot_lambda,
    print_terminal,
    render_csv,
    render_latex,
    render_markdown,
)


def build_parser() -> argparse.ArgumentParser:
    """``oe-table``'s arguments."""
    parser = argparse.ArgumentParser(
        prog="oe-table", description="Collect results.json files under SWEEP_DIR into paper-style tables.")
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="SWEEP_DIR",
                        help="sweep (or any) directories holding results.json files, e.g. a baseline "
                             "sweep and an OE sweep")
    parser.add_argument("--format", choices=("term", "md", "latex", "csv"), default=None,
                        help="what to print: rich tables (default on a terminal), md (default otherwise), "
                             "latex or csv")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write table.md, table.tex, table.csv and fpr95_vs_lambda.png here "
                             "(default: the first SWEEP_DIR)")
    parser.add_argument("--no-files", action="store_true", help="print only, write nothing")
    parser.add_argument("--rescore", metavar="SETTINGS", default=None,
                        help="recompute every metric from the runs' scores.npz under other settings, e.g. "
                             "fpr_rule=nearest,protocol=paper (keys: fpr_rule, recall, protocol, num_to_avg, "
                             "positive)")
    parser.add_argument("--ci", type=int, metavar="RESAMPLES", default=0,
                        help="add bootstrap 95%% intervals of each group's mean FPR95 and AUROC (primary "
                             "detector, first seed's scores.npz), from RESAMPLES seeded resamples")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``oe-table``."""
    args = build_parser().parse_args(argv)
    for d in args.sweep_dirs:
        if not d.is_dir():
            print(f"Error: oe-table got {str(d)!r}, which is not a directory. Pass the sweep directory "
                  f"of an oe-train -m run (outputs/train/multirun/<time>) or any folder holding "
                  f"results.json files.", file=sys.stderr)
            return 2
    runs, incomplete = [], []
    for d in args.sweep_dirs:
        found, broken = collect_runs(d)
        runs += found
        incomplete += broken
    if not runs:
        where = ", ".join(escaping.printable(str(d)) for d in args.sweep_dirs)
        print(f"Error: no complete results.json under {where} ({len(incomplete)} incomplete). "
              f"Run oe-train there first, or point oe-table at the directory that holds the runs.",
              file=sys.stderr)
        return 2
    if args.rescore:
        try:
            settings = parse_settings(args.rescore)
        except ValueError as err:
            print(f"Error: {err}", file=sys.stderr)
            return 2
        runs, unscored = rescore_runs(runs, settings)
        if unscored:
            print(f"({len(unscored)} runs have no scores.npz and are left out of the rescored tables: "
                  f"{', '.join(map(escaping.printable, unscored[:3]))}{' ...' if len(unscored) > 3 else ''})",
                  file=sys.stderr)
        if not runs:
            print("Error: no run under these directories has a scores.npz to rescore.", file=sys.stderr)
            return 2
    groups = group_runs(runs)
    extra = [*paired_tables(groups), *(ci_tables(groups, args.ci) if args.ci else [])]
    rendered = {"md": render_markdown(groups, extra), "latex": render_latex(groups, extra),
                "csv": render_csv(groups)}
    fmt_out = args.format or ("term" if sys.stdout.isatty() else "md")
    if fmt_out == "term":
        print_terminal(groups, extra=extra)
    else:
        print(rendered[fmt_out])
    if incomplete:
        names = ", ".join(escaping.printable(str(p)) for p in incomplete[:5]) + (" ..." if len(incomplete) > 5 else "")
        print(f"({len(incomplete)} incomplete results.json skipped: unfinished, partial or malformed: {names})",
              file=sys.stderr)
    if not args.no_files:
        out = args.out or args.sweep_dirs[0]
        out.mkdir(parents=True, exist_ok=True)
        for fmt_name, suffix in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
            (out / f"table.{suffix}").write_text(rendered[fmt_name])
        plot = plot_lambda(groups, out / "fpr95_vs_lambda.png")
        print(f"wrote {escaping.printable(str(out))}/table.md, table.tex, table.csv"
              + (f", {plot.name}" if plot else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
