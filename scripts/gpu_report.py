"""A ``scripts/gpu_suite.sh`` run as ``docs/results/gpu_<date>.md``, issue 4's targets checked.

    python scripts/gpu_report.py <the fetched $OUT>

The logic lives in :mod:`parm.bench.gpu_report`.
"""

from parm.bench.gpu_report import main

if __name__ == "__main__":
    main()
