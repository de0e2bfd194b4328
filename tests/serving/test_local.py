"""Real worker processes on loopback: answers, crashes, restarts, fault plans."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from serving_fakes import write_checkpoints

from parm.artifacts import load_parity
from parm.models.checkpoint import load_model
from parm.serving.faults import FaultPlan
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.instance import InstancePool
from parm.serving.local import LocalBackend


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[str, str]:
    return write_checkpoints(tmp_path_factory.mktemp("ckpt"))


async def _serve(base: str, parity: str, xs: torch.Tensor, scenario) -> tuple[list, Frontend, LocalBackend]:
    artifact = load_parity(parity)
    backend = LocalBackend.for_code(base, parity, n_model=3, n_parity=1, max_batch=4)
    await backend.start()
    try:
        frontend = Frontend(InstancePool(backend.instances), artifact.code, FrontendConfig(decode_grace_s=0.002))

        async def one(i: int):
            await asyncio.sleep(0.003 * i)
            return await frontend.predict(xs[i])

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(xs))]
        await scenario(backend)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await frontend.close()
        return results, frontend, backend
    finally:
        await backend.stop()


def test_workers_answer_with_the_checkpoint_model(checkpoints) -> None:
    base, parity = checkpoints
    xs = torch.randn(20, 1, 28, 28)

    async def nothing(backend):
        return None

    results, frontend, _ = asyncio.run(asyncio.wait_for(_serve(base, parity, xs, nothing), 120))
    model, _ = load_model(base)
    with torch.no_grad():
        want = model.eval()(xs)
    for res, w in zip(results, want, strict=False):
        assert not isinstance(res, BaseException)
        if not res.degraded:
            torch.testing.assert_close(res.output, w, rtol=1e-5, atol=1e-5)
    assert frontend.stats.answered == 20


def test_a_crash_mid_run_loses_no_query_and_the_worker_restarts(checkpoints) -> None:
    base, parity = checkpoints
    xs = torch.randn(150, 1, 28, 28)

    async def crash(backend):
        # Slow model-0 down so that it holds requests, then kill it mid-run.
        backend.set_faults([FaultPlan(slow=((0.0, 60.0, 1.0),)), FaultPlan(), FaultPlan(), FaultPlan()])
        await asyncio.sleep(0.15)
        backend.instances[0].crash()
        await asyncio.sleep(0.1)
        backend.instances[3].process.kill()  # the parity worker dies too, by signal

    results, frontend, backend = asyncio.run(asyncio.wait_for(_serve(base, parity, xs, crash), 120))
    assert all(not isinstance(r, BaseException) for r in results), [r for r in results if isinstance(r, Exception)]
    assert frontend.stats.answered == 150 and frontend.stats.failed == 0
    assert backend.instances[0].restarts + backend.instances[3].restarts >= 1


def test_frontends_reusing_workers_never_mix_up_requests(checkpoints) -> None:
    """Request ids restart with every frontend; stale cancels and answers must not touch new requests."""
    base, parity = checkpoints
    model, _ = load_model(base)
    model.eval()

    async def go():
        backend = LocalBackend.for_code(base, None, n_model=2, n_parity=0, max_batch=4)
        await backend.start()
        try:
            for _ in range(3):
                frontend = Frontend(InstancePool(backend.instances), None,
                                    FrontendConfig(policy="hedge", hedge_delay_s=0.0))  # a cancel per query
                xs = torch.randn(30, 1, 28, 28)
                got = await asyncio.wait_for(asyncio.gather(*(frontend.predict(x) for x in xs)), 30)
                await frontend.close()
                with torch.no_grad():
                    torch.testing.assert_close(torch.stack([g.output for g in got]), model(xs), rtol=1e-5, atol=1e-5)
        finally:
            await backend.stop()

    asyncio.run(go())


def test_a_cancelled_request_holds_the_workers_load_until_the_worker_lets_go(checkpoints) -> None:
    """Cancelling a running request frees nothing until its batch ends; a queued one is dropped unrun.

    The pool balances on outstanding requests, so a cancelled straggler must count until the worker is
    really free; the worker says so with a "dropped" reply. The test waits for the worker's "started"
    notice instead of sleeping, so a loaded machine (a late worker) cannot turn the running request
    into a queued one."""
    from parm.serving.instance import RequestCancelled

    base, _ = checkpoints
    service_s = 1.0

    async def scenario() -> tuple[float, float, float, int]:
        backend = LocalBackend.for_code(base, None, n_model=1, n_parity=0, max_batch=1, service_time_s=service_s)
        await backend.start()
        (inst,) = backend.instances
        pool = InstancePool(backend.instances)
        try:
            loop = asyncio.get_running_loop()
            sent: dict[int, float] = {}

            async def call(req_id: int) -> float:
                (picked,) = await pool.pick("model")
                sent[req_id] = loop.time()
                try:
                    await picked.infer(req_id, torch.randn(1, 28, 28))
                except RequestCancelled:
                    return loop.time() - sent[req_id]
                finally:
                    await pool.release(picked)
                raise AssertionError("a cancelled request was answered")

            running = asyncio.ensure_future(call(0))
            while 0 not in sent:
                await asyncio.sleep(0)
            await inst.started(0)  # request 0 is in its batch now
            queued = asyncio.ensure_future(call(1))
            while 1 not in sent:
                await asyncio.sleep(0)
            inst.cancel(0)
            inst.cancel(1)
            load_meanwhile = pool.load[inst.name]
            t_running, t_queued = await asyncio.gather(running, queued)
            dropped_at = {"running": t_running + sent[0], "queued": t_queued + sent[1]}
            answered = await inst.infer(2, torch.randn(1, 28, 28))  # still serving, ids not mixed up
            return t_running, dropped_at["running"] - dropped_at["queued"], float(answered.shape[0]), load_meanwhile
        finally:
            await backend.stop()

    t_running, order, classes, load_meanwhile = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert load_meanwhile == 2, "both cancelled requests still count while the worker holds them"
    # From its sending, a running request's batch takes at least the service time: no clock assumption.
    assert t_running >= service_s, f"the running request was let go {t_running:.2f} s after sending, before its batch"
    assert order <= 0, "the queued request is dropped when the worker reaches it, after the running one"
    assert classes == 10


def test_workers_draw_their_batch_time_from_a_fitted_distribution(checkpoints) -> None:
    """service= makes each batch last at least a draw of the fit (real forward passes are far shorter)."""
    from parm.serving.service import ServiceTime, measure_service
    from parm.serving.worker import WorkerSpec

    base, _ = checkpoints
    samples = measure_service(WorkerSpec("m", base), batches=(1, 2), repeats=40, warmup=5)
    assert set(samples) == {1, 2} and all(len(s) == 40 and (s > 0).all() for s in samples.values())
    service = ServiceTime(0.03, floor=0.9, sigma=0.1)
    backend = LocalBackend([WorkerSpec("model-0", base, max_batch=1, service=service)])

    async def go() -> list[float]:
        await backend.start()
        try:
            inst = backend.instances[0]
            times = []
            for i in range(5):
                t0 = asyncio.get_running_loop().time()
                await inst.infer(i, torch.randn(1, 28, 28))
                times.append(asyncio.get_running_loop().time() - t0)
            return times
        finally:
            await backend.stop()

    times = asyncio.run(asyncio.wait_for(go(), 120))
    assert min(times) >= 0.03 * 0.9


@pytest.mark.slow
def test_the_real_policy_map_runs_every_cell_with_its_replay(checkpoints) -> None:
    from parm.serving.faults import PAPER_FAMILIES, FaultConfig
    from parm.serving.policy_real import RealMap, RealPlan
    from parm.serving.service import ServiceTime

    base, parity = checkpoints
    plan = RealPlan(n=2, utilisations=(0.2,), policies=("equal", "parm"), cell_s=0.5, min_queries=40,
                    faults=FaultConfig(families=PAPER_FAMILIES), tune_queries=200, repeats=2)
    service = ServiceTime(0.005)
    real = RealMap(base, parity, plan, service, service, torch.randn(200, 1, 28, 28), np.zeros(200, dtype=int),
                   progress=lambda line: None)
    out = asyncio.run(asyncio.wait_for(real.run(), 300))
    assert [r["policy"] for r in out["real"]] == [r["policy"] for r in out["sim"]] == ["equal", "parm"]
    parm = out["real"][1]
    assert parm["lost"] == 0 and parm["extra_load"] == pytest.approx(0.5, abs=0.05)
    assert "degraded_no_faults" in parm and out["setup"]["k"] == 2 and out["net_ms"] >= 0
    for rows in (out["real"], out["sim"]):  # two runs per cell, pooled, each run's tail kept as the spread
        assert all(len(r["p999_runs"]) == 2 and r["queries"] == 2 * int(max(40, r["rate"] * 0.5)) for r in rows)
