"""The policy map: the tail of every serving policy across utilisation, each policy tuned fairly.

At each operating point (k, utilisation of the Equal-Resources capacity) every policy's knobs are
swept on a *tuning* trace and the best setting is reported on a separate *test* trace (other seed:
other arrivals, faults and service draws). "Best" is what a serving engineer with a degraded-answer
budget would pick: the lowest p99.9 on the faulty tuning trace among the settings that reconstruct at
most ``degraded_budget`` (1%) of the answers on the same trace *without faults* (and at most
``max_degraded`` with them): a parity model's approximate answer is the exception, not the rule.
Hedge delays are swept over quantiles of the latency ``equal`` shows on the tuning trace (p50, p90,
p95, p99) and fixed multiples of the median service time; the decode grace over multiples of it;
the hybrids over both. Every policy has N + N*r/k instances except ``none`` (N).
This module runs the simulator side and holds what the real bench shares with it (grids, tuning,
crossovers, targets); :mod:`parm.serving.policy_real` runs the same cells on real workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from parm.serving.faults import FaultConfig, FaultFamily
from parm.serving.loadgen import RunResult
from parm.serving.service import ServiceTime
from parm.serving.sim import SimConfig, simulate

MAP_POLICIES = ("none", "equal", "hedge", "hedge-spare", "parm", "parm-hedge")
HEDGES = ("hedge", "hedge-spare")
CODED = ("parm", "parm-hedge")
UTILISATIONS = (0.1, 0.3, 0.5, 0.7, 0.85)
QUANTILES = (50, 90, 95, 99)
HEDGE_MULTIPLES = (0.5, 1.0, 2.0, 4.0)  # fixed hedge delays, in median service times
# A tuned hedge may decide not to hedge at all (overloaded cells, where every backup adds queueing): this
# setting is in every hedge grid, so the best tuned hedge is never worse than not hedging on the tuning trace.
HEDGE_OFF_MS = 1e6
GRACE_MULTIPLES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # decode graces, in median service times


@dataclass(frozen=True)
class MapSetup:
    """One k of the map.

    Args:
        k, r, n: the code and N (model instances of ``none`` and the parm policies).
        service, parity_service: batch service times of F and F_P (batches of one: ``max_batch`` 1).
        net_s: frontend + transport cost per request (calibrated on the real system).
        occupancy_s: each request's time on its instance beyond the service time (calibrated at saturation).
        faults: the fault families, one seeded trace per instance slot shared by every policy.
        restart_s: how long a crashed instance is out.
        tune_seed, test_seed: the two traces.
        tune_queries, test_queries: queries per simulated cell.
        max_degraded: a setting whose degraded share on the (faulty) tuning trace exceeds this is not chosen.
        degraded_budget: nor one whose degraded share on the tuning trace without faults exceeds this.
    """

    k: int
    service: ServiceTime
    parity_service: ServiceTime | None = None
    r: int = 1
    n: int = 1000
    net_s: float = 0.0005
    occupancy_s: float = 0.0
    faults: FaultConfig = FaultConfig()
    restart_s: float = 2.0
    group_timeout_s: float = 0.05
    tune_seed: int = 1
    test_seed: int = 2
    tune_queries: int = 20_000
    test_queries: int = 100_000
    max_degraded: float = 0.05
    degraded_budget: float = 0.01
    extra: dict[str, float] = field(default_factory=dict)

    def capacity_hz(self) -> float:
        """Queries per second the N + N*r/k Equal-Resources instances serve at 100% utilisation."""
        return (self.n + self.n * self.r // self.k) / self.service.mean_s()

    def rate_hz(self, utilisation: float) -> float:
        return utilisation * self.capacity_hz()

    def sim_config(self, policy: str, utilisation: float, knobs: dict[str, float], seed: int, queries: int,
                   faults: FaultConfig | None = None) -> SimConfig:
        return SimConfig(policy=policy, n=self.n, k=self.k, r=self.r, rate_hz=self.rate_hz(utilisation),
                         queries=queries, service=self.service, parity_service=self.parity_service, max_batch=1,
                         net_s=self.net_s, occupancy_s=self.occupancy_s, group_timeout_s=self.group_timeout_s,
                         decode_grace_s=knobs.get("grace_ms", 0.0) / 1e3,
                         hedge_delay_s=hedge_delay_s(knobs),
                         faults=self.faults if faults is None else faults, restart_s=self.restart_s, seed=seed)


def hedge_delay_s(knobs: dict[str, float]) -> float:
    """The backup delay a setting asks for, in seconds; ``inf`` (never back up) without one or when it is off."""
    ms = knobs.get("hedge_ms", HEDGE_OFF_MS)
    return math.inf if ms >= HEDGE_OFF_MS else ms / 1e3


def knob_grid(policy: str, observed_ms: dict[str, float], median_ms: float) -> list[dict[str, float]]:
    """Settings to sweep for ``policy``; ``observed_ms``: ``equal``'s latency quantiles on the tuning trace."""
    hedges = sorted({round(observed_ms[f"p{q}"], 3) for q in QUANTILES}
                    | {round(m * median_ms, 3) for m in HEDGE_MULTIPLES})
    graces = [round(m * median_ms, 3) for m in GRACE_MULTIPLES]
    if policy in HEDGES:
        return [{"hedge_ms": h} for h in [*hedges, HEDGE_OFF_MS]]
    if policy == "parm":
        return [{"grace_ms": g} for g in graces]
    if policy == "parm-hedge":
        return [{"grace_ms": g, "hedge_ms": h} for g in graces[2:5] for h in hedges if h >= median_ms]
    if policy in ("none", "equal"):
        return [{}]
    raise ValueError(f"unknown policy {policy!r}; the map knows {MAP_POLICIES}.")


