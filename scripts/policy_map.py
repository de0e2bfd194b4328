"""The policy map: p99.9 of none / equal / hedge / hedge-spare / parm / parm-hedge across utilisation.

    python scripts/policy_map.py --sim                                         # simulator, 1,000 instances
    python scripts/policy_map.py --real                                        # real workers (wall time in the JSON)
    python scripts/policy_map.py --real --base B2 B4 --parity P2 P4           # given checkpoints, one pair per k
    python scripts/policy_map.py --measure-service --out docs/results          # service_fit.json, quiet machine
    python -m parm.results                                                     # re-render pages from their JSON

Without --base/--parity, F (MNIST MLP) and its k=2 and k=4 parity models are trained through the
pipeline first (train.py's runs, reused from --train-dir). --measure-service times real F and F_P
forward passes (one thread), fits a shifted lognormal to them and writes service_fit.json with the load
average it ran under: run it un-niced on a quiet machine, since other jobs' preemptions become the fit's
tail. --sim and --real scale the fit of --service-fit (else one measured on the spot) to --service-ms;
every emulated worker and every simulated instance draws from it. Every policy is
tuned on a tuning trace and reported on a test trace (:mod:`parm.serving.policy_map`). Writes
policy_map_<sim|real>.json, the plots and policy_map.md (re-rendered from the JSON) to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from parm.bench.serving import serving_queries, train_pair
from parm.results import rerender_citing
from parm.serving.faults import PAPER_FAMILIES, FaultConfig, FaultFamily
from parm.serving.policy_map import MAP_POLICIES, UTILISATIONS, MapSetup, sim_map
from parm.serving.policy_real import RealMap, RealPlan
from parm.serving.policy_report import plot, write_page
from parm.serving.service import ServiceTime, measure_service
from parm.serving.worker import WorkerSpec


def measure_fits(base: str, parity: str, repeats: int = 2000) -> dict:
    """F's and F_P's service-time fits from real forward passes (one thread), with the load they ran under."""
    load = [os.getloadavg()[0]]
    specs = {"model": WorkerSpec("m", base), "parity": WorkerSpec("p", parity, parity_index=0)}
    # Two rounds in opposite orders: the machine's speed drifts (other jobs, clocks), and F_P's time is
    # used relative to F's, so neither may get all the quiet (or busy) moments.
    rounds = [{role: measure_service(specs[role], batches=(1, 2, 4), repeats=repeats // 2) for role in order}
              for order in (("model", "parity"), ("parity", "model"))]
    raw: dict = {}
    for role in specs:
        samples = {b: np.concatenate([r[role][b] for r in rounds]) for b in rounds[0][role]}
        ones = samples[1] * 1e3
        raw[role] = {"fit": ServiceTime.fit(samples).to_dict(), "repeats": repeats,
                     "empirical": ServiceTime.empirical(samples).to_dict(),
                     "measured_ms": {f"p{q}": float(np.percentile(ones, q)) for q in (50, 90, 99, 99.9)}}
    return {**raw, "loadavg": [*load, os.getloadavg()[0]], "date": datetime.date.today().isoformat()}


def fitted_services(raw: dict, median_ms: float) -> tuple[ServiceTime, ServiceTime]:
    """The measured distributions (the lognormal fit where an older file has no table) scaled so that F's
    median is ``median_ms`` (F_P keeps its ratio to F)."""
    fits = {role: ServiceTime.from_dict(raw[role].get("empirical") or raw[role]["fit"]) for role in ("model", "parity")}
    model = fits["model"].scaled(median_ms / 1e3)
    return model, fits["parity"].scaled(median_ms / 1e3 * fits["parity"].median_s / fits["model"].median_s)


def service_fits(args: argparse.Namespace, base: str, parity: str) -> tuple[ServiceTime, ServiceTime, dict]:
    """From --service-fit (a file --measure-service wrote on a quiet machine), else measured now."""
    if args.service_fit is None:
        raw = measure_fits(base, parity)
    else:
        try:
            raw = {**json.loads(args.service_fit.read_text()), "file": args.service_fit.as_posix()}
            fitted_services(raw, args.service_ms)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SystemExit(f"--service-fit {args.service_fit}: not a service-time fit ({err!r}); write one with "
                             f"`python scripts/policy_map.py --measure-service --out <dir>`.") from err
    return (*fitted_services(raw, args.service_ms), raw)


def faults(args: argparse.Namespace) -> FaultConfig:
    families: tuple[FaultFamily, ...] = PAPER_FAMILIES if args.faults == "paper" else ()
    crash_rate = args.crash_rate if args.crash_rate is not None else 0.05 if args.real else 0.01
    return FaultConfig(families=families, crash_rate_hz=crash_rate)


def header(args: argparse.Namespace, model: ServiceTime, raw: dict, fault: FaultConfig) -> dict:
    return {"command": "python scripts/policy_map.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "date": datetime.date.today().isoformat(), "loadavg": [os.getloadavg()[0]],
            "service": {"model": model.to_dict(), "measured": raw}, "degraded_budget": args.degraded_budget,
            "faults": {"families": [vars(f) for f in fault.families], "crash_rate_hz": fault.crash_rate_hz}}


def run_sim(args: argparse.Namespace) -> dict:
    fault = faults(args)
    model, parity, raw = service_fits(args, args.base[0], args.parity[0])
    data = header(args, model, raw, fault)
    start = time.perf_counter()
    data["maps"] = []
    for k in args.k:
        setup = MapSetup(k=k, service=model, parity_service=parity, n=args.instances, net_s=args.net_ms / 1e3,
                         faults=fault, restart_s=args.restart_s,
                         tune_queries=args.tune_queries or args.test_queries, test_queries=args.test_queries,
                         degraded_budget=args.degraded_budget)
        data["maps"].append({"k": k, "rows": sim_map(setup, args.utilisations, args.policies, progress=print)})
    data.update(net_ms=args.net_ms, test_queries=args.test_queries, wall_s=time.perf_counter() - start)
    return data


def run_real(args: argparse.Namespace) -> dict:
    if len(args.base) != len(args.parity):
        raise SystemExit(f"--real needs one --base per --parity (got {len(args.base)} and {len(args.parity)}): "
                         f"pass F and F_P of each k in the same order.")
    fault = faults(args)
    plan = RealPlan(n=args.model_instances, utilisations=tuple(args.utilisations), policies=tuple(args.policies),
                    cell_s=args.cell_s, faults=fault, restart_s=args.restart_s,
                    tune_queries=args.tune_queries or 20_000,
                    degraded_budget=args.degraded_budget, repeats=args.repeats, min_queries=args.min_queries)
    start = time.perf_counter()
    data: dict = {"maps": []}
    for base, parity in zip(args.base, args.parity, strict=True):
        model, parity_fit, raw = service_fits(args, base, parity)
        data.update({**header(args, model, raw, fault), "loadavg": data.get("loadavg") or [os.getloadavg()[0]]})
        queries, labels = serving_queries(base, args.max_queries, args.seed)
        real = RealMap(base, parity, plan, model, parity_fit, queries, labels)
        data["maps"].append(asyncio.run(real.run()))
    data["wall_s"] = time.perf_counter() - start
    return data


def write(data: dict, kind: str, out: Path) -> None:
    data["kind"] = kind
    data["loadavg"].append(os.getloadavg()[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"policy_map_{kind}.json").write_text(json.dumps(data, indent=1))
    plot(data, out / f"policy_map_{kind}", "rows" if kind == "sim" else "real")
    write_page(out)
    for page in rerender_citing(out / f"policy_map_{kind}.json"):  # e.g. docs/serving.md's figures
        print(f"re-rendered {page}")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sim", action="store_true", help="the map in the simulator at scale")
    mode.add_argument("--real", action="store_true", help="the map on real local workers, with simulator replay")
    mode.add_argument("--measure-service", action="store_true",
                      help="only time F's and F_P's forward passes and write <out>/service_fit.json (run it un-niced "
                           "on a quiet machine; --service-fit reuses it)")
    p.add_argument("--service-fit", type=Path, default=None,
                   help="a service_fit.json from --measure-service (default: measure now, under whatever load)")
    p.add_argument("--base", nargs="+", default=[], help="F's model file(s) (one per --parity with --real)")
    p.add_argument("--parity", nargs="+", default=[], help="parity artifact(s), one per k")
    p.add_argument("--k", type=int, nargs="+", default=[2, 4], help="the codes to map (r = 1)")
    p.add_argument("--train-dir", type=Path, default=Path("outputs/policy_map_runs"),
                   help="without --base/--parity: train.py runs for every --k land (and are reused) here")
    p.add_argument("--utilisations", type=float, nargs="+", default=list(UTILISATIONS))
    p.add_argument("--policies", nargs="+", default=list(MAP_POLICIES), choices=MAP_POLICIES)
    p.add_argument("--service-ms", type=float, default=10.0, help="median service time of F's batch of one")
    p.add_argument("--faults", choices=["paper", "none"], default="paper")
    p.add_argument("--crash-rate", type=float, default=None,
                   help="crashes per instance per second (default 0.01 with --sim; 0.05 with --real, where a few "
                        "seconds per cell on 6 instances would otherwise rarely see one)")
    p.add_argument("--restart-s", type=float, default=3.0, help="simulated downtime of a crashed instance")
    p.add_argument("--instances", type=int, default=1000, help="--sim: N")
    p.add_argument("--net-ms", type=float, default=0.5, help="--sim: cost per request")
    p.add_argument("--degraded-budget", type=float, default=0.01,
                   help="most answers a tuned parm setting may reconstruct on the tuning trace without faults")
    p.add_argument("--tune-queries", type=int, default=None,
                   help="queries per simulated tuning cell (default: --sim as many as --test-queries, since a "
                        "shorter trace tunes hedges on queues that have not built up yet; --real 20,000)")
    p.add_argument("--test-queries", type=int, default=100_000, help="--sim: queries per test cell")
    p.add_argument("--model-instances", type=int, default=4, help="--real: N")
    p.add_argument("--cell-s", type=float, default=3.5, help="--real: seconds of arrivals per cell")
    p.add_argument("--repeats", type=int, default=3,
                   help="--real: runs per cell on different seeds, pooled; their spread decides which crossovers count")
    p.add_argument("--min-queries", type=int, default=400, help="--real: fewest queries per run of a cell")
    p.add_argument("--max-queries", type=int, default=10_000, help="--real: test images available per cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/policy_map"))
    return p.parse_args()


def main() -> None:
    args = parse()
    torch.set_num_threads(1)
    if bool(args.base) != bool(args.parity):
        raise SystemExit("pass both --base and --parity (one pair per k), or neither: then F and F_P are trained "
                         "through the pipeline for every --k into --train-dir.")
    if not args.base:
        pairs = [train_pair(args.train_dir, k, seed=args.seed) for k in args.k]
        args.base, args.parity = [b for b, _ in pairs], [p for _, p in pairs]
    if args.measure_service:
        args.out.mkdir(parents=True, exist_ok=True)
        fit = {"command": "python scripts/policy_map.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               **measure_fits(args.base[0], args.parity[0])}
        (args.out / "service_fit.json").write_text(json.dumps(fit, indent=1))
        print(json.dumps(fit, indent=1))
        return
    data = run_sim(args) if args.sim else run_real(args)
    write(data, "sim" if args.sim else "real", args.out)
    print(f"wrote {args.out}/policy_map_{data['kind']}.json, policy_map.md and plots ({data['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
