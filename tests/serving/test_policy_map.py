"""The policy map: fault families, fitted service times, hybrids, fair tuning, crossovers, the page."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from parm.serving.faults import PAPER_FAMILIES, PAUSED, FaultConfig, FaultFamily, FaultPlan, draw_plan
from parm.serving.policy_map import (
    HEDGE_OFF_MS,
    MapSetup,
    choose,
    compare_crossovers,
    crossovers,
    hedge_delay_s,
    knob_grid,
    replay,
    setup_from_dict,
    setup_to_dict,
    sim_map,
    tail_gaps,
    targets,
    tune_all,
)
from parm.serving.policy_report import _knobs, fact, write_page
from parm.serving.service import ServiceTime
from parm.serving.sim import SimConfig, simulate

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
SERVICE = ServiceTime(0.005, floor=0.8, mu=math.log(0.2), sigma=0.4)
PAPER = FaultConfig(families=PAPER_FAMILIES, crash_rate_hz=0.05)


def test_fault_families_draw_disjoint_seeded_traces_with_pauses() -> None:
    plan = draw_plan(PAPER, 200.0, seed=4, slot=2)
    assert plan == draw_plan(PAPER, 200.0, seed=4, slot=2) != draw_plan(PAPER, 200.0, seed=4, slot=3)
    starts = [p[0] for p in plan.slow]
    assert starts == sorted(starts) and all(a[1] <= b[0] for a, b in zip(plan.slow, plan.slow[1:], strict=False))
    pauses = [p for p in plan.slow if p[2] == PAUSED]
    slows = [p for p in plan.slow if p[2] != PAUSED]
    assert pauses and slows and plan.crashes
    start, end, _ = pauses[0]
    assert plan.batch_time((start + end) / 2, 0.005) == pytest.approx(end - (start + end) / 2 + 0.005)
    s, e, f = slows[0]
    assert plan.batch_time((s + e) / 2, 0.005) == pytest.approx(0.005 * f)
    assert FaultPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ValueError, match="share must be in"):
        FaultFamily("x", share=1.5, mean_s=0.1)
    with pytest.raises(ValueError, match="min_factor must be >= 1"):
        FaultFamily("x", share=0.1, mean_s=0.1, min_factor=0.5)


def test_service_time_fit_recovers_a_shifted_lognormal() -> None:
    rng = np.random.default_rng(0)
    samples = {1: SERVICE.draw(rng, 20000), 4: SERVICE.draw(rng, 20000) * 1.3}
    fit = ServiceTime.fit(samples)
    assert fit.median_s == pytest.approx(0.005 * (0.8 + 0.2), rel=0.02)
    assert fit.per_item_s == pytest.approx(0.3 * 0.005 / 3, rel=0.1)
    for q in (0.5, 0.9, 0.99):
        assert fit.quantile_s(q) == pytest.approx(np.quantile(samples[1], q), rel=0.05)
    assert fit.scaled(0.02).quantile_s(0.9) / fit.quantile_s(0.9) == pytest.approx(0.02 / fit.median_s)
    assert ServiceTime.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError, match=">= 20 samples of batch size 1"):
        ServiceTime.fit({2: np.ones(50)})


def test_simulated_crashes_lose_no_query_in_any_policy() -> None:
    for policy in ("none", "equal", "hedge", "hedge-spare", "parm", "parm-hedge"):
        config = SimConfig(policy=policy, n=4, rate_hz=300, queries=3000, service=SERVICE, max_batch=1,
                           faults=FaultConfig(families=PAPER_FAMILIES, crash_rate_hz=0.5), restart_s=0.5,
                           hedge_delay_s=0.01)
        summary = simulate(config).summary()
        assert summary["lost"] == 0, policy


def test_occupancy_queues_where_a_per_request_delay_does_not() -> None:
    """At 90% of a 5 ms service's capacity, 1.5 ms of occupancy per request overloads the instances
    (4 / 6.5 ms = 615 q/s < 720 q/s); the same 1.5 ms as a delay adds at most that much to the median."""
    fixed = ServiceTime(0.005, floor=0.999, mu=math.log(0.001), sigma=0.0)

    def p50(**kw: float) -> float:
        config = SimConfig(policy="none", n=4, rate_hz=720, queries=4000, service=fixed, max_batch=1, **kw)
        return simulate(config).summary()["p50"]

    base, delayed, occupied = p50(net_s=0.0), p50(net_s=0.0015), p50(net_s=0.0, occupancy_s=0.0015)
    assert 0 < delayed - base <= 1.5 + 1e-6
    assert occupied > base + 100  # the queue grows for the whole run


def test_hybrids_send_what_they_promise() -> None:
    def extra(policy: str, rate: float) -> float:
        config = SimConfig(policy=policy, n=8, rate_hz=rate, queries=6000, service=SERVICE, max_batch=1,
                           faults=FaultConfig(families=PAPER_FAMILIES), hedge_delay_s=0.008)
        return simulate(config).summary()["extra_load"]

    parm, both, hedge = extra("parm", 600), extra("parm-hedge", 600), extra("hedge", 600)
    assert parm == pytest.approx(0.5, abs=0.01)  # one parity per two queries, nothing else
    assert 0 < both - parm < hedge  # only members whose group cannot be decoded are backed up
    busy_hedge, busy_spare = extra("hedge", 1700), extra("hedge-spare", 1700)
    assert 0 < busy_spare < 0.8 * busy_hedge  # no backup when no instance is idle


def test_knob_grids_sweep_quantiles_and_fixed_values() -> None:
    observed = {"p50": 5.5, "p90": 7.0, "p95": 9.0, "p99": 30.0}
    hedges = {g["hedge_ms"] for g in knob_grid("hedge", observed, 5.0)}
    assert {5.5, 7.0, 9.0, 30.0, 2.5, 5.0, 10.0, 20.0} <= hedges
    assert [g["grace_ms"] for g in knob_grid("parm", observed, 5.0)] == [0.0, 0.5, 1.25, 2.5, 5.0, 10.0, 20.0]
    both = knob_grid("parm-hedge", observed, 5.0)
    assert len({g["grace_ms"] for g in both}) > 1 and len({g["hedge_ms"] for g in both}) > 1
    assert knob_grid("equal", observed, 5.0) == [{}]
    with pytest.raises(ValueError, match="unknown policy 'magic'"):
        knob_grid("magic", observed, 5.0)


def test_a_tuned_hedge_may_choose_not_to_hedge() -> None:
    """Overloaded, every backup adds queueing: 'hedge off' is in the grid, sends nothing extra and is
    exactly the equal-resources policy, so the best tuned hedge is never a tuned-down baseline."""
    observed = {"p50": 5.5, "p90": 7.0, "p95": 9.0, "p99": 30.0}
    assert {"hedge_ms": HEDGE_OFF_MS} in knob_grid("hedge", observed, 5.0)
    assert hedge_delay_s({"hedge_ms": HEDGE_OFF_MS}) == math.inf and hedge_delay_s({"hedge_ms": 7.0}) == 0.007
    setup = MapSetup(k=2, n=4, service=SERVICE, faults=FaultConfig(families=PAPER_FAMILIES))
    off = simulate(setup.sim_config("hedge", 0.5, {"hedge_ms": HEDGE_OFF_MS}, 3, 2000)).summary()
    equal = simulate(setup.sim_config("equal", 0.5, {}, 3, 2000)).summary()
    assert off["p99.9"] == equal["p99.9"] and off["extra_load"] == 0.0
    assert _knobs({"hedge_ms": HEDGE_OFF_MS}) == "hedge off"
    assert _knobs({"grace_ms": 2.0, "hedge_ms": HEDGE_OFF_MS}) == "δ=2 ms, hedge off"
    assert _knobs({"grace_ms": 2.0, "hedge_ms": 7.0}) == "δ=2, hedge 7 ms"


def test_choose_takes_the_best_tail_within_the_degraded_budget() -> None:
    rows = [{"p99.9": 10.0, "p50": 5.0, "degraded": 0.2}, {"p99.9": 12.0, "p50": 5.0, "degraded": 0.01},
            {"p99.9": 15.0, "p50": 5.0, "degraded": 0.0}]
    assert choose(rows, 0.05)["p99.9"] == 12.0
    assert choose(rows, 0.5)["p99.9"] == 10.0
    assert choose(rows[:1], 0.05)["degraded"] == 0.2  # nothing within budget: the least degraded


def test_the_tuner_keeps_parm_within_the_fault_free_degraded_budget() -> None:
    """The lowest-tail grace degrades 4% of the answers even without faults: a 1% budget must refuse it."""
    calls: list[tuple[str, float, bool]] = []

    def run(policy: str, knobs: dict[str, float], faults: bool) -> dict:
        grace = knobs.get("grace_ms", 0.0)
        calls.append((policy, grace, faults))
        # Below 5 ms 4% of the answers are reconstructed, faults or not; from 5 ms on, 0.5% / 0.2%.
        degraded = 0.0 if policy == "equal" else 0.04 if grace < 5 else 0.005 if faults else 0.002
        return {**knobs, "p50": 5.0, "p99.9": 20.0 + grace, "degraded": degraded,
                "extra_load": 0.5, "_latency": np.linspace(0.004, 0.03, 200)}

    setup = MapSetup(k=2, n=4, service=SERVICE)
    chosen = tune_all(setup, 0.5, ("equal", "parm"), run=run)["parm"]
    assert {c[2] for c in calls if c[0] == "parm"} == {True, False}  # judged with and without faults
    assert chosen["knobs"]["grace_ms"] == 5.0 and chosen["budget_met"]  # the smallest grace within 1%
    assert chosen["unbudgeted"]["grace_ms"] == 0.0  # what a faulty-trace-only tuner would have kept
    assert tune_all(replace(setup, degraded_budget=0.05), 0.5, ("parm",), run=run)["parm"]["knobs"] == {"grace_ms": 0.0}
    rows = [{"p99.9": 10.0, "p50": 5.0, "degraded": 0.0, "degraded_no_faults": 0.3},
            {"p99.9": 11.0, "p50": 5.0, "degraded": 0.0, "degraded_no_faults": 0.2}]
    assert choose(rows, 0.05, 0.01)["p99.9"] == 11.0  # none within budget: the least degraded without faults


def _rows(tails: dict[str, list[float]], us=(0.1, 0.5, 0.9), k: int = 2) -> list[dict]:
    return [{"k": k, "utilisation": u, "policy": p, "p99.9": t[i], "p50": 5.0, "lost": 0}
            for p, t in tails.items() for i, u in enumerate(us)]


def test_crossovers_are_interpolated_and_compared_within_ten_points() -> None:
    real = _rows({"hedge": [10, 10, 10], "hedge-spare": [20, 20, 20], "parm": [5, 10 * math.e ** 0.5, 40],
                  "equal": [50, 50, 50]})
    # log(parm/hedge) goes -0.69 -> +0.5 between 0.1 and 0.5: the crossing is at 0.1 + 0.4 * 0.69 / 1.19.
    (u,) = crossovers(real, 2, "parm")
    assert u == pytest.approx(0.1 + 0.4 * math.log(2) / (math.log(2) + 0.5), abs=1e-3)
    near = _rows({"hedge": [10, 10, 10], "hedge-spare": [20, 20, 20], "parm": [5, 12, 40], "equal": [50] * 3})
    far = _rows({"hedge": [10, 10, 10], "hedge-spare": [20, 20, 20], "parm": [5, 6, 40], "equal": [50] * 3})
    assert compare_crossovers(real, near)["pass"]
    assert not compare_crossovers(real, far)["pass"]
    t = targets(real)
    assert t["tail_target_met"] and t["best_ratio"] == 0.5 and t["lost"] == 0


def test_a_crossover_counts_only_outside_the_cells_run_to_run_spread() -> None:
    """parm's pooled tail dips below the hedge's at 0.5, but one of its three runs says the opposite."""
    rows = _rows({"hedge": [10, 10, 10], "hedge-spare": [20, 20, 20], "parm": [5, 9, 40], "equal": [50] * 3})
    for r in rows:
        r["p999_runs"] = [r["p99.9"]] * 3
    assert crossovers(rows, 2, "parm") == pytest.approx([0.5 + 0.4 * math.log(10 / 9) / math.log(40 / 9)], abs=1e-3)
    noisy = next(r for r in rows if r["policy"] == "parm" and r["utilisation"] == 0.5)
    noisy["p999_runs"] = [7.0, 9.0, 12.0]  # the spread straddles the hedge's 10 ms
    gaps = tail_gaps(rows, 2, "parm")
    assert [g["significant"] for g in gaps] == [True, False, True]
    # Only the significant points 0.1 (-0.69) and 0.9 (+1.39) remain: one crossing between them.
    assert crossovers(rows, 2, "parm") == pytest.approx([0.1 + 0.8 * math.log(2) / math.log(8)], abs=1e-3)


def test_every_policy_is_tuned_on_the_tuning_trace_and_reported_on_the_test_trace() -> None:
    setup = MapSetup(k=2, n=4, service=SERVICE, faults=FaultConfig(families=PAPER_FAMILIES), tune_queries=800,
                     test_queries=800)
    rows = sim_map(setup, utilisations=(0.3,), policies=("equal", "hedge", "parm"))
    by = {r["policy"]: r for r in rows}
    assert len(by["hedge"]["tuning"]) >= 8 and len(by["parm"]["tuning"]) == 7
    tuned = by["hedge"]["knobs"]["hedge_ms"]
    best = min(by["hedge"]["tuning"], key=lambda t: t["p99.9"])
    assert tuned == best["hedge_ms"]
    # The reported cell is the test trace: re-simulating the tuned knob on the test seed reproduces it.
    test = simulate(setup.sim_config("hedge", 0.3, {"hedge_ms": tuned}, setup.test_seed, 800)).summary()
    assert by["hedge"]["p99.9"] == test["p99.9"] != best["p99.9"]
    assert "degraded_no_faults" in by["parm"]
    again = replay(setup_from_dict(setup_to_dict(setup)), [{**r, "queries": 800} for r in rows])
    assert [r["p99.9"] for r in again] == [r["p99.9"] for r in rows]


def _sim_file(path: Path) -> dict:
    setup = MapSetup(k=2, n=4, service=SERVICE, faults=FaultConfig(families=PAPER_FAMILIES), tune_queries=400,
                     test_queries=400)
    rows = sim_map(setup, utilisations=(0.2, 0.6), policies=("equal", "hedge", "hedge-spare", "parm"))
    data = {"kind": "sim", "command": "python scripts/policy_map.py --sim", "date": "2026-12-02", "loadavg": [1.0, 1.1],
            "service": {"model": SERVICE.to_dict()}, "faults": {"families": [vars(f) for f in PAPER_FAMILIES],
                                                                "crash_rate_hz": 0.0},
            "maps": [{"k": 2, "rows": rows}], "net_ms": 0.5, "test_queries": 400, "wall_s": 3.0}
    path.write_text(json.dumps(data))
    return data


def test_the_page_and_its_facts_render_from_the_json(tmp_path: Path) -> None:
    data = _sim_file(tmp_path / "policy_map_sim.json")
    page = write_page(tmp_path).read_text()
    assert "<!-- render: policy_map_sim policy_map_sim.json -->" in page and "### k = 2, simulated" in page
    hedge = next(r for r in data["maps"][0]["rows"] if r["policy"] == "hedge" and r["utilisation"] == 0.6)
    assert "| 60.0% |" in page and f"{hedge['p99.9']:.2f}" in page
    assert fact(data, ["cell", "2", "0.6", "hedge", "p99.9"]) == f"{hedge['p99.9']:.2f}"
    with pytest.raises(ValueError, match="unknown fact"):
        fact(data, ["nonsense"])
    (tmp_path / "policy_map.md").write_text(page.replace(f"{hedge['p99.9']:.2f}", "1.00"))
    assert write_page(tmp_path).read_text() == page  # a typed-in figure does not survive a re-render


def test_the_committed_policy_map_is_a_rendered_page() -> None:
    from parm.results import pages

    if not (RESULTS / "policy_map.md").is_file():
        pytest.skip("no committed policy map yet")
    assert RESULTS / "policy_map.md" in pages()  # so tests/test_results.py re-renders it from its JSON


def test_the_empirical_service_time_draws_the_measured_distribution() -> None:
    rng = np.random.default_rng(1)
    # Bimodal with rare preemptions, like a sub-millisecond CPU pass: 80% at 40 us, 19% at 60 us, 1% at 400 us.
    ones = np.concatenate([np.full(1600, 40e-6), np.full(380, 60e-6), np.full(20, 400e-6)]) * rng.uniform(1, 1.02, 2000)
    table = ServiceTime.empirical({1: ones, 2: ones * 1.5})
    assert table.median_s == pytest.approx(np.median(ones)) and table.per_item_s == pytest.approx(0.5 * table.median_s)
    drawn = table.scaled(0.01).draw(rng, 200_000)
    for q in (0.5, 0.9, 0.995):
        assert np.quantile(drawn, q) / 0.01 == pytest.approx(np.quantile(ones, q) / table.median_s, rel=0.05)
    assert table.mean_s() == pytest.approx(float(np.mean(ones)), rel=0.03)
    assert ServiceTime.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    with pytest.raises(ValueError, match="sorted positive ratios"):
        ServiceTime(0.01, table=(2.0, 1.0))


def test_the_real_section_shows_each_ratio_with_its_run_to_run_range(tmp_path: Path) -> None:
    rows = _rows({"hedge": [10, 10, 10], "hedge-spare": [20, 20, 20], "parm": [5, 9, 40], "equal": [50] * 3})
    for r in rows:
        r.update(p999_runs=[r["p99.9"]] * 2, degraded=0.0, extra_load=0.0, knobs={}, rate=100.0)
    next(r for r in rows if r["policy"] == "parm" and r["utilisation"] == 0.5)["p999_runs"] = [7.0, 12.0]
    data = {"kind": "real", "command": "python scripts/policy_map.py --real", "date": "2026-12-02",
            "loadavg": [0.5, 0.6], "service": {"model": ServiceTime(0.01, table=(0.9, 1.0, 3.0)).to_dict()},
            "faults": {"families": [], "crash_rate_hz": 0.05}, "wall_s": 600.0,
            "maps": [{"k": 2, "n": 4, "net_ms": 0.6, "occupancy_ms": 0.55, "real": rows, "sim": rows}]}
    (tmp_path / "policy_map_real.json").write_text(json.dumps(data))
    page = write_page(tmp_path).read_text()
    assert "pooled over 2 runs per cell" in page and "occupancy 0.55 ms" in page
    assert "| 2 | parm | real | 0.50× (0.50–0.50) | ~0.90× (0.70–1.20) | 4.00× (4.00–4.00) |" in page
    # Between the significant 0.1 (0.5x) and 0.9 (4x), log-linearly: 0.1 + 0.8 * log 2 / log 8 = 37%; 0.5 is ignored.
    assert "k=2: parm crosses the best tuned hedge at utilisation 37%" in page