def choose(rows: Sequence[dict], max_degraded: float, budget: float = 1.0) -> dict:
    """The tuning row to keep: lowest p99.9 among those with at most ``max_degraded`` degraded answers and at
    most ``budget`` without faults (``degraded_no_faults``, where a row has it); else the least degraded one
    (fault-free share first)."""
    def shares(r: dict) -> tuple[float, float]:
        return r.get("degraded_no_faults", 0.0), r["degraded"]

    allowed = [r for r in rows if r["degraded"] <= max_degraded and shares(r)[0] <= budget]
    return min(allowed, key=lambda r: (r["p99.9"], r["p50"])) if allowed else min(rows, key=shares)


def observed_quantiles(latency_s: np.ndarray) -> dict[str, float]:
    ms = latency_s[~np.isnan(latency_s)] * 1e3
    return {f"p{q}": float(np.percentile(ms, q)) for q in QUANTILES}


def tune_all(setup: MapSetup, utilisation: float, policies: Sequence[str],
             run: Callable[[str, dict[str, float], bool], dict] | None = None) -> dict[str, dict]:
    """Each policy's chosen knobs at one point, tuned on the tuning trace (in the simulator by default).

    ``run(policy, knobs, faults)`` runs one tuning cell, with the fault families or without them; coded
    policies are run both ways (the fault-free share is judged against ``setup.degraded_budget``).

    Returns:
        ``{policy: {"knobs": {...}, "tuning": [rows], "budget_met": bool, "unbudgeted": {...}}}``;
        ``unbudgeted``: the setting that would have been chosen without the budget (its tuning row).
    """
    def sim_run(policy: str, knobs: dict[str, float], faults: bool) -> dict:
        config = setup.sim_config(policy, utilisation, knobs, setup.tune_seed, setup.tune_queries,
                                  faults=None if faults else FaultConfig())
        result = simulate(config)
        return {**knobs, **result.summary(), "_latency": result.latency}

    run = run or sim_run
    equal = run("equal", {}, True)
    observed = observed_quantiles(equal.pop("_latency"))
    chosen: dict[str, dict] = {}
    for policy in policies:
        rows = [equal] if policy == "equal" else []
        for knobs in ([] if rows else knob_grid(policy, observed, setup.service.median_s * 1e3)):
            row = run(policy, knobs, True)
            row.pop("_latency", None)
            if policy in CODED:
                row["degraded_no_faults"] = run(policy, knobs, False)["degraded"]
            rows.append(row)
        best = choose(rows, setup.max_degraded, setup.degraded_budget)
        free = choose(rows, setup.max_degraded)
        chosen[policy] = {"knobs": knobs_of(best), "tuning": [_brief(r) for r in rows], "observed_ms": observed,
                          "budget_met": best.get("degraded_no_faults", 0.0) <= setup.degraded_budget,
                          "unbudgeted": _brief(free)}
    return chosen


