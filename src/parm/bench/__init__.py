"""Training benchmarks: parm against the reference algorithm, a plain loop and the speed of light.

- :mod:`parm.bench.harness`: one timing harness (warm-up, synchronisation, compile setting) for all.
- :mod:`parm.bench.loops`: the contenders other than parm, and the time-to-accuracy clock.
- :mod:`parm.bench.training`: the benchmark itself (``scripts/bench_train.py`` is its CLI).
- :mod:`parm.bench.gpu_report`: a ``scripts/gpu_suite.sh`` run as a results page, issue 4's targets checked.
"""
