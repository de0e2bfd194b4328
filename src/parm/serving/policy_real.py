"""The policy map on real worker processes (local backend), with its simulator replay.

Per k: start N + N*r/k instances of F and N*r/k of F_P (``max_batch`` 1, each batch at least a time drawn
from the service-time distribution fitted to real forward passes), calibrate the simulator's cost
per request (a delay) and the occupancy per request (time a worker holds it beyond its service time) on
short fault-free ``equal`` runs, tune every policy in the simulator on the tuning
trace (:func:`parm.serving.policy_map.tune_all`), then run each policy at its tuned setting on the real
workers on the test trace, and replay every real cell in the simulator (same seed: same arrivals,
fault trace per instance slot and service draws) so that crossovers can be compared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from parm.serving.faults import FaultConfig, FaultPlan, draw_plan
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.instance import InstancePool
from parm.serving.loadgen import RunResult, run_poisson
from parm.serving.local import LocalBackend, LocalInstance
from parm.serving.policy_map import (
    CODED,
    MAP_POLICIES,
    UTILISATIONS,
    MapSetup,
    cell_row,
    hedge_delay_s,
    pooled,
    replay_cell,
    setup_to_dict,
    tune_all,
)
from parm.serving.service import ServiceTime
from parm.serving.sim import simulate
from parm.serving.worker import WorkerSpec

MODES = {"none": "plain", "equal": "plain", "hedge": "hedge", "hedge-spare": "hedge-spare", "parm": "parm",
         "parm-hedge": "parm-hedge"}


@dataclass(frozen=True)
class RealPlan:
    """What the real map runs.

    Args:
        n: N model instances (``none``, parm policies); the others get N + N*r/k.
        utilisations: fractions of the Equal-Resources capacity.
        policies: which of :data:`~parm.serving.policy_map.MAP_POLICIES`.
        cell_s: seconds of arrivals per real cell (queries = rate * cell_s, at least ``min_queries``).
        min_queries: fewest queries per real cell.
        faults: the fault families (one trace per instance slot, shared by every policy).
        restart_s: the simulator's crash downtime (a real worker restart: spawn, import torch, load).
        tune_queries: queries per simulated tuning cell.
        capacity: outstanding requests per instance before dispatch waits.
        degraded_budget: most degraded answers a tuned coded setting may give without faults.
        repeats: runs per real cell, on test seeds ``test_seed + i`` (other arrivals, faults and draws); the
            cell reports them pooled, and each run's p99.9 (``p999_runs``) as the cell's run-to-run spread.
    """

    n: int = 4
    utilisations: tuple[float, ...] = UTILISATIONS
    policies: tuple[str, ...] = MAP_POLICIES
    cell_s: float = 3.5
    min_queries: int = 400
    faults: FaultConfig = FaultConfig()
    restart_s: float = 3.0
    tune_queries: int = 4000
    capacity: int = 64
    degraded_budget: float = 0.01
    repeats: int = 1


def pools(instances: Sequence[LocalInstance], n: int, extra: int) -> dict[str, list[LocalInstance]]:
    """Instances per policy, in fault-slot order (model slots first, then parity slots)."""
    models = [i for i in instances if i.role == "model"]
    parities = [i for i in instances if i.role == "parity"]
    full = models[: n + extra]
    return {"none": models[:n], "equal": full, "hedge": full, "hedge-spare": full, "parm": models[:n] + parities,
            "parm-hedge": models[:n] + parities}


async def run_cell(backend: LocalBackend, pool: list[LocalInstance], config: FrontendConfig, code: object,
                   queries: torch.Tensor, rate: float, seed: int, faults: FaultConfig,
                   capacity: int = 64) -> tuple[RunResult, dict[str, float]]:
    """One real run: arm each slot's fault trace, send ``queries`` at Poisson ``rate``, disarm, drain."""
    duration = len(queries) / rate + 10
    frontend = Frontend(InstancePool(pool, capacity), code, config)  # type: ignore[arg-type]
    restarts = sum(i.restarts for i in pool)
    epoch = time.time()
    for slot, inst in enumerate(pool):
        inst.set_faults(draw_plan(faults, duration, seed, slot), epoch)
    # A stuck request (seen once in a parm cell past capacity, with crashes) is counted lost, not waited on.
    result = await run_poisson(frontend, queries, rate, seed, deadline_s=duration + 30)
    await frontend.close()
    for inst in backend.instances:
        inst.set_faults(FaultPlan(), time.time())
    await asyncio.sleep(0.5)  # let cancelled stragglers drain before the next run
    s = frontend.stats
    return result, {"extra_load": s.requests / max(1, s.queries) - 1, "hedged": s.hedged, "resent": s.resent,
                    "instance_errors": s.instance_errors, "restarts": sum(i.restarts for i in pool) - restarts}


