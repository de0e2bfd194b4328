"""Fault hooks on real workers: CPU contention pinned beside a worker, crashes from a fault plan."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import pytest
import torch
from serving_fakes import write_checkpoints

from parm.artifacts import load_parity
from parm.models.checkpoint import save_model
from parm.models.mlp import MLP
from parm.serving.faults import FaultPlan
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.instance import InstancePool
from parm.serving.local import LocalBackend
from parm.serving.worker import WorkerSpec

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU pinning needs Linux")


@pytest.fixture(scope="module")
def heavy_base(tmp_path_factory) -> str:
    """An MLP big enough (about 1 ms a forward on one thread) for CPU contention to show."""
    torch.manual_seed(0)
    spec = {"_target_": "parm.models.mlp.MLP", "input_shape": [1, 28, 28], "num_classes": 10, "hidden": [2048, 2048]}
    model = MLP(input_shape=(1, 28, 28), num_classes=10, hidden=(2048, 2048))
    return str(save_model(tmp_path_factory.mktemp("heavy") / "base.pt", model, spec))


async def _median_ms(inst, x: torch.Tensor, n: int = 25) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await inst.infer(i, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


@needs_affinity
def test_contention_starts_stops_and_slows_the_worker(heavy_base: str) -> None:
    async def go() -> tuple[float, float, float]:
        backend = LocalBackend([WorkerSpec("model-0", heavy_base)])
        await backend.start()
        inst = backend.instances[0]
        try:
            x = torch.randn(1, 28, 28)
            await _median_ms(inst, x, 5)  # warm up
            before = await _median_ms(inst, x)
            allowed = os.sched_getaffinity(inst.pid)
            busy = backend.add_contention(inst, processes=3, seconds=60.0)
            await asyncio.sleep(0.3)
            assert all(p.poll() is None for p in busy)
            cpu = os.sched_getaffinity(inst.pid)
            assert len(cpu) == 1 and all(os.sched_getaffinity(p.pid) == cpu for p in busy)
            during = await _median_ms(inst, x)
            backend.stop_contention()
            assert all(p.poll() is not None for p in busy)
            assert os.sched_getaffinity(inst.pid) == allowed
            # Busy processes that run out their time end on their own.
            short = backend.add_contention(inst, processes=1, seconds=0.2)
            await asyncio.sleep(1.0)
            assert short[0].poll() is not None
            backend.stop_contention()
            return before, during, await _median_ms(inst, x)
        finally:
            await backend.stop()

    before, during, after = asyncio.run(asyncio.wait_for(go(), 120))
    # The other cores' load moves the baseline, so compare with the quieter of before and after.
    assert during > 1.5 * min(before, after), (f"median {before:.2f} ms alone, {during:.2f} ms beside 3 busy "
                                               f"processes, {after:.2f} ms after")


def test_contention_needs_a_running_worker(heavy_base: str) -> None:
    backend = LocalBackend([WorkerSpec("model-0", heavy_base)])
    with pytest.raises(ValueError, match="not running"):
        backend.add_contention(backend.instances[0])


def test_planned_crashes_lose_no_query(tmp_path) -> None:
    """The bench's --crash-rate path: crash times in a FaultPlan kill workers mid-run."""
    base, parity = write_checkpoints(tmp_path)
    code = load_parity(parity).code

    async def go():
        backend = LocalBackend.for_code(base, parity, n_model=3, n_parity=1, max_batch=4, service_time_s=0.005)
        await backend.start()
        try:
            backend.set_faults([FaultPlan(crashes=(0.2,)), FaultPlan(), FaultPlan(crashes=(0.4,)), FaultPlan()])
            frontend = Frontend(InstancePool(backend.instances), code, FrontendConfig())

            async def one(i: int):
                await asyncio.sleep(0.004 * i)
                return await frontend.predict(torch.randn(1, 28, 28))

            results = await asyncio.gather(*(one(i) for i in range(200)), return_exceptions=True)
            await frontend.close()
            return results, frontend, [i.restarts for i in backend.instances]
        finally:
            await backend.stop()

    results, frontend, restarts = asyncio.run(asyncio.wait_for(go(), 120))
    assert all(not isinstance(r, BaseException) for r in results)
    assert frontend.stats.answered == 200 and frontend.stats.failed == 0
    assert restarts[0] >= 1 and restarts[2] >= 1
