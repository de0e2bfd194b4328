"""Compare finished runs: a table, Markdown and PNG plots from local run folders alone.

    python scripts/compare_runs.py multirun/<date>/<time> --out docs/results/cmp

The comparison lives in :mod:`parm.bench.compare_runs` (``--help`` for the options).
"""

from parm.bench.compare_runs import main

if __name__ == "__main__":
    main()
