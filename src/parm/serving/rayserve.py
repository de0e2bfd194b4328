"""The ``ray`` backend: every instance is a Ray Serve deployment with one replica (``pip install parm[ray]``).

One deployment per instance (``model-0``, ..., ``parity-0``, ...), each a single replica holding F or
one parity model, so the frontend's :class:`~parm.serving.instance.InstancePool` keeps deciding where
each request goes: the members of a coding group land on distinct instances, hence on distinct
replicas (on a cluster, on whichever nodes Ray placed them). Ray Serve restarts a replica that dies;
the requests it held fail with :class:`InstanceError`, and the frontend decodes or re-sends them.
No HTTP proxy is started (the frontend talks to the replicas through deployment handles), and a
cluster started here binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from parm.serving.instance import Instance, InstanceError, RequestCancelled
from parm.serving.worker import WorkerSpec, load_instance_model

try:
    import ray
    from ray import serve
    from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError
    from ray.serve.exceptions import RayServeException, RequestCancelledError
    from ray.serve.handle import DeploymentHandle, DeploymentResponse
except ImportError as e:
    raise ImportError("the ray backend needs Ray Serve; install it with `pip install 'parm[ray]'`.") from e


class _Replica:
    """A Ray Serve replica: one model, requests batched up to ``spec.max_batch``."""

    def __init__(self, spec: WorkerSpec) -> None:
        torch.set_num_threads(spec.threads)
        self.model = load_instance_model(spec)
        self.service_time_s = spec.service_time_s
        self.__call__.set_max_batch_size(spec.max_batch)  # type: ignore[attr-defined]  # added by serve.batch

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.stack(xs)).float()).numpy()
        # Emulated accelerator time, as in the local worker: the CPU is left to the others.
        wait = self.service_time_s - (time.perf_counter() - start)
        if wait > 0:
            await asyncio.sleep(wait)
        return list(out)

    def pid(self) -> int:
        """The replica's process id (tests check that instances are distinct processes)."""
        return os.getpid()

    def crash(self) -> None:
        """Fault hook: the replica's process dies now (Ray Serve starts a new one)."""
        os._exit(17)


class RayInstance(Instance):
    """An instance served by a one-replica Ray Serve deployment.

    Args:
        spec: what the replica loads and how it serves.
        max_ongoing_requests: requests the replica accepts at once (the pool's capacity is the real limit).
    """

    def __init__(self, spec: WorkerSpec, max_ongoing_requests: int = 64) -> None:
        super().__init__(spec.name, "model" if spec.parity_index is None else "parity", spec.parity_index)
        self.spec = spec
        self.max_ongoing_requests = max_ongoing_requests
        self.handle: DeploymentHandle | None = None
        self._inflight: dict[int, DeploymentResponse] = {}

    @property
    def alive(self) -> bool:
        return self.handle is not None

    def deploy(self) -> None:
        """Deploy (blocking) as the Serve application named after the instance."""
        deployment = serve.deployment(name=self.name, num_replicas=1, max_ongoing_requests=self.max_ongoing_requests,
                                      ray_actor_options={"num_cpus": 0})(_Replica)
        self.handle = serve.run(deployment.bind(self.spec), name=self.name, route_prefix=None)

    async def infer(self, request_id: int, x: torch.Tensor) -> torch.Tensor:
        if self.handle is None:
            raise InstanceError(f"{self.name} is not deployed")
        response = cast(DeploymentResponse, self.handle.remote(x.detach().cpu().numpy()))
        self._inflight[request_id] = response
        try:
            return torch.from_numpy(np.array(await response))  # a writable copy of the reply
        except (RequestCancelledError, TaskCancelledError, asyncio.CancelledError) as e:
            if request_id in self._inflight:
                raise  # not withdrawn by cancel(): the frontend itself is being cancelled
            raise RequestCancelled(request_id) from e
        except (RayActorError, RayTaskError, RayServeException) as e:
            raise InstanceError(f"{self.name}: {type(e).__name__}: {e}") from e
        finally:
            self._inflight.pop(request_id, None)

    def cancel(self, request_id: int) -> None:
        response = self._inflight.pop(request_id, None)
        if response is not None:
            response.cancel()

    async def call(self, method: str) -> object:
        """Call a replica method (``pid``, ``crash``) and await its result."""
        if self.handle is None:
            raise InstanceError(f"{self.name} is not deployed")
        return await getattr(self.handle, method).remote()


class RayBackend:
    """Deploys, and removes, one Ray Serve application per instance.

    Args:
        specs: one :class:`WorkerSpec` per instance.
        address: a running Ray cluster (``"auto"``, ``"ray://host:10001"``); None starts a local one
            bound to 127.0.0.1 and shuts it down in :meth:`stop`.
        num_cpus: CPUs of a locally started cluster (None: all).
    """

    def __init__(self, specs: Sequence[WorkerSpec], address: str | None = None, num_cpus: int | None = None) -> None:
        self.instances = [RayInstance(s) for s in specs]
        self.address = address
        self.num_cpus = num_cpus
        self._owns_cluster = False

    @classmethod
    def for_code(cls, base: str, parity: str | None, n_model: int, n_parity: int, r: int = 1,
                 address: str | None = None, **spec_kwargs: object) -> RayBackend:
        """``n_model`` instances of F and ``n_parity`` parity instances, parity indices round-robin."""
        if n_parity and parity is None:
            raise ValueError("parity instances need a parity checkpoint (parity.pt).")
        specs = [WorkerSpec(f"model-{i}", base, **spec_kwargs) for i in range(n_model)]  # type: ignore[arg-type]
        specs += [WorkerSpec(f"parity-{i}", str(parity), parity_index=i % r, base=base, **spec_kwargs)  # type: ignore[arg-type]
                  for i in range(n_parity)]
        return cls(specs, address=address)

    async def start(self) -> None:
        """Connect to (or start) Ray and deploy every instance."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start_blocking)

    def _start_blocking(self) -> None:
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")
                self._owns_cluster = True
            else:
                ray.init(address=self.address, log_to_driver=False)
        serve.start(proxy_location="Disabled")
        for inst in self.instances:
            inst.deploy()

    async def stop(self) -> None:
        """Delete the applications; shut Ray down if this backend started it."""
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._stop_blocking))

    def _stop_blocking(self) -> None:
        for inst in self.instances:
            if inst.handle is not None:
                serve.delete(inst.name)
                inst.handle = None
        if self._owns_cluster:
            serve.shutdown()
            ray.shutdown()
            self._owns_cluster = False
