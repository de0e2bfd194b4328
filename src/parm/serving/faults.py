"""Seeded fault traces: slow periods, pauses and crashes, drawn per instance slot.

A trace is drawn per instance *slot* from one seed, so every policy compared sees the same faults on
its i-th instance. Times are seconds from the run's start. Besides the generic slow process
(``FaultConfig.slow_share``), :data:`PAPER_FAMILIES` gives the fault families of the ParM paper:
background network transfers and co-located load (batches run ``factor`` times slower), pauses (the
instance makes no progress until the pause ends) and crashes (``FaultConfig.crash_rate_hz``).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field

PAUSED = 0.0
"""The ``factor`` of a pause period: a batch that starts in it waits for the pause to end."""


@dataclass(frozen=True)
class FaultPlan:
    """Faults of one instance.

    Attributes:
        slow: ``(start_s, end_s, factor)`` periods, sorted and disjoint; a batch served in one takes
            ``factor`` times as long, or, for ``factor == PAUSED``, starts when the period ends.
        crashes: times at which the worker process dies (``os._exit``).
    """

    slow: tuple[tuple[float, float, float], ...] = ()
    crashes: tuple[float, ...] = ()
    _starts: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", [p[0] for p in self.slow])

    def _period(self, t: float) -> tuple[float, float, float] | None:
        i = bisect.bisect_right(self._starts, t) - 1
        return self.slow[i] if i >= 0 and t < self.slow[i][1] else None

    def factor(self, t: float) -> float:
        """Slowdown factor at time ``t`` (``PAUSED`` inside a pause)."""
        period = self._period(t)
        return 1.0 if period is None else period[2]

    def batch_time(self, t: float, busy_s: float) -> float:
        """How long a batch that needs ``busy_s`` when healthy takes if it starts at ``t``."""
        period = self._period(t)
        if period is None:
            return busy_s
        if period[2] == PAUSED:
            return period[1] - t + busy_s
        return busy_s * period[2]

    def to_dict(self) -> dict[str, list]:
        return {"slow": [list(p) for p in self.slow], "crashes": list(self.crashes)}

    @classmethod
    def from_dict(cls, d: dict) -> FaultPlan:
        return cls(tuple((float(a), float(b), float(c)) for a, b, c in d.get("slow", [])),
                   tuple(float(t) for t in d.get("crashes", [])))


@dataclass(frozen=True)
class FaultFamily:
    """One kind of slow period: an on/off process on its own seeded stream.

    Args:
        name: e.g. ``"network"``, ``"colocated"``, ``"pause"``.
        share: long-run fraction of time an instance spends in this family's periods.
        mean_s: mean period length (exponential).
        min_factor: smallest slowdown factor; ``PAUSED`` (0) makes every period a pause.
        alpha: Pareto shape of the factor above ``min_factor`` (``math.inf``: always ``min_factor``).
        max_factor: cap on the factor.
    """

    name: str
    share: float
    mean_s: float
    min_factor: float = 2.0
    alpha: float = math.inf
    max_factor: float = 50.0

    def __post_init__(self) -> None:
        if not 0 < self.share < 1 or self.mean_s <= 0:
            raise ValueError(f"fault family {self.name!r}: share must be in (0, 1) and mean_s > 0, "
                             f"got share={self.share}, mean_s={self.mean_s}.")
        if self.min_factor != PAUSED and self.min_factor < 1:
            raise ValueError(f"fault family {self.name!r}: min_factor must be >= 1 (or PAUSED = 0), "
                             f"got {self.min_factor}.")

    def draw_factor(self, rng: random.Random) -> float:
        if self.min_factor == PAUSED or math.isinf(self.alpha):
            return self.min_factor
        return min(self.max_factor, self.min_factor * rng.paretovariate(self.alpha))


PAPER_FAMILIES = (
    # A 128-256 MB background transfer shares the instance's NIC and memory bandwidth for ~0.2 s.
    FaultFamily("network", share=0.03, mean_s=0.2, min_factor=2.0, alpha=3.0, max_factor=6.0),
    # A co-located job takes CPU/accelerator time for seconds at a time, heavy-tailed in intensity.
    FaultFamily("colocated", share=0.03, mean_s=1.0, min_factor=2.0, alpha=1.5, max_factor=20.0),
    # Stop-the-world pauses (GC, VM steal, swapping): no progress for tens of milliseconds.
    FaultFamily("pause", share=0.005, mean_s=0.05, min_factor=PAUSED),
)
"""The fault families of the ParM paper's evaluation, in the form this package injects them."""


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
        families: further slow-period families (e.g. :data:`PAPER_FAMILIES`), each on its own seeded
            stream; a period overlapping an earlier one of the same trace is dropped.
    """

    slow_share: float = 0.0
    mean_slow_s: float = 0.2
    min_factor: float = 4.0
    alpha: float = 1.5
    max_factor: float = 50.0
    crash_rate_hz: float = 0.0
    families: tuple[FaultFamily, ...] = ()

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
        generic = FaultFamily("slow", config.slow_share, config.mean_slow_s, config.min_factor, config.alpha,
                              config.max_factor)
        slow = _periods(generic, duration_s, rng)
    for n, family in enumerate(config.families):
        slow += _periods(family, duration_s, random.Random(f"{seed}/{slot}/{n}/{family.name}"))
    crashes: list[float] = []
    if config.crash_rate_hz > 0:
        t = rng.expovariate(config.crash_rate_hz)
        while t < duration_s:
            crashes.append(t)
            t += rng.expovariate(config.crash_rate_hz)
    return FaultPlan(_disjoint(slow), tuple(crashes))


def _periods(family: FaultFamily, duration_s: float, rng: random.Random) -> list[tuple[float, float, float]]:
    mean_fast = family.mean_s * (1 - family.share) / family.share
    periods = []
    t = rng.expovariate(1 / mean_fast)
    while t < duration_s:
        length = rng.expovariate(1 / family.mean_s)
        periods.append((t, t + length, family.draw_factor(rng)))
        t += length + rng.expovariate(1 / mean_fast)
    return periods


def _disjoint(periods: list[tuple[float, float, float]]) -> tuple[tuple[float, float, float], ...]:
    kept: list[tuple[float, float, float]] = []
    for period in sorted(periods):
        if not kept or period[0] >= kept[-1][1]:
            kept.append(period)
    return tuple(kept)
