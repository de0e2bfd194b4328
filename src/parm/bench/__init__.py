"""Benchmarks, reproductions and comparisons, importable; ``scripts/`` holds their thin CLIs.

- :mod:`parm.bench.harness`: one timing harness (warm-up, synchronisation, compile setting) for all.
- :mod:`parm.bench.loops`: the training contenders other than parm, and the time-to-accuracy clock.
- :mod:`parm.bench.training`: the training benchmark (``scripts/bench_train.py``).
- :mod:`parm.bench.gpu_report`: a ``scripts/gpu_suite.sh`` run as a results page, issue 4's targets checked.
- :mod:`parm.bench.codes`: parm codes vs Berrut, ApproxIFER and the default answer (``scripts/compare_codes.py``).
- :mod:`parm.bench.reproduce`: the reference accuracy setups (``scripts/reproduce.py``).
- :mod:`parm.bench.learned_codes`: the learned-codes page (``scripts/learned_codes_report.py``).
- :mod:`parm.bench.compare_runs`: tables and plots from finished runs (``scripts/compare_runs.py``).
- :mod:`parm.bench.pages`: renderers of results-page blocks (:mod:`parm.results`).
"""
