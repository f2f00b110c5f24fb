#!/usr/bin/env python
"""Thin wrapper of ``oe-table`` (oe_lightning.table) for a checkout without the console script.

    python scripts/oe_table.py outputs/paper/cifar10 --format latex
"""

import sys

from oe_lightning.table import main

if __name__ == "__main__":
    sys.exit(main())
