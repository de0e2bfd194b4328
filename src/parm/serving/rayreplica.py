"""The Ray Serve replica of the ``ray`` backend: one model from an artifact in Ray's object store.

The replica gets its checkpoint's bytes from the object store (put there by the process that read
the file), writes them to a private temporary file and loads them with the same loaders, and checks,
as a local worker: no node needs the frontend's filesystem. It batches with ``serve.batch``, emulates
accelerator time, and follows a :class:`~parm.serving.faults.FaultPlan` (slow periods, crashes), so
the benchmark injects the same faults on Ray as on local workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import threading
import time

import numpy as np
import torch

from parm.serving.faults import FaultPlan
from parm.serving.worker import WorkerSpec, load_instance_model

try:
    import ray
    from ray import serve
except ImportError as e:
    raise ImportError("the ray backend needs Ray Serve; install it with `pip install 'parity-models[ray]'`.") from e


LOOPBACK_REPLICA_ENV = "PARM_RAY_LOOPBACK"


def _bind_grpc_to_loopback() -> None:
    """Make this replica's inter-deployment gRPC server listen on 127.0.0.1, not on every interface.

    Ray Serve 2.60 binds it to ``[::]`` unconditionally once the user's constructor has run (parm
    never uses it: requests travel as Ray actor calls). On a cluster that parm started bound to
    loopback, nothing else listens beyond 127.0.0.1, so neither should this.
    """
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "parm_loopback", False):
        return

    def loopback(server: object, address: str) -> int:
        return bind(server, address.replace("[::]", "127.0.0.1"))

    loopback.parm_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = loopback


def _write(blob: bytes, folder: str, name: str) -> str:
    """``blob`` as the file ``folder/name``; its path."""
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(blob)
    return path


class ParmReplica:
    """A Ray Serve replica: one model, requests batched up to ``spec.max_batch``.

    Args:
        spec: what to serve; ``spec.checkpoint`` is only the file's name (for messages).
        artifact: ``[ObjectRef]`` of the checkpoint's bytes (in a list, so that Ray hands the
            reference over rather than resolving it in the controller); a parity replica of a
            Learning-a-Code artifact gets ``[parity.pt ref, F's ref]``, since F answers its queries.
    """

    def __init__(self, spec: WorkerSpec, artifact: list[ray.ObjectRef]) -> None:
        if os.environ.get(LOOPBACK_REPLICA_ENV) == "1":
            _bind_grpc_to_loopback()
        torch.set_num_threads(spec.threads)
        with tempfile.TemporaryDirectory(prefix="parm-replica-") as tmp:
            path = _write(ray.get(artifact[0]), tmp, os.path.basename(spec.checkpoint) or "model.pt")
            base = _write(ray.get(artifact[1]), tmp, "F-" + os.path.basename(spec.base or "base.pt")) \
                if len(artifact) > 1 else None
            self.model = load_instance_model(dataclasses.replace(spec, checkpoint=path, base=base))
        self.service_time_s = spec.service_time_s
        self.plan, self.epoch = FaultPlan(), time.time()
        self._crash_timers: list[threading.Timer] = []
        self.__call__.set_max_batch_size(spec.max_batch)  # type: ignore[attr-defined]  # added by serve.batch

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.stack(xs)).float()).numpy()
        busy = max(time.perf_counter() - start, self.service_time_s)
        # Emulated accelerator time and injected slow periods: the CPU is left to the others.
        wait = busy * self.plan.factor(time.time() - self.epoch) - (time.perf_counter() - start)
        if wait > 0:
            await asyncio.sleep(wait)
        return list(out)

    async def watch(self) -> None:
        """Never returns: the frontend keeps one such call open per replica, so that the replica's
        death fails it at once (Ray tells the caller when an actor dies) instead of waiting for a
        poll of Serve's status or for the restart."""
        await asyncio.Event().wait()

    def where(self) -> tuple[str, int]:
        """``(node id, pid)`` of this replica: the frontend's failure domain, and a process check."""
        return ray.get_runtime_context().get_node_id(), os.getpid()

    def set_faults(self, plan: dict, epoch: float) -> None:
        """Arm a fault plan (times relative to wall time ``epoch``); a new plan cancels the old crashes."""
        for timer in self._crash_timers:
            timer.cancel()
        self.plan, self.epoch = FaultPlan.from_dict(plan), epoch
        now = time.time() - epoch
        self._crash_timers = [threading.Timer(t - now, os._exit, (17,)) for t in self.plan.crashes if t > now]
        for timer in self._crash_timers:
            timer.daemon = True
            timer.start()

    def crash(self) -> None:
        """Fault hook: the replica's process dies now (Ray Serve starts a new one)."""
        os._exit(17)
