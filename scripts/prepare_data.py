#!/usr/bin/env python
"""Download (torchvision) or check (everything else) the paper's datasets.

    python scripts/prepare_data.py [NAME ...] [--data-dir DIR] [--no-download]

With no NAME, all of them. DIR defaults to $OE_DATA_DIR, else ./data (the configs' paths.data_dir).
Exit code 1 if anything is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from oe_lightning.data.prepare import ALL, prepare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *ALL], metavar="NAME",
                        help=f"any of: {', '.join(ALL)}")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("OE_DATA_DIR", "data")))
    parser.add_argument("--no-download", action="store_true", help="only check, download nothing")
    args = parser.parse_args()
    rows = prepare(list(args.names) or list(ALL), args.data_dir, download=not args.no_download)
    table = Table(title=f"datasets in {args.data_dir}")
    for col in ("dataset", "status", "what to do"):
        table.add_column(col)
    for name, status, detail in rows:
        table.add_row(name, f"[green]{status}[/]" if status == "ok" else f"[red]{status}[/]", detail)
    Console(width=140).print(table)
    return 0 if all(status == "ok" for _, status, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
