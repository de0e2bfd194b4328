"""Parity-training throughput and time to accuracy: parm vs the reference, plain and speed-of-light loops.

    PARM_DATA_DIR=../shared/data python scripts/bench_train.py --out outputs/bench.json

The benchmark lives in :mod:`parm.bench.training` (``--help`` for the options).
"""

from parm.bench.training import main

if __name__ == "__main__":
    main()
