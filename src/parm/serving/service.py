"""Per-batch service times: measured on real forward passes, fitted, and drawn by workers and simulator.

:func:`measure_service` times real batches of the model a worker serves (the worker's own code path:
:func:`~parm.serving.worker.load_instance_model`, one thread, ``inference_mode``). :meth:`ServiceTime.fit`
fits a shifted lognormal to them: a batch of b requests takes ``median(b) * (floor + exp(mu + sigma*Z))``,
with ``median(b) = median_s + per_item_s * (b - 1)``. :meth:`ServiceTime.empirical` keeps the measured
ratios to the median instead and draws from them: a sub-millisecond pass on a CPU is bimodal (cache,
frequency) with rare preemptions, and the lognormal's shift is ill-conditioned on it (two runs minutes
apart, with the same p50 and p99, fitted sigma 0.28 and 1.30), so the maps draw from the measured table.
:meth:`ServiceTime.scaled` keeps the measured shape and moves its median (an accelerator running a larger
model has the same jitter, relative to its median, as these passes; that is the assumption, state it
with any number made with it).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ServiceTime:
    """Shifted-lognormal batch service time.

    Args:
        median_s: median time of a batch of one.
        per_item_s: median extra time per further request in a batch.
        floor: the fraction of the median no batch beats (the fixed part of a forward pass).
        mu, sigma: lognormal parameters of the part above ``floor`` (relative to the median).
        table: measured ratios to the median at evenly spaced quantiles (sorted); when set, draws come from
            it (interpolated) instead of the lognormal.
    """

    median_s: float
    per_item_s: float = 0.0
    floor: float = 0.8
    mu: float = math.log(0.2)
    sigma: float = 0.3
    table: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.median_s <= 0 or self.per_item_s < 0 or not 0 <= self.floor < 1 or self.sigma < 0:
            raise ValueError(f"a service time needs median_s > 0, per_item_s >= 0, 0 <= floor < 1 and sigma >= 0; "
                             f"got {self}.")
        if self.table and (len(self.table) < 2 or min(self.table) <= 0 or list(self.table) != sorted(self.table)):
            raise ValueError(f"a service-time table needs >= 2 sorted positive ratios, got {len(self.table)} "
                             f"starting {self.table[:3]}; build it with ServiceTime.empirical(samples).")

    def _ratio(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u * (len(self.table) - 1), np.arange(len(self.table)), self.table)

    def draw(self, rng: np.random.Generator, size: int = 1, batch: int = 1) -> np.ndarray:
        """``(size,)`` batch times in seconds for batches of ``batch`` requests."""
        median = self.median_s + self.per_item_s * (batch - 1)
        if self.table:
            return median * self._ratio(rng.random(size))
        return median * (self.floor + np.exp(self.mu + self.sigma * rng.standard_normal(size)))

    def mean_s(self, batch: int = 1) -> float:
        """Expected time of a batch of ``batch`` requests."""
        median = self.median_s + self.per_item_s * (batch - 1)
        if self.table:  # the mean of the piecewise-linear inverse CDF
            t = np.asarray(self.table)
            return median * float(((t[1:] + t[:-1]) / 2).mean())
        return median * (self.floor + math.exp(self.mu + self.sigma**2 / 2))

    def quantile_s(self, q: float, batch: int = 1) -> float:
        """The ``q`` quantile (0 < q < 1) of a batch of ``batch`` requests."""
        from statistics import NormalDist

        median = self.median_s + self.per_item_s * (batch - 1)
        if self.table:
            return median * float(self._ratio(np.asarray(q)))
        return median * (self.floor + math.exp(self.mu + self.sigma * NormalDist().inv_cdf(q)))

    def scaled(self, median_s: float) -> ServiceTime:
        """The same shape with the batch-of-one median moved to ``median_s``."""
        ratio = median_s / self.median_s
        return ServiceTime(median_s, self.per_item_s * ratio, self.floor, self.mu, self.sigma, self.table)

    def to_dict(self) -> dict:
        return {**asdict(self), "table": list(self.table)}

    @classmethod
    def from_dict(cls, d: dict) -> ServiceTime:
        table = tuple(float(x) for x in d.get("table", ()))
        return cls(**{k: float(v) for k, v in d.items() if k != "table"}, table=table)

    @classmethod
    def empirical(cls, samples: dict[int, np.ndarray], points: int = 1000) -> ServiceTime:
        """The measured distribution itself: ``points`` quantiles of every batch's time over its size's median
        (``median(b)`` as in :meth:`fit`); batch size 1 is required."""
        fit = cls.fit(samples)
        ratios = np.concatenate([samples[b] / (fit.median_s + fit.per_item_s * (b - 1)) for b in sorted(samples)])
        table = np.maximum.accumulate(np.quantile(ratios, np.linspace(0, 1, points)))
        return cls(fit.median_s, fit.per_item_s, 0.0, 0.0, 0.0, tuple(float(x) for x in table))

    @classmethod
    def fit(cls, samples: dict[int, np.ndarray]) -> ServiceTime:
        """Fit to measured batch times ``{batch size: (n,) seconds}``; batch size 1 is required."""
        if 1 not in samples or len(samples[1]) < 20:
            raise ValueError(f"fitting a service time needs >= 20 samples of batch size 1, got sizes "
                             f"{ {b: len(s) for b, s in samples.items()} }.")
        sizes = sorted(samples)
        medians = np.array([np.median(samples[b]) for b in sizes])
        per_item = float(max(0.0, np.polyfit(sizes, medians, 1)[0])) if len(sizes) > 1 else 0.0
        median = float(medians[0])
        ratios = np.concatenate([samples[b] / (median + per_item * (b - 1)) for b in sizes])
        floor = _floor(ratios)
        logs = np.log(ratios - floor)
        # Median and a robust spread (the 50-90% quantile gap), so a few descheduled passes do not set sigma.
        mu = float(np.median(logs))
        sigma = float((np.quantile(logs, 0.9) - mu) / 1.2816)
        return cls(median, per_item, floor, mu, max(sigma, 0.0))


def _floor(ratios: np.ndarray) -> float:
    """The shift that makes log(ratio - shift) most symmetric (10/50/90% quantiles): a lognormal's is."""
    best, best_skew = 0.0, math.inf
    for floor in np.linspace(0.0, min(0.95, float(ratios.min())) * 0.995, 60):
        q10, q50, q90 = np.quantile(np.log(ratios - floor), (0.1, 0.5, 0.9))
        skew = abs((q90 - q50) - (q50 - q10))
        if skew < best_skew:
            best, best_skew = float(floor), skew
    return best


