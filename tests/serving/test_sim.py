"""The simulator: determinism, conservation, and the expected policy ordering under faults."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from parm.serving.faults import FaultConfig, FaultPlan, draw_plan
from parm.serving.sim import SimConfig, simulate

FAULTS = FaultConfig(slow_share=0.05)


def test_every_query_is_answered_and_runs_are_deterministic() -> None:
    a = simulate(SimConfig(policy="parm", queries=3000, faults=FAULTS))
    b = simulate(SimConfig(policy="parm", queries=3000, faults=FAULTS))
    assert not np.isnan(a.latency).any()
    np.testing.assert_array_equal(a.latency, b.latency)
    assert 0 < a.degraded.mean() < 0.2


def test_without_faults_latency_is_service_time_and_degraded_answers_are_rare() -> None:
    result = simulate(SimConfig(policy="parm", queries=5000, rate_hz=300, decode_grace_s=0.002))
    summary = result.summary()
    assert summary["p50"] == pytest.approx(5.5, abs=0.01)  # service 5 ms + net 0.5 ms
    assert summary["degraded"] <= 0.01


def test_parm_beats_equal_resources_in_the_tail() -> None:
    tails = {p: simulate(SimConfig(policy=p, queries=20000, faults=FAULTS)).summary()["p99.9"]
             for p in ("none", "equal", "parm")}
    assert tails["parm"] < 0.6 * tails["equal"] and tails["equal"] <= tails["none"]


def test_a_cancelled_request_counts_as_load_until_its_instance_lets_go() -> None:
    """As with the local workers' "dropped" reply: a running request holds its slot until its batch
    ends, a queued one until the instance reaches it; neither is answered."""
    from parm.serving.sim import FINISH, RESULT, Simulator

    sim = Simulator(SimConfig(policy="none", n=1, queries=2, service_s=0.005, net_s=0.0, max_batch=1))
    sim.qstate = [[None, 0, []] for _ in range(2)]
    sim._send(0.0, 0, "plain", None, ())  # runs at once
    sim._send(0.0, 1, "plain", None, ())  # queued behind it
    running, queued = sim.qstate[0][2][0], sim.qstate[1][2][0]
    sim._cancel(running)
    sim._cancel(queued)
    assert sim.model_load[0] == 2, "both still occupy the instance"
    loads = []
    while sim.heap:
        t, _, kind, payload = heapq.heappop(sim.heap)
        {FINISH: sim._finish, RESULT: sim._result}[kind](t, payload)
        loads.append((round(t, 4), int(sim.model_load[0])))
    assert loads == [(0.005, 2), (0.005, 1), (0.005, 0)], "let go when the batch ends, the queued one dropped unrun"
    assert np.isnan(sim.answer_t).all()


def test_fault_traces_are_seeded_per_slot() -> None:
    plan = draw_plan(FaultConfig(slow_share=0.1, crash_rate_hz=0.5), 20.0, seed=3, slot=1)
    assert plan == draw_plan(FaultConfig(slow_share=0.1, crash_rate_hz=0.5), 20.0, seed=3, slot=1)
    assert plan != draw_plan(FaultConfig(slow_share=0.1, crash_rate_hz=0.5), 20.0, seed=3, slot=2)
    assert plan.slow and plan.crashes and all(f >= 4.0 for _, _, f in plan.slow)
    assert FaultPlan.from_dict(plan.to_dict()) == plan
    start, end, factor = plan.slow[0]
    assert plan.factor((start + end) / 2) == factor and plan.factor(start - 1e-6) == 1.0


def _load_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_replays_the_trace_and_flags_a_run_outside_the_tolerance(tmp_path) -> None:
    import json

    args = {"model_instances": "4", "k": "2", "r": "1", "queries": "1500", "seed": "3", "service_ms": "5.0",
            "worker_batch": "8", "hedge_ms": "10.0", "group_timeout_ms": "50.0", "slow_share": "0.05",
            "slow_mean_s": "0.2", "slow_factor": "4.0", "crash_rate": "0.0"}
    rows = []
    for policy, grace in (("equal", None), ("parm", 2.0)):
        config = SimConfig(policy=policy, queries=1500, seed=3, net_s=0.0007, decode_grace_s=(grace or 0) / 1e3,
                           hedge_delay_s=0.01, faults=FAULTS)
        name = policy if grace is None else f"parm(d={grace:g}ms)"
        rows.append({"policy": name, "rate": 150.0, **simulate(config).summary()})
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"args": args, "rows": rows}))
    compare = _load_script("simulate").compare
    assert compare([good], tolerance=0.25, net_ms=None)
    rows[1]["p99.9"] *= 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"args": args, "rows": rows}))
    assert not compare([bad], tolerance=0.25, net_ms=None)


def test_a_stuck_query_is_counted_lost_at_the_deadline_instead_of_hanging_the_run() -> None:
    import asyncio
    import time
    from types import SimpleNamespace

    import torch

    from parm.serving.loadgen import run_poisson

    class Frontend:  # answers every query at once except the third, which never returns
        calls = 0

        async def predict(self, x: torch.Tensor) -> SimpleNamespace:
            Frontend.calls += 1
            if Frontend.calls == 3:
                await asyncio.Event().wait()
            return SimpleNamespace(latency_s=0.001, degraded=False, output=torch.zeros(2))

    start = time.perf_counter()
    result = asyncio.run(run_poisson(Frontend(), torch.zeros(5, 2), 1000.0, 0, deadline_s=0.3))  # type: ignore[arg-type]
    assert time.perf_counter() - start < 20
    assert result.summary()["lost"] == 1 and np.isnan(result.latency[2])