class RealMap:
    """Runs the map for one (F, F_P) pair; ``progress`` receives one line per cell."""

    def __init__(self, base: str, parity: str, plan: RealPlan, service: ServiceTime, parity_service: ServiceTime,
                 queries: torch.Tensor, labels: np.ndarray, progress: Callable[[str], None] = print) -> None:
        from parm.artifacts import load_parity

        self.code = load_parity(parity).code
        self.k, self.r = self.code.spec.k, self.code.spec.r
        self.plan, self.queries, self.labels, self.progress = plan, queries, labels, progress
        self.extra = plan.n * self.r // self.k
        self.setup = MapSetup(k=self.k, r=self.r, n=plan.n, service=service, parity_service=parity_service,
                              faults=plan.faults, restart_s=plan.restart_s, tune_queries=plan.tune_queries,
                              test_queries=0, degraded_budget=plan.degraded_budget)
        worker = {"max_batch": 1, "service": service}
        specs = [WorkerSpec(f"model-{i}", base, **worker) for i in range(plan.n + self.extra)]  # type: ignore[arg-type]
        specs += [WorkerSpec(f"parity-{i}", parity, parity_index=i % self.r, max_batch=1, service=parity_service)
                  for i in range(self.extra)]
        self.backend = LocalBackend(specs)

    async def run(self) -> dict:
        await self.backend.start()
        try:
            await self._calibrate()
            real, sim = [], []
            for u in self.plan.utilisations:
                chosen = tune_all(self.setup, u, self.plan.policies)
                for policy in self.plan.policies:
                    a, b = await self._cell(u, policy, chosen[policy])
                    real.append(a)
                    sim.append(b)
        finally:
            await self.backend.stop()
        return {"k": self.k, "r": self.r, "n": self.plan.n, "net_ms": self.setup.net_s * 1e3,
                "occupancy_ms": self.setup.occupancy_s * 1e3,
                "setup": setup_to_dict(self.setup), "real": real, "sim": sim}

    async def _calibrate(self) -> None:
        """The simulator's two per-request costs, from fault-free ``equal`` runs on the real workers.

        Occupancy (time a worker holds a request beyond its service time: it queues) from a run offered 1.5x
        the capacity: n instances served ``count`` queries in T, so each took ``T * n / count``. Then the
        cost per request (a pure delay) = the real median at the lowest utilisation minus the simulator's
        with that occupancy and no cost.
        """
        pool = pools(self.backend.instances, self.plan.n, self.extra)["equal"]
        config = FrontendConfig(policy="plain")

        async def equal(u: float, count: int) -> RunResult:
            result, _ = await run_cell(self.backend, pool, config, self.code, self.queries[:count],
                                       self.setup.rate_hz(u), self.setup.tune_seed, FaultConfig(), self.plan.capacity)
            return result

        u, count = min(self.plan.utilisations), min(len(self.queries), 300)
        await equal(u, count)  # warms the workers up (first passes, page faults); discarded
        busy = min(len(self.queries), int(2 * self.setup.rate_hz(1.0)))
        saturated = await equal(1.5, busy)
        gaps = np.random.default_rng(self.setup.tune_seed).exponential(1 / self.setup.rate_hz(1.5), size=busy)
        span = float(np.nanmax(np.cumsum(gaps) - gaps[0] + saturated.latency))
        occupancy = max(0.0, span * len(pool) / busy - self.setup.service.mean_s())
        zero = replace(self.setup, net_s=0.0, occupancy_s=occupancy)
        sim = simulate(zero.sim_config("equal", u, {}, self.setup.tune_seed, count, faults=FaultConfig())).summary()
        net = max(0.0, ((await equal(u, count)).summary()["p50"] - sim["p50"]) / 1e3)
        self.setup = replace(zero, net_s=net)
        self.progress(f"k={self.k}: occupancy per request {occupancy * 1e3:.3f} ms, cost per request "
                      f"{net * 1e3:.3f} ms")

    async def _cell(self, u: float, policy: str, chosen: dict) -> tuple[dict, dict]:
        knobs = chosen["knobs"]
        rate = self.setup.rate_hz(u)
        count = int(min(len(self.queries), max(self.plan.min_queries, rate * self.plan.cell_s)))
        config = FrontendConfig(policy=MODES[policy], decode_grace_s=knobs.get("grace_ms", 0.0) / 1e3,  # type: ignore[arg-type]
                                hedge_delay_s=hedge_delay_s(knobs),
                                group_timeout_s=self.setup.group_timeout_s)
        pool = pools(self.backend.instances, self.plan.n, self.extra)[policy]
        seeds = [self.setup.test_seed + i for i in range(self.plan.repeats)]
        runs = [await run_cell(self.backend, pool, config, self.code, self.queries[:count], rate, seed,
                               self.plan.faults, self.plan.capacity) for seed in seeds]
        labels = np.tile(self.labels[:count], len(seeds))
        result = pooled([replace(r, counts=c) for r, c in runs])
        summary: dict = {**result.summary(labels), "queries": count * len(seeds),
                         "p999_runs": [r.summary()["p99.9"] for r, _ in runs]}
        ok = ~np.isnan(result.latency) & result.degraded
        summary["degraded_accuracy"] = (float((result.outputs[ok].argmax(axis=1) == labels[ok]).mean())
                                        if ok.any() else None)
        clean = None
        if policy in CODED:
            short = self.queries[: max(self.plan.min_queries, count // 2)]
            res, _ = await run_cell(self.backend, pool, config, self.code, short, rate, seeds[0], FaultConfig(),
                                    self.plan.capacity)
            clean = res.summary()
        sim_summary = replay_cell(self.setup, policy, u, knobs, len(seeds), count)
        self.progress(f"k={self.k} u={u:.2f} {policy:>11} {knobs}: real p99.9 {summary['p99.9']:.2f} ms "
                      f"(runs {summary['p999_runs']}), sim {sim_summary['p99.9']:.2f} ms, lost {summary['lost']}")
        return (cell_row(self.setup, u, policy, chosen, summary, clean),
                cell_row(self.setup, u, policy, chosen, sim_summary, None))