def measure_service(spec: object, batches: tuple[int, ...] = (1, 2, 4, 8), repeats: int = 400,
                    warmup: int = 50) -> dict[int, np.ndarray]:
    """Time real forward passes of the model a worker with ``spec`` serves (a :class:`WorkerSpec`).

    Args:
        spec: the worker's spec (checkpoint, parity index, threads).
        batches: batch sizes to time.
        repeats: timed batches per size.
        warmup: untimed batches first.

    Returns:
        ``{batch size: (repeats,) seconds}``.
    """
    import torch

    from parm.serving.worker import WorkerSpec, load_instance_model

    if not isinstance(spec, WorkerSpec):
        raise TypeError(f"measure_service needs a WorkerSpec, got {type(spec).__name__}.")
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        model = load_instance_model(spec)
        shape = _input_shape(spec)
        out: dict[int, np.ndarray] = {}
        with torch.inference_mode():
            for b in batches:
                x = torch.randn(b, *shape)
                for _ in range(warmup):
                    model(x)
                times = np.empty(repeats)
                for i in range(repeats):
                    start = time.perf_counter()
                    model(x)
                    times[i] = time.perf_counter() - start
                out[b] = times
        return out
    finally:
        torch.set_num_threads(threads)


def _input_shape(spec: object) -> tuple[int, ...]:
    from parm.models.checkpoint import load_model

    checkpoint = getattr(spec, "checkpoint")  # noqa: B009 - WorkerSpec, checked by the caller
    if getattr(spec, "parity_index") is None:  # noqa: B009
        _, header = load_model(checkpoint)
        return tuple(header["spec"]["input_shape"])
    from parm.artifacts import load_parity

    return tuple(load_parity(checkpoint).code.encoder.input_shape)
