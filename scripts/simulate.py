"""Discrete-event simulation of the serving policies at scale, and its check against a real bench run.

    python scripts/simulate.py --instances 1000 --queries 1000000 --rate 80000
    python scripts/simulate.py --compare outputs/bench/results.json --tolerance 0.5

The first prints p50..p99.9 per policy and the wall time. The second re-runs, in simulation, every
(policy, rate) of a ``bench_latency.py`` results file with the same settings, and checks that the
policies come in the same p99.9 order and that each p99.9 is within ``--tolerance`` (relative).
"""

from __future__ import annotations

import argparse
import json
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
                           queries=args.queries, service_s=args.service_ms / 1e3, net_s=args.net_ms / 1e3,
                           decode_grace_s=args.grace_ms / 1e3, hedge_delay_s=args.hedge_ms / 1e3,
                           faults=faults, seed=args.seed)
        start = time.perf_counter()
        result = simulate(config)
        wall = time.perf_counter() - start
        rows.append({"policy": policy, "rate": args.rate, **result.summary(), "wall_s": round(wall, 2)})
        print(f"{policy}: {args.queries} queries on {args.instances} (+ redundancy) instances in {wall:.1f} s")
    return rows


def compare(path: Path, tolerance: float, net_ms: float) -> bool:
    """Simulate every row of a bench results file; True when order and tolerance hold."""
    data = json.loads(path.read_text())
    a = data["args"]
    faults = FaultConfig(slow_share=float(a["slow_share"]), mean_slow_s=float(a["slow_mean_s"]),
                         min_factor=float(a["slow_factor"]))
    ok, table = True, []
    for rate in sorted({r["rate"] for r in data["rows"]}):
        real = [r for r in data["rows"] if r["rate"] == rate]
        sims = {}
        for row in real:
            policy = "parm" if row["policy"].startswith("parm") else row["policy"]
            grace = float(row["policy"].split("=")[1].rstrip("ms)")) if "=" in row["policy"] else 0.0
            config = SimConfig(policy=policy, n=int(a["model_instances"]), k=int(a["k"]), r=int(a["r"]),
                               rate_hz=rate, queries=int(a["queries"]) * 10, service_s=float(a["service_ms"]) / 1e3,
                               max_batch=int(a["worker_batch"]), net_s=net_ms / 1e3, decode_grace_s=grace / 1e3,
                               hedge_delay_s=float(a["hedge_ms"]) / 1e3,
                               group_timeout_s=float(a["group_timeout_ms"]) / 1e3, faults=faults, seed=int(a["seed"]))
            sims[row["policy"]] = simulate(config).summary()["p99.9"]
            rel = abs(sims[row["policy"]] - row["p99.9"]) / row["p99.9"]
            ok &= rel <= tolerance
            table.append(f"{rate:>7g} {row['policy']:>14}  real p99.9 {row['p99.9']:8.2f} ms  "
                         f"sim {sims[row['policy']]:8.2f} ms  rel. diff {rel:5.2f}")
        real_order = [r["policy"] for r in sorted(real, key=lambda r: r["p99.9"])]
        sim_order = sorted(sims, key=sims.get)
        same = real_order == sim_order
        ok &= same
        table.append(f"{rate:>7g} order real {real_order} sim {sim_order}: {'same' if same else 'DIFFERENT'}")
    print("\n".join(table))
    print(f"within tolerance {tolerance:.0%} and same order: {ok}")
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", type=Path, help="a bench_latency.py results.json to check against")
    p.add_argument("--tolerance", type=float, default=0.5, help="relative p99.9 tolerance for --compare")
    p.add_argument("--instances", type=int, default=1000, help="N")
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--r", type=int, default=1)
    p.add_argument("--queries", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=80_000.0)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--service-ms", type=float, default=5.0)
    p.add_argument("--net-ms", type=float, default=0.5, help="frontend + loopback cost per request")
    p.add_argument("--grace-ms", type=float, default=2.0)
    p.add_argument("--hedge-ms", type=float, default=10.0)
    p.add_argument("--slow-share", type=float, default=0.05)
    p.add_argument("--slow-mean-s", type=float, default=0.2)
    p.add_argument("--slow-factor", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/sim.json"))
    args = p.parse_args()
    if args.compare is not None:
        raise SystemExit(0 if compare(args.compare, args.tolerance, args.net_ms) else 1)
    rows = at_scale(args)
    print(format_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
