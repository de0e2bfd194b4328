"""The ``ray`` backend: every instance is a one-replica Ray Serve deployment (``pip install 'parity-models[ray]'``).

One deployment per instance (``model-0``, ..., ``parity-0``, ...), each a single
:class:`~parm.serving.rayreplica.ParmReplica`, so the frontend's
:class:`~parm.serving.instance.InstancePool` keeps deciding where each request goes. What Ray adds:

- **Placement by node** (:mod:`parm.serving.raynodes`). On a multi-node cluster each replica is
  pinned to a node with a label selector (``ray.io/node-id``): model replicas round-robin over one
  set of nodes, parity replicas over another, so a coding group's members and parities can sit on
  distinct nodes; each instance's failure *domain* is its node, and the frontend never puts two
  requests of a group in one domain when another is free. A replica whose node is gone falls back to any other node.
- **Health.** A failed call, the replica's death (noticed through a never-answered *watch* call kept
  open on it) or its node's marks the instance down at once: its in-flight requests fail with
  :class:`InstanceError` (the frontend decodes or re-sends them), and new requests avoid it until a
  probe call reaches its restarted replica.
- **A lean call path**: replicas are called over Serve's gRPC channel with plain pickle, Serve's
  access log is off, and replicas keep Serve's log lines out of stderr (which Ray's log monitors tail).
- **Artifacts through the object store**: the checkpoint's bytes are put in Ray's object store
  once; replicas on any node read them from there, not from a shared path (the parity replicas of a
  Learning-a-Code artifact also get F's bytes: F answers their queries).
- **One lifecycle.** Every application is deployed by one ``serve.run_many`` (replicas start in
  parallel) and deleted together. A cluster this backend starts binds 127.0.0.1 only
  (:func:`~parm.serving.raycluster.loopback_only`) and is shut down by :meth:`RayBackend.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from parm.serving.faults import FaultPlan
from parm.serving.instance import Instance, InstanceError, RequestCancelled
from parm.serving.worker import WorkerSpec

# Serve's leaner request path: the router runs in the caller's event loop and user code in the
# replica's, not each in a thread of its own. Read when ray.serve is first imported.
THROUGHPUT_ENV = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
for _key, _value in THROUGHPUT_ENV.items():
    os.environ.setdefault(_key, _value)
# Replicas only: Serve's log lines go to its log files, not also to stderr (which Ray's log monitor
# tails and publishes through the GCS, a line per query with the access log on).
QUIET_REPLICA_ENV = {"RAY_SERVE_LOG_TO_STDERR": "0"}

try:
    import ray
    from ray import serve
    from ray.exceptions import RayError
    from ray.serve.exceptions import RayServeException, RequestCancelledError
    from ray.serve.handle import DeploymentHandle, DeploymentResponse
except ImportError as e:
    raise ImportError("the ray backend needs Ray Serve; install it with `pip install 'parity-models[ray]'`.") from e

from parm.serving.raycluster import LOOPBACK_ENV, loopback_only  # noqa: E402
from parm.serving.raynodes import alive_nodes, dead_nodes, placement  # noqa: E402
from parm.serving.rayreplica import LOOPBACK_REPLICA_ENV, ParmReplica  # noqa: E402

log = logging.getLogger(__name__)
NODE_LABEL = "ray.io/node-id"
ACTOR_OPTIONS = frozenset({"num_cpus", "num_gpus", "resources", "memory", "accelerator_type", "runtime_env"})
_CALL_ERRORS = (RayError, RayServeException)


@dataclass(frozen=True)
class RaySettings:
    """How the ray backend deploys its replicas.

    Args:
        actor_options: Ray Serve ``ray_actor_options`` of every replica (``num_cpus``, ``num_gpus``,
            ``resources``, ``memory``, ``accelerator_type``, ``runtime_env``).
        spread: pin replicas to nodes (models and parities on separate node sets) on a multi-node cluster.
        max_ongoing_requests: requests a replica accepts at once (the pool's capacity is the real limit).
        health_check_period_s, health_check_timeout_s: Serve's health checks of each replica.
        monitor_period_s: how often the backend looks for dead nodes and probes down instances.
        loopback: a cluster started by the backend binds 127.0.0.1 only.
        grpc: call replicas over Serve's gRPC channel (handle option ``_by_reference=False``, plain
            pickle both ways) instead of as Ray actor tasks: less CPU per call in the frontend's process
            and the replica (the ``ray`` vs ``ray-actor`` rows of docs/results/ray_latency.md).
        access_log: Serve's access log, a line per request in each replica's log (off: those lines,
            and Ray's log monitor reading them, cost CPU per query).
        shutdown_poll_s: Serve's ``graceful_shutdown_wait_loop_s``: how often a replica being removed
            checks that nothing is in flight (Serve's default 2 s made every removal take 2 s).
    """

    actor_options: Mapping[str, Any] = field(default_factory=lambda: {"num_cpus": 0})
    spread: bool = True
    max_ongoing_requests: int = 64
    health_check_period_s: float = 1.0
    health_check_timeout_s: float = 5.0
    monitor_period_s: float = 1.0
    loopback: bool = True
    grpc: bool = True
    access_log: bool = False
    shutdown_poll_s: float = 0.1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.actor_options) - ACTOR_OPTIONS)
        if unknown:
            raise ValueError(f"serve.ray.actor_options: unknown option(s) {unknown}; Ray Serve replicas take "
                             f"{sorted(ACTOR_OPTIONS)} (e.g. num_gpus: 1, resources: {{accelerator: 1}}).")
        if self.max_ongoing_requests < 1 or min(self.health_check_period_s, self.health_check_timeout_s,
                                                self.monitor_period_s, self.shutdown_poll_s) <= 0:
            raise ValueError("serve.ray: max_ongoing_requests >= 1 and positive health-check, monitor and "
                             "shutdown-poll periods are required, got "
                             f"max_ongoing_requests={self.max_ongoing_requests}, "
                             f"health_check_period_s={self.health_check_period_s}, "
                             f"health_check_timeout_s={self.health_check_timeout_s}, "
                             f"monitor_period_s={self.monitor_period_s}, shutdown_poll_s={self.shutdown_poll_s}.")


class RayInstance(Instance):
    """An instance served by a one-replica Ray Serve deployment (the application of the same name).

    Args:
        spec: what the replica loads and how it serves.
    """

    shares_domains = True

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec.name, "model" if spec.parity_index is None else "parity", spec.parity_index)
        self.spec = spec
        self.handle: DeploymentHandle | None = None
        self.node: str | None = None
        self.pid: int | None = None
        self.downs = 0
        self._up = False
        self._plan: tuple[FaultPlan, float] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: dict[int, tuple[DeploymentResponse, asyncio.Future[torch.Tensor]]] = {}
        self._watch: DeploymentResponse | None = None

    @property
    def alive(self) -> bool:
        return self.handle is not None and self._up

    @property
    def domain(self) -> str:
        return self.node or self.name

    async def infer(self, request_id: int, x: torch.Tensor) -> torch.Tensor:
        if self.handle is None or not self._up:
            raise InstanceError(f"{self.name} is down")
        response = cast(DeploymentResponse, self.handle.remote(x.detach().cpu().numpy()))
        waiter: asyncio.Future[torch.Tensor] = asyncio.get_running_loop().create_future()
        self._inflight[request_id] = (response, waiter)
        waiter.add_done_callback(lambda _: self._inflight.pop(request_id, None))
        task = asyncio.ensure_future(self._settle(response, waiter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await waiter

    async def _settle(self, response: DeploymentResponse, waiter: asyncio.Future[torch.Tensor]) -> None:
        """Resolve ``waiter`` from the replica's answer, unless :meth:`mark_down` failed it first."""
        try:
            out: torch.Tensor | BaseException = torch.from_numpy(np.array(await response))  # a writable copy
        except (RequestCancelledError, asyncio.CancelledError):
            out = RequestCancelled(self.name)
        except _CALL_ERRORS as e:
            out = InstanceError(f"{self.name}: {type(e).__name__}: {e}")
            self.mark_down(f"a call failed ({type(e).__name__})")
        if waiter.done():
            return
        if isinstance(out, BaseException):
            waiter.set_exception(out)
        else:
            waiter.set_result(out)

    def cancel(self, request_id: int) -> None:
        entry = self._inflight.get(request_id)
        if entry is not None:
            entry[0].cancel()  # Ray confirms: infer then raises RequestCancelled

    def mark_down(self, why: str) -> None:
        """Stop sending here and fail every in-flight request now (the frontend decodes or re-sends them)."""
        if self._up:
            self.downs += 1
        self._up = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        inflight, self._inflight = self._inflight, {}
        for response, waiter in inflight.values():
            response.cancel()
            if not waiter.done():
                waiter.set_exception(InstanceError(f"{self.name} is down: {why}"))

    async def probe(self, timeout_s: float) -> bool:
        """Ask the replica where it runs; on an answer the instance is up (on that node)."""
        if self.handle is None:
            return False
        try:
            self.node, self.pid = await asyncio.wait_for(self.handle.where.remote(), timeout_s)
        except (asyncio.TimeoutError, *_CALL_ERRORS):
            return False
        if self._plan is not None:  # a restarted replica keeps the run's fault plan, as a local worker does
            with contextlib.suppress(*_CALL_ERRORS):
                await self.call("set_faults", self._plan[0].to_dict(), self._plan[1])
        self._up = True
        self._arm_watch()
        return True

    def _arm_watch(self) -> None:
        """Keep one never-answered call open on the replica: when the replica dies Ray fails that call
        at once and the instance is marked down, whether or not a query was in flight, and
        without waiting for Serve's controller (which would queue new calls until the restart)."""
        if self.handle is None or self._watch is not None:
            return
        self._watch = cast(DeploymentResponse, self.handle.watch.remote())
        task = asyncio.ensure_future(self._await_death(self._watch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_death(self, watch: DeploymentResponse) -> None:
        try:
            await watch
        except (RequestCancelledError, asyncio.CancelledError):
            return
        except _CALL_ERRORS as e:
            if watch is self._watch:
                self.mark_down(f"its replica died ({type(e).__name__})")

    async def set_faults(self, plan: FaultPlan, epoch: float, timeout_s: float = 30.0) -> None:
        """Arm a fault plan (times relative to wall time ``epoch``); kept for a restarted replica."""
        self._plan = (plan, epoch)
        if self.alive:  # a down replica gets the plan when it is back (probe)
            await asyncio.wait_for(self.call("set_faults", plan.to_dict(), epoch), timeout_s)

    async def call(self, method: str, *args: Any) -> Any:
        """Call a replica method (``where``, ``set_faults``, ``crash``) and await its result."""
        if self.handle is None:
            raise InstanceError(f"{self.name} is not deployed")
        try:
            return await getattr(self.handle, method).remote(*args)
        except _CALL_ERRORS as e:
            self.mark_down(f"a call failed ({type(e).__name__})")
            raise


class RayBackend:
    """Deploys one Ray Serve application per instance, watches their health, removes them together.

    Args:
        specs: one :class:`WorkerSpec` per instance.
        address: a running Ray cluster (``"auto"``, ``"ray://host:10001"``); None connects to the
            cluster this process already joined, or starts one on 127.0.0.1 and stops it in :meth:`stop`.
        settings: deployment options.
        num_cpus: CPUs of a locally started cluster (None: all).
    """

    def __init__(self, specs: Sequence[WorkerSpec], address: str | None = None,
                 settings: RaySettings | None = None, num_cpus: int | None = None) -> None:
        self.instances = [RayInstance(s) for s in specs]
        self.address = address
        self.settings = settings or RaySettings()
        self.num_cpus = num_cpus
        self.on_change: list[Any] = []  # async callables run when an instance comes back (pool.notify)
        self._owns_cluster = False
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    def for_code(cls, base: str, parity: str | None, n_model: int, n_parity: int, r: int = 1,
                 address: str | None = None, settings: RaySettings | None = None,
                 **spec_kwargs: Any) -> RayBackend:
        """``n_model`` instances of F and ``n_parity`` parity instances, parity indices round-robin."""
        if n_parity and parity is None:
            raise ValueError("parity instances need a parity checkpoint (parity.pt).")
        specs = [WorkerSpec(f"model-{i}", base, **spec_kwargs) for i in range(n_model)]
        # base: a Learning-a-Code artifact's parity instances run F itself (its bytes are shipped beside the artifact).
        specs += [WorkerSpec(f"parity-{i}", str(parity), parity_index=i % r, base=base, **spec_kwargs)
                  for i in range(n_parity)]
        return cls(specs, address=address, settings=settings)

    async def start(self) -> None:
        """Connect to (or start) Ray, deploy every instance at once, and start watching their health."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start_blocking)
        if self.settings.grpc:  # options() starts the handle's router: in this loop, not the executor's thread
            for inst in self.instances:
                assert inst.handle is not None
                inst.handle = inst.handle.options(_by_reference=False, request_serialization="pickle",
                                                  response_serialization="pickle")
        ok = await asyncio.gather(*(i.probe(60.0) for i in self.instances))
        if not all(ok):
            raise InstanceError(f"replicas of {[i.name for i, up in zip(self.instances, ok, strict=True) if not up]} "
                                "did not answer within 60 s after deployment; see Ray's logs.")
        self._monitor = loop.create_task(self._watch())

    def _start_blocking(self) -> None:
        if not ray.is_initialized():
            if self.address is None:
                if self.settings.loopback:
                    loopback_only()
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
                self._owns_cluster = True
            else:
                ray.init(address=self.address, log_to_driver=False)
        serve.start(proxy_location="Disabled")
        artifacts = _put_artifacts([i.spec for i in self.instances])
        nodes = placement(self.instances, alive_nodes()) if self.settings.spread else {}
        targets = [serve.RunTarget(self._deployment(i, nodes.get(i.name)).bind(i.spec, artifacts[i.name]),
                                   name=i.name, route_prefix=None) for i in self.instances]
        handles = serve.run_many(targets)
        for inst, handle in zip(self.instances, handles, strict=True):
            inst.handle = handle

    def _deployment(self, inst: RayInstance, node: str | None) -> Any:
        options = dict(self.settings.actor_options)
        runtime_env = dict(options.get("runtime_env") or {})
        env = {**THROUGHPUT_ENV, **QUIET_REPLICA_ENV}
        if os.environ.get(LOOPBACK_ENV) == "0":  # this process started the cluster bound to loopback
            env[LOOPBACK_REPLICA_ENV] = "1"
        runtime_env["env_vars"] = {**env, **dict(runtime_env.get("env_vars") or {})}
        options["runtime_env"] = runtime_env
        if node is not None:
            options["label_selector"] = {NODE_LABEL: node}
            options["fallback_strategy"] = [{"label_selector": {NODE_LABEL: f"!{node}"}}]
        return serve.deployment(ParmReplica, name=inst.name, num_replicas=1, ray_actor_options=options,
                                max_ongoing_requests=self.settings.max_ongoing_requests,
                                health_check_period_s=self.settings.health_check_period_s,
                                health_check_timeout_s=self.settings.health_check_timeout_s,
                                graceful_shutdown_wait_loop_s=self.settings.shutdown_poll_s,
                                logging_config={"enable_access_log": self.settings.access_log})

    async def _watch(self) -> None:
        """Mark down instances on dead nodes; bring back down instances whose (restarted) replica answers.

        A replica's own death is noticed by its watch call (:meth:`RayInstance._arm_watch`), not here:
        this loop used to ask ``serve.status()`` every period, a sixth of the frontend process's CPU
        samples at 150 q/s in a profile (Serve rebuilds and pickles every deployment's config for it).
        """
        loop = asyncio.get_running_loop()
        period = self.settings.monitor_period_s
        while True:
            await asyncio.sleep(period)
            try:
                dead = await asyncio.wait_for(loop.run_in_executor(None, dead_nodes), 5 * period)
                for inst in self.instances:
                    if inst.alive and inst.node in dead:  # the GCS knows as soon as its health checks fail
                        inst.mark_down("its node is dead")
                down = [i for i in self.instances if not i.alive and i.handle is not None]
                back = await asyncio.gather(*(i.probe(4 * period) for i in down))
                if any(back):
                    for notify in self.on_change:
                        await notify()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the watch must outlive any one failed look at the cluster
                log.warning("health check of the ray instances failed (%s: %s); retrying", type(e).__name__, e)

    async def set_faults(self, plans: Sequence[FaultPlan], epoch: float | None = None) -> float:
        """Arm plan i on instance i, relative to ``epoch`` (default now); returns the epoch."""
        epoch = time.time() if epoch is None else epoch
        await asyncio.gather(*(i.set_faults(p, epoch) for i, p in zip(self.instances, plans, strict=False)))
        return epoch

    async def stop(self) -> None:
        """Delete every application together; shut Ray down if this backend started it."""
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        for inst in self.instances:
            inst.mark_down("stopped")
        await asyncio.get_running_loop().run_in_executor(None, self._stop_blocking)

    def _stop_blocking(self) -> None:
        names = [i.name for i in self.instances if i.handle is not None]
        if self._owns_cluster:
            serve.shutdown()  # removes every application and the controller at once
            ray.shutdown()
            self._owns_cluster = False
        elif names:
            for name in names:
                serve.delete(name, _blocking=False)
            deadline = time.monotonic() + 60
            while set(names) & set(serve.status().applications) and time.monotonic() < deadline:
                time.sleep(0.1)
        for inst in self.instances:
            inst.handle = None


def _put_artifacts(specs: Sequence[WorkerSpec]) -> dict[str, list[Any]]:
    """Each instance's ``[checkpoint ref]``, or ``[parity.pt ref, F's ref]`` for the parity instances of a
    Learning-a-Code artifact (F answers its parity queries); each file is put in the object store once."""
    from parm.artifacts import references_base

    refs: dict[str, Any] = {}

    def put(path: str) -> Any:
        if path not in refs:
            refs[path] = ray.put(_read(path))
        return refs[path]

    lac = {s.checkpoint: references_base(s.checkpoint) for s in specs if s.parity_index is not None and s.base}
    return {s.name: [put(s.checkpoint), *([put(s.base)] if s.base and lac.get(s.checkpoint) else [])]
            for s in specs}


def _read(path: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the base.pt/parity.pt written by train.py.")
    with open(path, "rb") as f:
        return f.read()
