"""``python -m bench.depot_load``: the command line (bench/depot_load/cli.py)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
