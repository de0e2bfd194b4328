"""Discrete-event simulation of the serving policies at scale, and its check against a real bench run.

    python scripts/simulate.py --instances 1000 --queries 1000000 --rate 80000
    python scripts/simulate.py --compare run1/results.json [run2/results.json ...] --tolerance 0.25
    python scripts/simulate.py --compare docs/results/policy_map_real.json --points 10

The first prints p50..p99.9 per policy and the wall time. The second re-runs, in simulation, every
(policy, rate) of a ``bench_latency.py`` results file with the same settings, query count and seed,
so on the same arrivals and fault traces, and checks that each real p99.9 is within ``--tolerance``
(relative) of the simulated range (cost per request calibrated, +- ``--band-ms``) and that policies
whose real p99.9 differ by more than the tolerance come in the same order. Given a ``policy_map.py
--real`` file it re-simulates every cell and checks that each utilisation where a parm policy's p99.9
crosses the best tuned hedge's is predicted within ``--points`` (and no crossover is invented).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from parm.serving.faults import FaultConfig
from parm.serving.loadgen import format_table
from parm.serving.sim import SimConfig, simulate

POLICIES = ("none", "equal", "hedge", "parm")


def at_scale(args: argparse.Namespace) -> list[dict]:
    faults = FaultConfig(slow_share=args.slow_share, mean_slow_s=args.slow_mean_s, min_factor=args.slow_factor)
    rows = []
    for policy in args.policies:
        config = SimConfig(policy=policy, n=args.instances, k=args.k, r=args.r, rate_hz=args.rate,
                           queries=args.queries, service_s=args.service_ms / 1e3, net_s=(args.net_ms or 0.5) / 1e3,
                           decode_grace_s=args.grace_ms / 1e3, hedge_delay_s=args.hedge_ms / 1e3,
                           faults=faults, seed=args.seed)
        start = time.perf_counter()
        result = simulate(config)
        wall = time.perf_counter() - start
        rows.append({"policy": policy, "rate": args.rate, **result.summary(), "wall_s": round(wall, 2)})
        print(f"{policy}: {args.queries} queries on {args.instances} (+ redundancy) instances in {wall:.1f} s")
    return rows


def _calibrated_net_ms(data: dict, service_ms: float) -> float:
    """Frontend + loopback + scheduling cost per request, from the real run's uncoded medians."""
    p50s = sorted(r["p50"] for r in data["rows"] if r["policy"] in ("none", "equal"))
    return max(0.0, p50s[len(p50s) // 2] - service_ms) if p50s else 0.5


def _same_order(real: dict[str, list[float]], sim: dict[str, list[float]], tolerance: float) -> list[str]:
    """Pairs that every real run has more than ``tolerance`` apart and that the whole simulated range
    puts the other way round (an order that repeated runs, or the simulated range, leave open is not
    checked)."""
    return [f"{a} < {b}" for a in real for b in real
            if max(real[a]) * (1 + tolerance) < min(real[b]) and min(sim[a]) > max(sim[b])]


SAME_TRACE = ("model_instances", "queries", "seed", "service_ms", "worker_batch", "hedge_ms", "group_timeout_ms",
              "slow_share", "slow_mean_s", "slow_factor", "crash_rate")


def _load_runs(paths: list[Path]) -> tuple[dict, dict[tuple[float, str], list[dict]]]:
    """Settings of the first file and the rows of all files by (rate, policy); the files must share the trace."""
    runs = [json.loads(p.read_text()) for p in paths]
    first = runs[0]["args"]
    for path, run in zip(paths[1:], runs[1:], strict=True):
        differ = [k for k in SAME_TRACE if run["args"].get(k) != first.get(k)]
        if differ:
            raise SystemExit(f"{path} was not run on the same settings and trace as {paths[0]}: {differ} differ.")
    rows: dict[tuple[float, str], list[dict]] = {}
    for run in runs:
        for row in run["rows"]:
            rows.setdefault((row["rate"], row["policy"]), []).append(row)
    return first, rows


def compare(paths: list[Path], tolerance: float, net_ms: float | None, band_ms: float = 0.2) -> bool:
    """Simulate every (rate, policy) of bench results files on the same trace; True when they agree.

    The simulator gets the real runs' settings, query count and seed, so it replays the same Poisson
    arrivals and the same per-slot fault traces (``draw_plan(config, duration, seed, slot)``). The cost
    per request is calibrated from the real ``none``/``equal`` medians and varied by ``band_ms`` either
    way. With a few thousand queries p99.9 rests on two or three answers, and whether those meet a slow
    batch hinges on sub-millisecond timing (which idle instance a backup or a group member lands on),
    so the simulator gives a range, and so do repeated real runs of one trace (pass several files).
    A cell passes when the real range and the simulated range, widened by ``tolerance``, overlap.
    """
    a, cells = _load_runs(paths)
    faults = FaultConfig(slow_share=float(a["slow_share"]), mean_slow_s=float(a["slow_mean_s"]),
                         min_factor=float(a["slow_factor"]), crash_rate_hz=float(a.get("crash_rate", 0)))
    service_ms = float(a["service_ms"])
    if net_ms is None:
        net_ms = _calibrated_net_ms({"rows": [r for rows in cells.values() for r in rows]}, service_ms)
    costs = [max(0.0, net_ms + d) for d in (-band_ms, -band_ms / 2, 0.0, band_ms / 2, band_ms)]
    ok, table = True, [f"{len(paths)} real run(s); cost per request {net_ms:.2f} ms (simulated "
                       f"{costs[0]:.2f}..{costs[-1]:.2f}); tolerance {tolerance:.0%}"]
    for rate in sorted({rate for rate, _ in cells}):
        real, sims = {}, {}
        for (r_, name), rows in cells.items():
            if r_ != rate:
                continue
            grace = float(name.split("=")[1].rstrip("ms)")) if "=" in name else 0.0
            tails = [simulate(SimConfig(policy="parm" if name.startswith("parm") else name,
                                        n=int(a["model_instances"]), k=int(a["k"]), r=int(a["r"]), rate_hz=rate,
                                        queries=int(a["queries"]), service_s=service_ms / 1e3,
                                        max_batch=int(a["worker_batch"]), net_s=cost / 1e3, decode_grace_s=grace / 1e3,
                                        hedge_delay_s=float(a["hedge_ms"]) / 1e3,
                                        group_timeout_s=float(a["group_timeout_ms"]) / 1e3, faults=faults,
                                        seed=int(a["seed"]))).summary()["p99.9"] for cost in costs]
            got = [row["p99.9"] for row in rows]
            real[name], sims[name] = got, tails
            lo, hi = min(tails), max(tails)
            inside = min(got) <= hi * (1 + tolerance) and max(got) >= lo * (1 - tolerance)
            ok &= inside
            table.append(f"{rate:>7g} {name:>14}  real p99.9 {min(got):7.2f}..{max(got):7.2f} ms  "
                         f"sim {lo:7.2f}..{hi:7.2f} ms{'' if inside else '  OUT'}")
        wrong = _same_order(real, sims, tolerance)
        ok &= not wrong
        table.append(f"{rate:>7g} order of policies further apart than the tolerance: "
                     f"{'same' if not wrong else 'DIFFERENT: ' + ', '.join(wrong)}")
    print("\n".join(table))
    print(f"real p99.9 within {tolerance:.0%} of the simulated range and same order: {ok}")
    return ok


def compare_map(path: Path, points: float) -> bool:
    """Re-simulate every cell of a ``policy_map.py --real`` file and check its crossover utilisations."""
    from parm.serving.policy_map import compare_crossovers, replay, setup_from_dict

    data = json.loads(path.read_text())
    real = [row for m in data["maps"] for row in m["real"]]
    sim = [row for m in data["maps"] for row in replay(setup_from_dict(m["setup"]), m["real"])]
    check = compare_crossovers(real, sim, points)
    for cell in check["cells"]:
        print(f"k={cell['k']} {cell['policy']:>10} crosses the best tuned hedge at: real {cell['real'] or 'none'}, "
              f"simulated {cell['sim'] or 'none'}  {'ok' if cell['pass'] else 'MISMATCH'}")
    print(f"every crossover within +-{points * 100:.0f} utilisation points: {check['pass']}")
    return bool(check["pass"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", type=Path, nargs="+",
                   help="bench_latency.py results.json file(s) of one trace (repeated runs) to check against")
    p.add_argument("--tolerance", type=float, default=0.25, help="relative p99.9 tolerance for --compare")
    p.add_argument("--points", type=float, default=10.0,
                   help="--compare of a policy_map.py --real file: crossover tolerance in utilisation points")
    p.add_argument("--band-ms", type=float, default=0.2,
                   help="--compare: vary the calibrated cost per request by this much either way")
    p.add_argument("--instances", type=int, default=1000, help="N")
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--r", type=int, default=1)
    p.add_argument("--queries", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=80_000.0)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--service-ms", type=float, default=5.0)
    p.add_argument("--net-ms", type=float, default=None,
                   help="frontend + loopback cost per request (default: 0.5; with --compare, calibrated)")
    p.add_argument("--grace-ms", type=float, default=2.0)
    p.add_argument("--hedge-ms", type=float, default=10.0)
    p.add_argument("--slow-share", type=float, default=0.05)
    p.add_argument("--slow-mean-s", type=float, default=0.2)
    p.add_argument("--slow-factor", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/sim.json"))
    args = p.parse_args()
    if args.compare is not None:
        maps = [p for p in args.compare if json.loads(p.read_text()).get("kind") == "real"]
        ok = all(compare_map(p, args.points / 100) for p in maps)
        rest = [p for p in args.compare if p not in maps]
        ok &= not rest or compare(rest, args.tolerance, args.net_ms, args.band_ms)
        raise SystemExit(0 if ok else 1)
    load = os.getloadavg()[0]
    rows = at_scale(args)
    print(format_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python scripts/simulate.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    args.out.write_text(json.dumps({"command": command, "loadavg": [load, os.getloadavg()[0]], "rows": rows},
                                   indent=1))


if __name__ == "__main__":
    main()
