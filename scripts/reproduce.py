"""Reproduce the reference accuracy setups and write ``docs/results/accuracy.md``.

    PARM_DATA_DIR=../shared/data python scripts/reproduce.py --profile quick

The setups and the report live in :mod:`parm.bench.reproduce` (``--help`` for the options).
"""

from parm.bench.reproduce import main

if __name__ == "__main__":
    raise SystemExit(1 if main()[1] else 0)
