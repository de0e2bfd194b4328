"""Tail latency of coded serving vs baselines on real worker processes (loopback), MNIST MLP.

Policies on the same seeded fault trace (instance slot i gets trace i in every policy):
    none   N instances of F, no redundancy
    equal  N + N*r/k instances of F (Equal-Resources), no coding
    hedge  the same N + N*r/k instances; a backup request after --hedge-ms, first answer wins
    parm   N instances of F + N*r/k parity instances (k, r from parity.pt)

    python scripts/bench_latency.py --rates 150 300 --queries 3000 --out outputs/bench
    python scripts/bench_latency.py --codec-only --k 4 --shape 3 32 32

Prints a table per policy and rate, writes results.json, cdf.png and p999_vs_rate.png to --out.
Without --run or --base/--parity it trains F (MNIST MLP) and its parity model through the pipeline,
as train.py does (:func:`parm.bench.serving.train_pair`, reused from --out); test images come from
:mod:`parm.data`, normalised with the mean/std stored in base.pt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from parm.bench.serving import from_run, serving_queries, train_pair
from parm.serving.faults import FaultConfig, FaultPlan, draw_plan
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.instance import InstancePool
from parm.serving.loadgen import RunResult, format_table, run_poisson
from parm.serving.local import LocalBackend, LocalInstance
from parm.serving.worker import WorkerSpec


def pools(backend: LocalBackend, n: int, extra: int) -> dict[str, list[LocalInstance]]:
    """Instances per policy, in fault-slot order."""
    models = [i for i in backend.instances if i.role == "model"]
    parities = [i for i in backend.instances if i.role == "parity"]
    return {"none": models[:n], "equal": models[: n + extra], "hedge": models[: n + extra],
            "parm": models[:n] + parities[:extra]}


async def bench(args: argparse.Namespace, base: str, parity: str) -> list[dict]:
    from parm.artifacts import load_parity

    code = load_parity(parity).code
    k, r = code.spec.k, code.spec.r
    n, extra = args.model_instances, args.model_instances * r // k
    queries, labels = serving_queries(base, args.queries, args.seed)
    worker = {"max_batch": args.worker_batch, "service_time_s": args.service_ms / 1e3}
    specs = [WorkerSpec(f"model-{i}", base, **worker) for i in range(n + extra)]
    specs += [WorkerSpec(f"parity-{i}", parity, parity_index=i % r, **worker) for i in range(extra)]
    backend = LocalBackend(specs)
    await backend.start()
    faults = FaultConfig(slow_share=args.slow_share, mean_slow_s=args.slow_mean_s, min_factor=args.slow_factor,
                         crash_rate_hz=args.crash_rate)
    variants = [(p, None) for p in args.policies if p != "parm"]
    variants += [("parm", g) for g in args.grace_ms] if "parm" in args.policies else []
    rows: list[dict] = []
    bar = tqdm(total=len(args.rates) * len(variants) * args.queries, unit="q", smoothing=0.05)
    try:
        for rate in args.rates:
            duration = args.queries / rate + 10
            for policy, grace in variants:
                pool = pools(backend, n, extra)[policy]
                plans = [draw_plan(faults, duration, args.seed, slot) for slot in range(len(pool))]
                mode = policy if policy in ("parm", "hedge") else "plain"
                config = FrontendConfig(policy=mode,
                                        decode_grace_s=(grace or 0) / 1e3, hedge_delay_s=args.hedge_ms / 1e3,
                                        group_timeout_s=args.group_timeout_ms / 1e3)
                frontend = Frontend(InstancePool(pool, args.capacity), code, config)
                restarts = sum(i.restarts for i in pool)
                epoch = time.time()
                for inst, plan in zip(pool, plans, strict=False):
                    inst.set_faults(plan, epoch)
                result = await run_poisson(frontend, queries, rate, args.seed, on_answer=lambda: bar.update())
                await frontend.close()
                for inst in backend.instances:
                    inst.set_faults(FaultPlan(), time.time())
                await asyncio.sleep(0.5)  # let cancelled stragglers drain before the next run
                name = policy if grace is None else f"parm(d={grace:g}ms)"
                rows.append(_row(name, rate, result, labels, frontend, sum(i.restarts for i in pool) - restarts))
                bar.write(format_table(rows[-1:]))
    finally:
        bar.close()
        await backend.stop()
    return rows


def _row(name: str, rate: float, result: RunResult, labels: np.ndarray, frontend: Frontend, restarts: int) -> dict:
    s = frontend.stats
    return {"policy": name, "rate": rate, **result.summary(labels), "uncoded": s.uncoded, "resent": s.resent,
            "hedged": s.hedged, "instance_errors": s.instance_errors, "restarts": restarts,
            "latencies_ms": np.nan_to_num(result.latency * 1e3, nan=-1).round(4).tolist()}


def bench_ray(args: argparse.Namespace, base: str, parity: str) -> None:
    """``--backend ray``: the scenarios of :mod:`parm.serving.raybench`; writes <name>.json and <name>.md."""
    import ray

    from parm.artifacts import load_parity
    from parm.serving import raybench

    code = load_parity(parity).code
    queries, labels = serving_queries(base, args.queries, args.seed)
    cfg = raybench.RayBenchConfig(
        rates=args.rates, policies=args.policies, scenarios=args.scenarios, n_model=args.model_instances,
        nodes=args.nodes, grace_ms=args.grace_ms[0], hedge_ms=args.hedge_ms, group_timeout_ms=args.group_timeout_ms,
        capacity=args.capacity, worker_batch=args.worker_batch, service_ms=args.service_ms,
        faults=FaultConfig(slow_share=args.slow_share, mean_slow_s=args.slow_mean_s, min_factor=args.slow_factor),
        crash_rate=args.crash_rate or 0.05, seed=args.seed)
    load0 = os.getloadavg()[0]
    def show(row: dict) -> None:
        print(format_table([{**row, "policy": f"{row['backend']}/{row['scenario']}/{row['policy']}"}]), flush=True)

    data = asyncio.run(raybench.run(cfg, base, parity, code, queries, labels, on_row=show))
    command = (f"python scripts/bench_latency.py --backend ray --rates {' '.join(f'{r:g}' for r in args.rates)} "
               f"--queries {args.queries} --policies {' '.join(args.policies)} --scenarios {' '.join(args.scenarios)} "
               f"--nodes {args.nodes} --out docs/results --name {args.name}")
    data.update(name=args.name, command=command, ray_version=ray.__version__, nodes=args.nodes,
                service_ms=args.service_ms, queries=args.queries, load=[load0, os.getloadavg()[0]])
    print(format_table([{**r, "policy": f"{r['backend']}/{r['scenario']}/{r['policy']}"} for r in data["rows"]]))
    print(raybench.render(data))
    (args.out / f"{args.name}.json").write_text(json.dumps(data, indent=1))
    (args.out / f"{args.name}.md").write_text(raybench.render(data))
    print(f"wrote {args.out}/{args.name}.json and .md")


def codec_cost(k: int, r: int, shape: list[int], repeat: int) -> list[dict]:
    """Mean encode + decode time per coding group (batch 1, one missing output), every linear coder."""
    from parm.coding import CodeSpec, build_code

    torch.set_num_threads(1)
    rows = []
    for enc, dec in (("sum", "subtraction"), ("concat", "subtraction"), ("learned", "learned")):
        code = build_code(enc, dec, CodeSpec(k, r), shape, (10,))
        x, out, par = torch.randn(1, k, *shape), torch.randn(1, k, 10), torch.randn(1, r, 10)
        avail = torch.ones(1, k + r, dtype=torch.bool)
        avail[0, 0] = False
        with torch.inference_mode():
            for _ in range(50):
                code.encode(x), code.decode(out, par, avail)
            t0 = time.perf_counter()
            for _ in range(repeat):
                code.encode(x)
            t1 = time.perf_counter()
            for _ in range(repeat):
                code.decode(out, par, avail)
            t2 = time.perf_counter()
        rows.append({"coder": f"{enc}/{dec}", "k": k, "r": r, "shape": shape, "encode_us": (t1 - t0) / repeat * 1e6,
                     "decode_us": (t2 - t1) / repeat * 1e6, "total_us": (t2 - t0) / repeat * 1e6})
    return rows


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({r["rate"] for r in rows})
    fig, axes = plt.subplots(1, len(rates), figsize=(6 * len(rates), 4.5), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=False):
        for row in (r for r in rows if r["rate"] == rate):
            lat = np.sort([v for v in row["latencies_ms"] if v >= 0])
            tail = 1 - np.arange(1, len(lat) + 1) / (len(lat) + 1)
            ax.plot(lat, tail, label=row["policy"])
        ax.set(xscale="log", yscale="log", xlabel="latency (ms)", ylabel="P(latency > x)", title=f"{rate:g} q/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cdf.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        pts = sorted((r["rate"], r["p99.9"]) for r in rows if r["policy"] == policy)
        ax.plot(*zip(*pts, strict=False), marker="o", label=policy)
    ax.set(xlabel="arrival rate (q/s)", ylabel="p99.9 latency (ms)", yscale="log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "p999_vs_rate.png", dpi=120)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a train.py run directory: its base.pt and parity.pt")
    p.add_argument("--base", help="F's model file; trained quickly when omitted")
    p.add_argument("--parity", help="parity artifact; trained quickly when omitted")
    p.add_argument("--k", type=int, default=2, help="k of the quickly trained code")
    p.add_argument("--r", type=int, default=1, help="r of the quickly trained code")
    p.add_argument("--rates", type=float, nargs="+", default=[150.0, 300.0])
    p.add_argument("--queries", type=int, default=3000)
    p.add_argument("--policies", nargs="+", default=["none", "equal", "hedge", "parm"],
                   choices=["none", "equal", "hedge", "parm"])
    p.add_argument("--grace-ms", type=float, nargs="+", default=[2.0], help="decode grace(s) for parm")
    p.add_argument("--model-instances", type=int, default=4, help="N")
    p.add_argument("--service-ms", type=float, default=5.0, help="emulated accelerator time per batch")
    p.add_argument("--worker-batch", type=int, default=8)
    p.add_argument("--capacity", type=int, default=64)
    p.add_argument("--hedge-ms", type=float, default=10.0)
    p.add_argument("--group-timeout-ms", type=float, default=50.0)
    p.add_argument("--slow-share", type=float, default=0.05, help="time share of slow periods; 0 = no faults")
    p.add_argument("--slow-mean-s", type=float, default=0.2)
    p.add_argument("--slow-factor", type=float, default=4.0, help="minimum (Pareto) slowdown factor")
    p.add_argument("--crash-rate", type=float, default=0.0, help="crashes per instance per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codec-only", action="store_true", help="only time encode + decode per group")
    p.add_argument("--shape", type=int, nargs="+", default=[3, 32, 32], help="--codec-only input shape")
    p.add_argument("--out", type=Path, default=Path("outputs/bench"))
    p.add_argument("--train-dir", type=Path, default=Path("outputs/bench_train"),
                   help="where the small pair is trained and reused (kept apart from --out, which may be docs/)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="ray: Ray Serve on a local multi-node cluster (parm.serving.raybench)")
    p.add_argument("--scenarios", nargs="+", default=["none", "slow", "crash", "kill", "node"],
                   choices=["none", "slow", "crash", "kill", "node"], help="--backend ray: which faults")
    p.add_argument("--nodes", type=int, default=3, help="--backend ray: one-CPU nodes besides the head")
    p.add_argument("--name", default="ray_latency", help="--backend ray: name of the JSON and Markdown written")
    return p.parse_args()


def main() -> None:
    args = parse()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.codec_only:
        rows = codec_cost(args.k, args.r, args.shape, repeat=2000)
        for row in rows:
            print(f"{row['coder']:>20}  k={row['k']} r={row['r']} {row['shape']}: encode {row['encode_us']:.1f} us"
                  f" + decode {row['decode_us']:.1f} us = {row['total_us']:.1f} us per group")
        (args.out / "codec.json").write_text(json.dumps(rows, indent=1))
        return
    torch.set_num_threads(1)
    if (args.base is None) != (args.parity is None):
        raise SystemExit("pass both --base and --parity, or neither (then a small pair is trained).")
    if args.run is not None:
        base, parity = from_run(args.run)
    elif args.base:
        base, parity = args.base, args.parity
    else:
        base, parity = train_pair(args.train_dir, args.k, args.r, args.seed)
    args.base, args.parity = base, parity
    if args.backend == "ray":
        bench_ray(args, base, parity)
        return
    rows = asyncio.run(bench(args, base, parity))
    print(format_table(rows))
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "rows": rows}))
    plot(rows, args.out)
    print(f"wrote {args.out}/results.json, cdf.png, p999_vs_rate.png")


if __name__ == "__main__":
    main()
