"""Seeded fault traces: slow periods (an on/off process with heavy-tailed slowdowns) and crashes.

A trace is drawn per instance *slot* from one seed, so every policy compared sees the same faults on
its i-th instance. Times are seconds from the run's start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultPlan:
    """Faults of one instance.

    Attributes:
        slow: ``(start_s, end_s, factor)`` periods; a batch served in one takes ``factor`` times as long.
        crashes: times at which the worker process dies (``os._exit``).
    """

    slow: tuple[tuple[float, float, float], ...] = ()
    crashes: tuple[float, ...] = ()

    def factor(self, t: float) -> float:
        """Slowdown factor at time ``t``."""
        for start, end, factor in self.slow:
            if start <= t < end:
                return factor
        return 1.0

    def to_dict(self) -> dict[str, list]:
        return {"slow": [list(p) for p in self.slow], "crashes": list(self.crashes)}

    @classmethod
    def from_dict(cls, d: dict) -> FaultPlan:
        return cls(tuple((float(a), float(b), float(c)) for a, b, c in d.get("slow", [])),
                   tuple(float(t) for t in d.get("crashes", [])))


@dataclass(frozen=True)
class FaultConfig:
    """How to draw traces.

    Args:
        slow_share: long-run fraction of time an instance spends slowed down.
        mean_slow_s: mean length of a slow period (exponential).
        min_factor: smallest slowdown factor; factors are Pareto(``alpha``) above it (heavy-tailed).
        alpha: Pareto shape (smaller = heavier tail).
        max_factor: cap on the factor.
        crash_rate_hz: crashes per instance per second (Poisson); 0 for none.
    """

    slow_share: float = 0.0
    mean_slow_s: float = 0.2
    min_factor: float = 4.0
    alpha: float = 1.5
    max_factor: float = 50.0
    crash_rate_hz: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.slow_share < 1:
            raise ValueError(f"slow_share must be in [0, 1), got {self.slow_share}.")
        if self.mean_slow_s <= 0 or self.min_factor < 1 or self.alpha <= 0 or self.crash_rate_hz < 0:
            raise ValueError("mean_slow_s > 0, min_factor >= 1, alpha > 0 and crash_rate_hz >= 0 are required.")


def draw_plan(config: FaultConfig, duration_s: float, seed: int, slot: int) -> FaultPlan:
    """The fault trace of instance ``slot`` for a run of ``duration_s`` seconds."""
    rng = random.Random(seed * 1_000_003 + slot)
    slow: list[tuple[float, float, float]] = []
    if config.slow_share > 0:
        mean_fast = config.mean_slow_s * (1 - config.slow_share) / config.slow_share
        t = rng.expovariate(1 / mean_fast)
        while t < duration_s:
            length = rng.expovariate(1 / config.mean_slow_s)
            factor = min(config.max_factor, config.min_factor * rng.paretovariate(config.alpha))
            slow.append((t, t + length, factor))
            t += length + rng.expovariate(1 / mean_fast)
    crashes: list[float] = []
    if config.crash_rate_hz > 0:
        t = rng.expovariate(config.crash_rate_hz)
        while t < duration_s:
            crashes.append(t)
            t += rng.expovariate(config.crash_rate_hz)
    return FaultPlan(tuple(slow), tuple(crashes))
