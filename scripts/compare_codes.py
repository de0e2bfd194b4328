"""Compare parm parity models, Berrut codes and the default answer on the same F, test set and groups.

    python scripts/compare_codes.py --data mnist --epochs 3
    python scripts/compare_codes.py --report-only       # rebuild docs/results/codes.md from the JSONs

The comparison lives in :mod:`parm.bench.codes` (``--help`` for the options).
"""

from parm.bench.codes import main

if __name__ == "__main__":
    main()
