"""The ray backend on CPU: Ray Serve deployments behind the same frontend (skipped without parm[ray])."""

from __future__ import annotations

import asyncio

import pytest
import torch
from serving_fakes import write_checkpoints

pytest.importorskip("ray.serve", reason="the ray backend needs Ray Serve: pip install 'parm[ray]'")

from parm.artifacts import load_parity  # noqa: E402
from parm.models.checkpoint import load_model  # noqa: E402
from parm.serving.frontend import Frontend, FrontendConfig  # noqa: E402
from parm.serving.instance import InstancePool  # noqa: E402
from parm.serving.rayserve import RayBackend  # noqa: E402

pytestmark = pytest.mark.slow


def test_ray_instances_serve_coded_groups_and_survive_a_replica_crash(tmp_path) -> None:
    base, parity = write_checkpoints(tmp_path)
    code = load_parity(parity).code
    model, _ = load_model(base)
    xs = torch.randn(60, 1, 28, 28)

    async def go():
        backend = RayBackend.for_code(base, parity, n_model=3, n_parity=1, max_batch=4, service_time_s=0.002)
        await backend.start()
        try:
            pids = await asyncio.gather(*(i.call("pid") for i in backend.instances))
            frontend = Frontend(InstancePool(backend.instances), code, FrontendConfig(decode_grace_s=0.002))

            async def one(i: int):
                await asyncio.sleep(0.005 * i)
                return await frontend.predict(xs[i])

            tasks = [asyncio.ensure_future(one(i)) for i in range(len(xs))]
            await asyncio.sleep(0.1)
            crash = asyncio.ensure_future(backend.instances[0].call("crash"))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(crash, return_exceptions=True)
            await frontend.close()
            # Ray Serve replaced the dead replica: a new process answers as model-0.
            after = await asyncio.wait_for(backend.instances[0].call("pid"), 120)
            return pids, after, results, frontend
        finally:
            await backend.stop()

    pids, after, results, frontend = asyncio.run(asyncio.wait_for(go(), 300))
    assert len(set(pids)) == 4  # one replica (process) per instance: group members on distinct replicas
    assert all(not isinstance(r, BaseException) for r in results), [r for r in results if isinstance(r, BaseException)]
    assert frontend.stats.answered == 60 and frontend.stats.failed == 0
    assert after != pids[0]
    with torch.no_grad():
        want = model.eval()(xs)
    for res, w in zip(results, want, strict=False):
        if not res.degraded:
            torch.testing.assert_close(res.output, w, rtol=1e-5, atol=1e-5)
