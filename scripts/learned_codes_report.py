"""Write ``docs/results/learned_codes.md`` from the compare_codes and reproduce JSON records beside it (targets
checked).

    python scripts/learned_codes_report.py [--results docs/results]

The page lives in :mod:`parm.bench.learned_codes` (``--help`` for the options).
"""

from parm.bench.learned_codes import main

if __name__ == "__main__":
    main()
