"""``bench_latency.py --backend ray``: the same load and faults on Ray Serve, on a local multi-node cluster.

Every scenario runs on one :class:`~parm.serving.raycluster.LocalCluster` (a head and ``nodes``
one-CPU nodes on 127.0.0.1) with one deployment of N + N·r/k instances of F and N·r/k parity
instances (placed by node), so each policy sees the same replicas and the same seeded fault trace:

- ``none``: no faults; the local backend (worker processes) serves the same policies and queries
  first, in the same run, as the reference for CPU per query and p99.9.
- ``slow``: slow periods (``--slow-share``...) as in the local benchmark.
- ``crash``: replica processes exit at seeded times (``--crash-rate``, per instance and second).
- ``kill``: one model replica is killed from outside (SIGKILL) a quarter into the run.
- ``node``: the node holding the first model replica is removed a quarter into the run (last: the
  replicas it held restart elsewhere).

CPU per query is the CPU time of this process and every process it started (workers, or the whole
Ray cluster: GCS, raylets, Serve controller, replicas) during a run, over the queries answered.
:func:`render` turns the JSON into the Markdown page that docs link to.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from parm.coding import Code
from parm.serving.faults import FaultConfig, draw_plan
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.instance import Instance, InstancePool
from parm.serving.loadgen import run_poisson
from parm.serving.local import LocalBackend
from parm.serving.proccpu import cpu_snapshot, cpu_split, thread_snapshot, thread_split
from parm.serving.raycluster import LocalCluster
from parm.serving.rayserve import RayBackend, RayInstance
from parm.serving.records import Policy
from parm.serving.worker import WorkerSpec

SCENARIOS = ("none", "slow", "crash", "kill", "node")


@dataclass(frozen=True)
class RayBenchConfig:
    """What to run (the benchmark's command-line settings)."""

    rates: Sequence[float]
    policies: Sequence[str]
    scenarios: Sequence[str]
    n_model: int = 4
    nodes: int = 3
    grace_ms: float = 2.0
    hedge_ms: float = 10.0
    group_timeout_ms: float = 50.0
    capacity: int = 64
    worker_batch: int = 8
    service_ms: float = 5.0
    faults: FaultConfig = FaultConfig(slow_share=0.05)
    crash_rate: float = 0.05
    seed: int = 0


def pools(instances: Sequence[Instance], n: int, extra: int) -> dict[str, list[Instance]]:
    """Instances per policy, in fault-slot order (as the local benchmark's)."""
    models = [i for i in instances if i.role == "model"]
    parities = [i for i in instances if i.role == "parity"]
    return {"none": models[:n], "equal": models[: n + extra], "hedge": models[: n + extra],
            "parm": models[:n] + parities[:extra]}


def specs(base: str, parity: str, cfg: RayBenchConfig, r: int, k: int) -> list[WorkerSpec]:
    extra = cfg.n_model * r // k
    worker = {"max_batch": cfg.worker_batch, "service_time_s": cfg.service_ms / 1e3}
    out = [WorkerSpec(f"model-{i}", base, **worker) for i in range(cfg.n_model + extra)]  # type: ignore[arg-type]
    return out + [WorkerSpec(f"parity-{i}", parity, parity_index=i % r, **worker)  # type: ignore[arg-type]
                  for i in range(extra)]


async def _cell(instances: Sequence[Instance], code: Code, cfg: RayBenchConfig, policy: str, rate: float,
                queries: torch.Tensor, on_change: list[Any] | None,
                fault: Callable[[], Any] | None) -> tuple[dict[str, Any], Frontend]:
    mode: Policy = "parm" if policy == "parm" else "hedge" if policy == "hedge" else "plain"
    config = FrontendConfig(policy=mode, decode_grace_s=cfg.grace_ms / 1e3 if policy == "parm" else 0.0,
                            hedge_delay_s=cfg.hedge_ms / 1e3, group_timeout_s=cfg.group_timeout_ms / 1e3)
    pool = InstancePool(instances, cfg.capacity)
    if on_change is not None:
        on_change[:] = [pool.notify]
    frontend = Frontend(pool, code, config)
    load0, cpu0, t0 = os.getloadavg()[0], cpu_snapshot(), time.perf_counter()
    # Threads of the frontend's process and the replicas: which step of the call path costs what.
    kinds = {pid: kind for pid, (kind, _) in cpu0.items() if kind in ("driver", "serve replicas", "local workers")}
    threads0 = thread_snapshot(list(kinds))
    fault_task = None
    if fault is not None:
        fault_task = asyncio.get_running_loop().call_later(len(queries) / rate / 4, fault)
    limit = len(queries) / rate + 180
    try:
        result = await asyncio.wait_for(run_poisson(frontend, queries, rate, cfg.seed), limit)
    except asyncio.TimeoutError as e:
        raise RuntimeError(f"{policy} at {rate:g} q/s: queries still unanswered after {limit:.0f} s") from e
    split, wall = cpu_split(cpu0, cpu_snapshot()), time.perf_counter() - t0
    threads = thread_split(threads0, thread_snapshot(list(kinds)), kinds)
    cpu = sum(split.values())
    await frontend.close()
    if fault_task is not None:
        fault_task.cancel()
    answered = max(1, int((~np.isnan(result.latency)).sum()))
    extra = {"cpu_ms_per_query": cpu / answered * 1e3, "answered": answered, "wall_s": wall,
             "cpu_ms_by_kind": {kind: used / answered * 1e3 for kind, used in split.items()}, "load_start": load0,
             "cpu_ms_by_thread": {name: used / answered * 1e3 for name, used in threads.items() if used > 0},
             "load_end": os.getloadavg()[0]}
    return {"result": result, **extra}, frontend


def _row(backend: str, scenario: str, policy: str, rate: float, cell: dict[str, Any], labels: np.ndarray,
         frontend: Frontend) -> dict[str, Any]:
    s = frontend.stats
    summary = cell["result"].summary(labels)
    return {"backend": backend, "scenario": scenario, "policy": policy, "rate": rate, **summary,
            "cpu_ms_per_query": cell["cpu_ms_per_query"], "cpu_ms_by_kind": cell["cpu_ms_by_kind"],
            "cpu_ms_by_thread": cell["cpu_ms_by_thread"],
            "answered": cell["answered"], "wall_s": cell["wall_s"],
            "load_start": cell["load_start"],
            "load_end": cell["load_end"], "resent": s.resent, "instance_errors": s.instance_errors}


async def _local_reference(base: str, parity: str, code: Code, cfg: RayBenchConfig, queries: torch.Tensor,
                           labels: np.ndarray, idle: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The fault-free cells on local worker processes: the run's own reference (and ``idle["local"]``)."""
    k, r = code.spec.k, code.spec.r
    backend = LocalBackend(specs(base, parity, cfg, r, k))
    await backend.start()
    rows = []
    try:
        idle["local"] = await _idle_cpu_per_s()
        for rate in cfg.rates:
            for policy in cfg.policies:
                pool = pools(backend.instances, cfg.n_model, cfg.n_model * r // k)[policy]
                cell, frontend = await _cell(pool, code, cfg, policy, rate, queries, None, None)
                rows.append(_row("local", "none", policy, rate, cell, labels, frontend))
                await asyncio.sleep(0.5)
    finally:
        await backend.stop()
    return rows


async def _idle_cpu_per_s(seconds: float = 5.0) -> dict[str, float]:
    """CPU seconds per second, per process kind, that the cluster and this process use while no query arrives."""
    cpu0, t0 = cpu_snapshot(), time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - t0
    return {kind: used / wall for kind, used in cpu_split(cpu0, cpu_snapshot()).items()}


async def _wait_alive(instances: Sequence[RayInstance], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(i.alive for i in instances) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


def _fault(scenario: str, pool: Sequence[Instance], cluster: LocalCluster) -> Callable[[], Any] | None:
    """The one-off fault of a scenario, run a quarter into the cell (kill a replica, remove a node)."""
    victim = pool[0]
    assert isinstance(victim, RayInstance)
    if scenario == "kill" and victim.pid is not None:
        pid = victim.pid
        return lambda: os.kill(pid, signal.SIGKILL)
    if scenario == "node":  # the worker node holding the first of the pool's replicas that sits on one
        on_node = {cluster.node_id(n): n for n in cluster.workers}
        node = next((on_node[i.node] for i in pool if isinstance(i, RayInstance) and i.node in on_node), None)
        if node is not None:
            return lambda: asyncio.get_running_loop().run_in_executor(None, cluster.remove_node, node)
    return None


async def _ray_cell(backend: RayBackend, cluster: LocalCluster, code: Code, cfg: RayBenchConfig, scenario: str,
                    policy: str, rate: float, queries: torch.Tensor, labels: np.ndarray, label: str = "ray") -> dict:
    """One cell on the deployment: arm the scenario's faults, serve, disarm, wait until all are back."""
    pool = pools(backend.instances, cfg.n_model, cfg.n_model * code.spec.r // code.spec.k)[policy]
    duration = len(queries) / rate + 10
    faults = cfg.faults if scenario == "slow" else FaultConfig(
        crash_rate_hz=cfg.crash_rate if scenario == "crash" else 0.0)
    await asyncio.gather(*(inst.set_faults(draw_plan(faults, duration, cfg.seed, slot), time.time())
                           for slot, inst in enumerate(pool) if isinstance(inst, RayInstance)))
    downs = sum(i.downs for i in backend.instances)
    cell, frontend = await _cell(pool, code, cfg, policy, rate, queries, backend.on_change,
                                 _fault(scenario, pool, cluster))
    row = _row(label, scenario, policy, rate, cell, labels, frontend)
    row["marked_down"] = sum(i.downs for i in backend.instances) - downs
    await asyncio.gather(*(i.set_faults(draw_plan(FaultConfig(), 1, 0, 0), time.time()) for i in backend.instances))
    if scenario == "node":
        cluster.add_node()  # a replacement node (Ray starts nodes from the main thread only)
    await _wait_alive(backend.instances)
    await asyncio.sleep(0.5)
    return row


def _use_actor_calls(backend: RayBackend, on: bool) -> None:
    """Switch every handle between Ray actor calls (Serve's default) and the gRPC channel the backend uses."""
    wire = "cloudpickle" if on else "pickle"
    for inst in backend.instances:
        if inst.handle is not None:
            inst.handle = inst.handle.options(_by_reference=on, request_serialization=wire,
                                              response_serialization=wire)


async def _ray_cells(backend: RayBackend, cluster: LocalCluster, code: Code, cfg: RayBenchConfig,
                     queries: torch.Tensor, labels: np.ndarray,
                     on_row: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """Every scenario's cells; after the fault-free ones, the same cells with Serve's default actor calls
    (rows ``ray-actor``): what the gRPC channel saves, measured in the same run."""
    rows = []
    for scenario in [s for s in SCENARIOS if s in cfg.scenarios]:
        variants = [("ray", False), ("ray-actor", True)] if scenario == "none" else [("ray", False)]
        for label, actor_calls in variants:
            _use_actor_calls(backend, actor_calls)
            for rate in cfg.rates:
                for policy in cfg.policies:
                    rows.append(await _ray_cell(backend, cluster, code, cfg, scenario, policy, rate, queries,
                                                labels, label))
                    if on_row is not None:
                        on_row(rows[-1])
            _use_actor_calls(backend, not backend.settings.grpc)
    return rows


async def run(cfg: RayBenchConfig, base: str, parity: str, code: Code, queries: torch.Tensor,
              labels: np.ndarray, on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every cell, the local reference first; also startup and shutdown times of the deployment.

    ``on_row`` sees each Ray row as soon as its cell ends (the benchmark prints it).
    """
    idle: dict[str, dict[str, float]] = {}
    rows = await _local_reference(base, parity, code, cfg, queries, labels, idle) if "none" in cfg.scenarios else []
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    cluster = LocalCluster(nodes=cfg.nodes)
    with cluster:
        timing["cluster_start_s"] = time.perf_counter() - t0
        backend = RayBackend(specs(base, parity, cfg, code.spec.r, code.spec.k))
        t1 = time.perf_counter()
        await backend.start()
        timing["deploy_to_ready_s"] = time.perf_counter() - t1
        idle["ray"] = await _idle_cpu_per_s()
        try:
            rows += await _ray_cells(backend, cluster, code, cfg, queries, labels, on_row)
        finally:
            t2 = time.perf_counter()
            await backend.stop()
            timing["delete_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
    timing["cluster_shutdown_s"] = time.perf_counter() - t3
    timing |= {f"{name}_idle_cpu_per_s".removeprefix("ray_"): sum(split.values()) for name, split in idle.items()}
    timing.setdefault("local_idle_cpu_per_s", 0.0)
    return {"rows": rows, "timing": timing, "idle_cpu_by_kind": idle, "replicas": len(backend.instances)}


def render(data: dict[str, Any]) -> str:
    """The Markdown page of a ``ray_latency`` JSON (what docs/results holds next to it)."""
    t, rows = data["timing"], data["rows"]
    lines = [f"# Ray Serve backend: latency under faults (rendered from `{data['name']}.json`)", "",
             f"`{data['command']}`", "",
             f"Ray {data['ray_version']}, {data['nodes']} one-CPU nodes + head on 127.0.0.1, all on one "
             f"machine (the load average says what else ran), {data['replicas']} replicas, emulated service "
             f"{data['service_ms']:g} ms/batch, "
             f"{data['queries']} queries per cell. Load average {data['load'][0]:.1f} at start, "
             f"{data['load'][1]:.1f} at the end.", "",
             f"Startup: cluster {t['cluster_start_s']:.1f} s, deployment to ready {t['deploy_to_ready_s']:.1f} s; "
             f"shutdown: applications deleted in {t['delete_s']:.1f} s, cluster stopped in "
             f"{t['cluster_shutdown_s']:.1f} s. Idle (no queries), the Ray cluster and this process use "
             f"{t['idle_cpu_per_s']:.2f} CPU-s/s (the local backend {t['local_idle_cpu_per_s']:.2f}); "
             "*marginal* CPU per query below subtracts that idle use over the cell's duration. CPU is summed per "
             "process over the cell; a process that dies during a cell (crash, kill, node) takes its CPU with it, "
             "so those cells under-count; compare CPU on the no-fault rows only.", ""]
    for line in _ratios(rows, t):
        lines.append(f"- {line}")
    lines += ["", *_cpu_split_table(rows, data.get("idle_cpu_by_kind", {}))]
    lines += ["", "| backend | scenario | policy | rate | p50 ms | p99 ms | p99.9 ms | degraded | lost | re-sent "
              "| CPU ms/query | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['scenario']} | {r['policy']} | {r['rate']:g} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['p99.9']:.1f} | {r['degraded']:.3f} | {r['lost']} | {r['resent']} | "
                     f"{r['cpu_ms_per_query']:.2f} | {r['load_start']:.1f} |")
    return "\n".join(lines) + "\n"


def marginal_cpu_ms(row: dict[str, Any], idle_cpu_per_s: float) -> float:
    """CPU per query above what the processes use idle over the cell's duration."""
    return row["cpu_ms_per_query"] - idle_cpu_per_s * row["wall_s"] / row["answered"] * 1e3


def _ratios(rows: list[dict[str, Any]], t: dict[str, float]) -> list[str]:
    """Ray against the local backend on the same fault-free cells (CPU per query, p99.9)."""
    local = {(r["policy"], r["rate"]): r for r in rows if r["backend"] == "local"}
    out = []
    for r in rows:
        ref = local.get((r["policy"], r["rate"]))
        if r["backend"].startswith("ray") and r["scenario"] == "none" and ref is not None:
            ray_m, local_m = marginal_cpu_ms(r, t["idle_cpu_per_s"]), marginal_cpu_ms(ref, t["local_idle_cpu_per_s"])
            out.append(f"{r['backend']} {r['policy']} at {r['rate']:g} q/s, no faults: Ray/local CPU per query "
                       f"{r['cpu_ms_per_query'] / ref['cpu_ms_per_query']:.2f}x "
                       f"({r['cpu_ms_per_query']:.2f} / {ref['cpu_ms_per_query']:.2f} ms), marginal "
                       f"{ray_m / local_m:.2f}x ({ray_m:.2f} / {local_m:.2f} ms); p99.9 "
                       f"{r['p99.9'] / ref['p99.9']:.2f}x ({r['p99.9']:.1f} / {ref['p99.9']:.1f} ms)")
    return out


def _cpu_split_table(rows: list[dict[str, Any]], idle: dict[str, dict[str, float]]) -> list[str]:
    """Where the CPU of each fault-free cell went, per process kind (ms per answered query)."""
    cells = [r for r in rows if r["scenario"] == "none" and "cpu_ms_by_kind" in r]
    if not cells:
        return []
    totals: dict[str, float] = {}
    for r in cells:
        for kind, ms in r["cpu_ms_by_kind"].items():
            totals[kind] = totals.get(kind, 0.0) + ms
    kinds = [k for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v >= 0.005 * len(cells)]
    lines = ["CPU per query by process kind, fault-free cells (ms per answered query). *driver* is the benchmark's "
             "process: the frontend, and on Ray also Serve's router and the handle call (``ray``: a gRPC call "
             "to the replica; ``ray-actor``: a Ray actor task, Serve's default); *serve replicas* run Serve's request "
             "handling, the batch and the model (on local, *local workers* do); the GCS, raylets, Serve's "
             "controller and the log monitors are Ray's control plane.", "",
             "| backend | policy | total | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for r in cells:
        split = r["cpu_ms_by_kind"]
        lines.append(f"| {r['backend']} | {r['policy']} | {r['cpu_ms_per_query']:.2f} | "
                     + " | ".join(f"{split.get(k, 0.0):.2f}" for k in kinds) + " |")
    lines += ["", "The same cells by thread (ms per query, the five costliest): in the frontend's process *python* is "
              "the event loop (frontend, Serve's router, the gRPC client or the actor-task submission), *worker.io* "
              "and the *poll* threads are Ray's core worker and gRPC; in a replica the event loop runs Serve's request "
              "handling, the batch and the model (its thread *ray::IDLE*, named before the worker became a replica; "
              "*ray::ServeRepli* is its main thread, which receives actor tasks).", ""]
    for r in cells:
        top = list(r.get("cpu_ms_by_thread", {}).items())[:5]
        lines.append(f"- {r['backend']} {r['policy']}: " + ", ".join(f"{name} {ms:.2f}" for name, ms in top))
    for name, split in idle.items():
        used = ", ".join(f"{kind} {v:.3f}" for kind, v in split.items() if v >= 0.001)
        lines += ["", f"Idle ({name}, no queries), CPU-s/s by kind: {used or 'none above 0.001'}."]
    return lines
