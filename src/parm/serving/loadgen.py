"""Open-loop Poisson load against a frontend, and the latency summary both bench and simulator report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from parm.serving.frontend import Frontend
from parm.tasks import Task, get_task

PERCENTILES = (50, 90, 99, 99.5, 99.9)


@dataclass
class RunResult:
    """Per-query outcomes of one run: latency (s, NaN if lost), degraded flag, F's answer, loop lag,
    and run-level counts (e.g. ``extra_load``: requests sent per query beyond one).

    ``outputs`` holds each answered query's output vector ``(n, D)`` (NaN rows for lost queries); the
    task (:mod:`parm.tasks`) decides what a correct answer is, so boxes are scored as boxes.
    """

    latency: np.ndarray
    degraded: np.ndarray
    outputs: np.ndarray
    lag: dict[str, float] | None = None
    counts: dict[str, float] | None = None

    def summary(self, labels: np.ndarray | None = None, task: str | Task = "classification") -> dict[str, float]:
        """p50..p99.9 and mean in ms, share degraded, accuracy vs ``labels`` (class indices, or boxes
        ``(n, 4)`` scored by IoU >= 0.75 for ``task="regression"``), lost queries."""
        ok = ~np.isnan(self.latency)
        lat = self.latency[ok] * 1e3
        out = {f"p{p:g}": float(np.percentile(lat, p)) if lat.size else float("nan") for p in PERCENTILES}
        out["mean"] = float(lat.mean()) if lat.size else float("nan")
        out["degraded"] = float(self.degraded[ok].mean()) if lat.size else 0.0
        out["lost"] = int((~ok).sum())
        if labels is not None:
            hits = get_task(task).hits(torch.as_tensor(self.outputs[ok]), torch.as_tensor(labels[ok]))
            out["accuracy"] = float(hits.float().mean()) if lat.size else float("nan")
        return {**out, **(self.lag or {}), **(self.counts or {})}


async def run_poisson(frontend: Frontend, queries: torch.Tensor, rate_hz: float, seed: int,
                      on_answer: Callable[[], None] | None = None, deadline_s: float | None = None) -> RunResult:
    """Send ``queries`` (``(n, *input_shape)``) at Poisson times of rate ``rate_hz``, open loop.

    ``deadline_s``: a query still unanswered this long after the run started is given up and counted lost
    (None: wait for every answer), so a stuck request shows in the results instead of hanging the run.
    """
    n = len(queries)
    gaps = np.random.default_rng(seed).exponential(1 / rate_hz, size=n)
    arrivals = np.cumsum(gaps) - gaps[0]
    latency = np.full(n, np.nan)
    degraded = np.zeros(n, dtype=bool)
    outputs: list[torch.Tensor | None] = [None] * n

    async def one(i: int) -> None:
        try:
            answer = await frontend.predict(queries[i])
        except Exception:  # noqa: BLE001 - a lost query is recorded, whatever the cause
            return
        finally:
            if on_answer is not None:
                on_answer()
        latency[i] = answer.latency_s
        degraded[i] = answer.degraded
        outputs[i] = answer.output.float().flatten()

    tasks = []
    monitor = LoopLag()
    start = time.perf_counter()
    for i, t in enumerate(arrivals):
        delay = start + t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    if deadline_s is None:
        await asyncio.gather(*tasks)
    else:
        _, stuck = await asyncio.wait(tasks, timeout=max(0.0, start + deadline_s - time.perf_counter()))
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
    dim = next((o.numel() for o in outputs if o is not None), 1)
    table = np.full((n, dim), np.nan, dtype=np.float32)
    for i, output in enumerate(outputs):
        if output is not None:
            table[i] = output.cpu().numpy()
    return RunResult(latency, degraded, table, monitor.stop())


class LoopLag:
    """Oversleep of a 1 ms tick: how long the frontend's event loop (or the whole machine) stalled.

    Injected faults slow workers, never the frontend; a large lag marks a stall of this process or of
    the machine (other jobs on the cores), which the simulator does not model.
    """

    def __init__(self, tick_s: float = 0.001) -> None:
        self.tick_s = tick_s
        self.lags_ms: list[float] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.tick_s)
            self.lags_ms.append((time.perf_counter() - t0 - self.tick_s) * 1e3)

    def stop(self) -> dict[str, float]:
        """``{"loop_lag_p99_ms", "loop_lag_max_ms"}`` since start."""
        self._task.cancel()
        lags = np.asarray(self.lags_ms or [0.0])
        return {"loop_lag_p99_ms": float(np.percentile(lags, 99)), "loop_lag_max_ms": float(lags.max())}


def format_table(rows: Sequence[dict]) -> str:
    """Fixed-width table of summaries (each row has ``policy`` and ``rate`` keys)."""
    cols = ["policy", "rate", "p50", "p90", "p99", "p99.5", "p99.9", "mean", "degraded", "accuracy", "lost"]
    lines = ["  ".join(f"{c:>9}" for c in cols)]
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:>9.4f}" if c in ("degraded", "accuracy") and isinstance(v, float)
                         else f"{v:>9.2f}" if isinstance(v, float) else f"{v!s:>9}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