def knobs_of(row: dict) -> dict[str, float]:
    return {k: row[k] for k in ("grace_ms", "hedge_ms") if k in row}


def _brief(row: dict) -> dict:
    keys = ("grace_ms", "hedge_ms", "p50", "p99", "p99.9", "degraded", "degraded_no_faults", "extra_load")
    return {k: round(float(row[k]), 4) for k in keys if k in row}


def sim_map(setup: MapSetup, utilisations: Sequence[float] = UTILISATIONS,
            policies: Sequence[str] = MAP_POLICIES, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Every (utilisation, policy) cell on the test trace, each policy at its tuned setting.

    A coded cell whose budgeted setting differs from the unbudgeted one also runs the latter on the test
    trace, so the page can show what the degraded-answer budget costs in tail.
    """
    def test(policy: str, u: float, knobs: dict[str, float], faults: bool = True, queries: int = 0) -> dict:
        config = setup.sim_config(policy, u, knobs, setup.test_seed, queries or setup.test_queries,
                                  faults=None if faults else FaultConfig())
        return simulate(config).summary()

    rows = []
    for u in utilisations:
        chosen = tune_all(setup, u, policies)
        for policy in policies:
            knobs = chosen[policy]["knobs"]
            summary = test(policy, u, knobs)
            clean = test(policy, u, knobs, False, setup.tune_queries) if policy in CODED else None
            row = cell_row(setup, u, policy, chosen[policy], summary, clean)
            free = row.get("unbudgeted")
            if free is not None and knobs_of(free) != knobs:
                other = test(policy, u, knobs_of(free))
                free["test"] = {key: other[key] for key in ("p50", "p99", "p99.9", "degraded")}
            rows.append(row)
            if progress is not None:
                progress(f"k={setup.k} u={u:.2f} {policy:>11} {knobs}: p99.9 {summary['p99.9']:.2f} ms")
    return rows


def cell_row(setup: MapSetup, utilisation: float, policy: str, chosen: dict, summary: dict,
             clean: dict | None) -> dict:
    """One cell of the map as stored in the JSON."""
    row = {"k": setup.k, "r": setup.r, "n": setup.n, "utilisation": utilisation,
           "rate": round(setup.rate_hz(utilisation), 3), "policy": policy, "knobs": chosen["knobs"],
           **{k: v for k, v in summary.items() if not k.startswith("_")}, "tuning": chosen["tuning"]}
    if clean is not None:
        row["degraded_no_faults"] = clean["degraded"]
    if policy in CODED and "unbudgeted" in chosen:
        row["budget_met"] = chosen["budget_met"]
        row["unbudgeted"] = dict(chosen["unbudgeted"])
    return row


def best_hedge(rows: Sequence[dict], k: int, u: float) -> dict:
    """The lower-p99.9 of the tuned hedge policies at (k, u).

    Raises:
        ValueError: the map has no hedge policy at (k, u).
    """
    hedges = [r for r in rows if r["k"] == k and r["utilisation"] == u and r["policy"] in HEDGES]
    if not hedges:
        raise ValueError(f"no tuned hedge at k={k}, utilisation {u}: map 'hedge' or 'hedge-spare' to compare with.")
    return min(hedges, key=lambda r: r["p99.9"])


def has_hedge(rows: Sequence[dict]) -> bool:
    return any(r["policy"] in HEDGES for r in rows)


def tail_gaps(rows: Sequence[dict], k: int, policy: str = "parm") -> list[dict]:
    """Per utilisation: log(``policy``'s p99.9 / the best tuned hedge's), pooled and per run.

    A cell with ``p999_runs`` (repeated real cells and their replays) gives one gap per run; the gap is
    *significant* when every run agrees on its sign (the run-to-run spread excludes 0). A cell without
    runs (one simulated run of many queries) counts as significant.
    """
    if not has_hedge(rows):
        return []
    out = []
    for u in sorted({r["utilisation"] for r in rows if r["k"] == k and r["policy"] == policy}):
        mine = next(r for r in rows if r["k"] == k and r["utilisation"] == u and r["policy"] == policy)
        hedge = best_hedge(rows, k, u)
        gap = math.log(mine["p99.9"] / hedge["p99.9"])
        runs = [math.log(a / b) for a, b in zip(mine.get("p999_runs", []), hedge.get("p999_runs", []), strict=True)]
        significant = not runs or (min(runs) > 0 if gap > 0 else max(runs) < 0) if gap != 0 else False
        out.append({"utilisation": u, "gap": gap, "runs": runs, "significant": significant})
    return out


def crossovers(rows: Sequence[dict], k: int, policy: str = "parm") -> list[float]:
    """Utilisations where ``policy``'s p99.9 crosses the best tuned hedge's: a sign change between two
    consecutive *significant* gaps (:func:`tail_gaps`), placed by log-linear interpolation between them."""
    points = [g for g in tail_gaps(rows, k, policy) if g["significant"]]
    found = []
    for a, b in zip(points, points[1:], strict=False):
        if (a["gap"] < 0) != (b["gap"] < 0):
            u0, u1, d0, d1 = a["utilisation"], b["utilisation"], a["gap"], b["gap"]
            found.append(round(u0 + (u1 - u0) * d0 / (d0 - d1), 4))
    return found


def compare_crossovers(real: Sequence[dict], sim: Sequence[dict], points: float = 0.10) -> dict:
    """Whether every crossover of each run has one in the other within ``points`` of utilisation."""
    out: dict = {"tolerance_points": points * 100, "cells": [], "pass": True}
    for k in sorted({r["k"] for r in real}):
        for policy in CODED:
            if not any(r["k"] == k and r["policy"] == policy for r in real):
                continue
            a, b = crossovers(real, k, policy), crossovers(sim, k, policy)
            ok = all(any(abs(x - y) <= points + 1e-9 for y in b) for x in a) and \
                all(any(abs(x - y) <= points + 1e-9 for y in a) for x in b)
            out["cells"].append({"k": k, "policy": policy, "real": a, "sim": b, "pass": ok})
            out["pass"] &= ok
    return out


def targets(rows: Sequence[dict]) -> dict:
    """The issue's targets over a map: the best coded-vs-hedge tail ratio with p50 within 10% of equal."""
    regimes = []
    for r in rows:
        if r["policy"] not in CODED or not has_hedge(rows):
            continue
        cell = [x for x in rows if x["k"] == r["k"] and x["utilisation"] == r["utilisation"]]
        equal = next(x for x in cell if x["policy"] == "equal")
        hedge = best_hedge(rows, r["k"], r["utilisation"])
        regimes.append({"k": r["k"], "utilisation": r["utilisation"], "policy": r["policy"],
                        "p999_vs_best_hedge": round(r["p99.9"] / hedge["p99.9"], 3),
                        "p50_vs_equal": round(r["p50"] / equal["p50"], 3),
                        "met": r["p99.9"] <= 0.67 * hedge["p99.9"] and r["p50"] <= 1.1 * equal["p50"]})
    clean = [r["degraded_no_faults"] for r in rows if "degraded_no_faults" in r]
    return {"regimes": regimes, "tail_target_met": any(x["met"] for x in regimes),
            "best_ratio": min((x["p999_vs_best_hedge"] for x in regimes), default=None),
            "max_degraded_no_faults": max(clean, default=None),
            "lost": int(sum(r.get("lost", 0) for r in rows))}


def setup_to_dict(setup: MapSetup) -> dict:
    """What :func:`setup_from_dict` needs to rebuild ``setup`` (stored with every real map)."""
    return {"k": setup.k, "r": setup.r, "n": setup.n, "net_s": setup.net_s, "occupancy_s": setup.occupancy_s,
            "service": setup.service.to_dict(),
            "parity_service": None if setup.parity_service is None else setup.parity_service.to_dict(),
            "faults": {"families": [vars(f) for f in setup.faults.families],
                       "crash_rate_hz": setup.faults.crash_rate_hz},
            "restart_s": setup.restart_s, "group_timeout_s": setup.group_timeout_s, "tune_seed": setup.tune_seed,
            "test_seed": setup.test_seed, "max_degraded": setup.max_degraded,
            "degraded_budget": setup.degraded_budget}


def setup_from_dict(d: dict) -> MapSetup:
    faults = FaultConfig(families=tuple(FaultFamily(**f) for f in d["faults"]["families"]),
                         crash_rate_hz=float(d["faults"]["crash_rate_hz"]))
    parity = d.get("parity_service")
    return MapSetup(k=int(d["k"]), r=int(d["r"]), n=int(d["n"]), net_s=float(d["net_s"]),
                    occupancy_s=float(d.get("occupancy_s", 0.0)),
                    service=ServiceTime.from_dict(d["service"]),
                    parity_service=None if parity is None else ServiceTime.from_dict(parity), faults=faults,
                    restart_s=float(d["restart_s"]), group_timeout_s=float(d["group_timeout_s"]),
                    tune_seed=int(d["tune_seed"]), test_seed=int(d["test_seed"]),
                    max_degraded=float(d["max_degraded"]), degraded_budget=float(d.get("degraded_budget", 1.0)))


def replay(setup: MapSetup, rows: Sequence[dict]) -> list[dict]:
    """Simulate every real cell again: same policy, knobs, seeds (one per run) and query count."""
    out = []
    for row in rows:
        runs = max(1, len(row.get("p999_runs", [])))
        summary = replay_cell(setup, row["policy"], row["utilisation"], row["knobs"], runs, row["queries"] // runs)
        out.append(cell_row(setup, row["utilisation"], row["policy"], {"knobs": row["knobs"], "tuning": []},
                            summary, None))
    return out


def replay_cell(setup: MapSetup, policy: str, utilisation: float, knobs: dict[str, float], runs: int,
                queries: int) -> dict:
    """``runs`` simulated runs of ``queries`` on test seeds ``test_seed + i``, pooled; ``p999_runs``: each one's."""
    results = [simulate(setup.sim_config(policy, utilisation, knobs, setup.test_seed + i, queries))
               for i in range(runs)]
    return {**pooled(results).summary(), "queries": queries * runs,
            **({"p999_runs": [r.summary()["p99.9"] for r in results]} if runs > 1 else {})}


def pooled(results: Sequence[RunResult]) -> RunResult:
    """Several runs' queries as one run (their latency quantiles pooled; per-query counts averaged)."""
    counts = [r.counts or {} for r in results]
    keys = {k for c in counts for k in c}
    merged = {k: float(np.mean([c[k] for c in counts])) if k.startswith("extra_") else sum(c[k] for c in counts)
              for k in keys}
    return RunResult(np.concatenate([r.latency for r in results]), np.concatenate([r.degraded for r in results]),
                     np.concatenate([r.outputs for r in results]), counts=merged or None)
