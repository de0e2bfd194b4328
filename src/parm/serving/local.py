"""The ``local`` backend: each instance is a worker process on this machine, reached over loopback.

:class:`LocalInstance` speaks :mod:`parm.serving.wire` to its worker; when the connection drops (a
crash), outstanding requests fail with :class:`InstanceError` (the frontend decodes or re-sends them)
and the worker is restarted. :class:`LocalBackend` starts and stops a set of instances and can put
busy processes beside a worker (CPU contention).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import torch

from parm.serving.faults import FaultPlan
from parm.serving.instance import Instance, InstanceError, RequestCancelled
from parm.serving.wire import pack, read_frame
from parm.serving.worker import WorkerSpec, worker_main

_CTX = mp.get_context("spawn")
_BURN = "import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end:\n    pass\n"


class LocalInstance(Instance):
    """A worker process holding F or one parity model.

    Args:
        spec: what the worker loads and how it serves.
        start_timeout_s: how long a worker may take to load and report its port.
        restart: restart the worker when it dies.
    """

    def __init__(self, spec: WorkerSpec, start_timeout_s: float = 120.0, restart: bool = True) -> None:
        super().__init__(spec.name, "model" if spec.parity_index is None else "parity", spec.parity_index)
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self.restart = restart
        self.restarts = 0
        self.process: BaseProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        # Wire ids are this instance's own, never reused: a frontend's request ids restart at 0, and a
        # late answer or cancel for an old request must never match a new one.
        self._wire_ids = itertools.count()
        self._wire: dict[int, int] = {}
        self._pending: dict[int, asyncio.Future[torch.Tensor]] = {}
        self._cancelled: set[int] = set()  # wire ids cancelled, awaiting the worker's "dropped" or answer
        self._started: dict[int, asyncio.Future[None]] = {}  # wire id -> done once the worker runs it
        self._plan: tuple[FaultPlan, float] | None = None
        self._closing = False

    @property
    def alive(self) -> bool:
        return self._writer is not None and not self._closing

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self) -> None:
        """Spawn the worker and connect to it."""
        self._closing = False
        parent, child = _CTX.Pipe(duplex=False)
        self.process = _CTX.Process(target=worker_main, args=(self.spec, child), name=f"parm-{self.name}",
                                    daemon=True)
        self.process.start()
        child.close()
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, parent.poll, self.start_timeout_s)
        if not ready:
            self.process.kill()
            raise InstanceError(f"worker {self.name} did not start within {self.start_timeout_s} s "
                                f"(exit code {self.process.exitcode}); is {self.spec.checkpoint} loadable?")
        try:
            port = parent.recv()
        except EOFError as e:
            raise InstanceError(f"worker {self.name} died while loading {self.spec.checkpoint} "
                                f"(exit code {self.process.exitcode}); see its stderr.") from e
        if self._closing:  # stopped while this (re)start was loading
            self.process.kill()
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._writer = writer
        self._reader_task = loop.create_task(self._read(reader))
        if self._plan is not None:
            self._send({"op": "faults", "plan": self._plan[0].to_dict(), "epoch": self._plan[1]})

    async def stop(self) -> None:
        """Close the connection (the worker exits on EOF) and reap the process."""
        self._closing = True
        connected = self._writer is not None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        self._fail_pending("instance stopped")
        if self.process is not None:
            # A connected worker exits on EOF; one still loading (a restart) would wait for a
            # connection that never comes, so it is killed at once.
            if connected:
                await asyncio.get_running_loop().run_in_executor(None, self.process.join, 5.0)
            if self.process.is_alive():
                self.process.kill()
                await asyncio.get_running_loop().run_in_executor(None, self.process.join, 5.0)

    def set_faults(self, plan: FaultPlan, epoch: float) -> None:
        """Arm a fault plan (times relative to wall time ``epoch``); kept across restarts."""
        self._plan = (plan, epoch)
        if self.alive:
            self._send({"op": "faults", "plan": plan.to_dict(), "epoch": epoch})

    def crash(self) -> None:
        """Fault hook: make the worker die now."""
        if self.alive:
            self._send({"op": "crash"})

    async def infer(self, request_id: int, x: torch.Tensor) -> torch.Tensor:
        if not self.alive:
            raise InstanceError(f"{self.name} is not running")
        future: asyncio.Future[torch.Tensor] = asyncio.get_running_loop().create_future()
        wire = self._wire[request_id] = next(self._wire_ids)
        self._pending[wire] = future
        self._send({"op": "infer", "id": wire}, x.detach().cpu().numpy())
        try:
            return await future
        finally:
            self._wire.pop(request_id, None)
            self._pending.pop(wire, None)
            self._started.pop(wire, None)

    async def started(self, request_id: int) -> None:
        """Wait until the worker has started running ``request_id`` (not just queued it).

        Raises:
            KeyError: no such request is outstanding.
            InstanceError: the request ended (worker died, request dropped) before it started.
        """
        wire = self._wire[request_id]
        waiter = self._started.setdefault(wire, asyncio.get_running_loop().create_future())
        pending: asyncio.Future[Any] = self._pending[wire]
        await asyncio.wait({waiter, pending}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            raise InstanceError(f"{self.name}: request {request_id} ended before the worker started it")

    def cancel(self, request_id: int) -> None:
        # The request stays pending until the worker says "dropped" (or answers, the answer then discarded):
        # until then it still occupies the worker, and the pool must keep counting it.
        wire = self._wire.get(request_id)
        future = None if wire is None else self._pending.get(wire)
        if wire is not None and future is not None and not future.done() and wire not in self._cancelled:
            self._cancelled.add(wire)
            if self.alive:
                self._send({"op": "cancel", "id": wire})

    def _send(self, header: dict, array: np.ndarray | None = None) -> None:
        assert self._writer is not None
        self._writer.write(pack(header, array))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, array = await read_frame(reader)
                if header.get("op") == "started":
                    self._mark_started(header.get("ids", ()))
                    continue
                wire = int(header.get("id", -1))
                future = self._pending.pop(wire, None)
                cancelled = wire in self._cancelled
                self._cancelled.discard(wire)
                if future is None or future.done():
                    continue
                if cancelled or header.get("op") == "dropped":
                    future.set_exception(RequestCancelled(wire))
                elif array is not None:
                    future.set_result(torch.from_numpy(array.copy()))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as e:
            reason = f"{type(e).__name__}"
        self._writer = None
        code = None if self.process is None else self.process.exitcode
        self._fail_pending(f"worker died ({reason}, exit code {code})")
        if self.restart and not self._closing:
            asyncio.get_running_loop().create_task(self._restart())

    def _mark_started(self, wires: list[int]) -> None:
        loop = asyncio.get_running_loop()
        for wire in wires:
            if wire in self._pending:
                waiter = self._started.setdefault(int(wire), loop.create_future())
                if not waiter.done():
                    waiter.set_result(None)

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        self._cancelled.clear()
        self._started.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(InstanceError(f"{self.name}: {why}"))

    async def _restart(self) -> None:
        if self.process is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.process.join, 5.0)
        if self._closing:
            return
        self.restarts += 1
        try:
            await self.start()
        except InstanceError:
            if not self._closing:  # a failed restart while running is worth a traceback; during stop() not
                raise


class LocalBackend:
    """Starts, stops and disturbs a set of worker processes.

    Args:
        specs: one :class:`WorkerSpec` per instance.
    """

    def __init__(self, specs: Sequence[WorkerSpec], start_timeout_s: float = 120.0) -> None:
        self.instances = [LocalInstance(s, start_timeout_s) for s in specs]
        self._busy: list[subprocess.Popen] = []
        self._pinned: dict[int, set[int] | None] = {}  # worker pid -> CPUs it had before contention

    @classmethod
    def for_code(cls, base: str, parity: str | None, n_model: int, n_parity: int, r: int = 1,
                 **spec_kwargs: object) -> LocalBackend:
        """``n_model`` instances of F and ``n_parity`` parity instances, parity indices round-robin."""
        specs = [WorkerSpec(f"model-{i}", base, **spec_kwargs) for i in range(n_model)]  # type: ignore[arg-type]
        if n_parity and parity is None:
            raise ValueError("parity instances need a parity checkpoint (parity.pt).")
        specs += [WorkerSpec(f"parity-{i}", str(parity), parity_index=i % r, base=base, **spec_kwargs)  # type: ignore[arg-type]
                  for i in range(n_parity)]
        return cls(specs)

    async def start(self) -> None:
        """Start every worker (in parallel)."""
        await asyncio.gather(*(i.start() for i in self.instances))

    async def stop(self) -> None:
        """Stop workers and contention processes."""
        self.stop_contention()
        await asyncio.gather(*(i.stop() for i in self.instances), return_exceptions=True)

    def set_faults(self, plans: Sequence[FaultPlan], epoch: float | None = None) -> float:
        """Arm plan i on instance i, relative to ``epoch`` (default now); returns the epoch."""
        epoch = time.time() if epoch is None else epoch
        for inst, plan in zip(self.instances, plans, strict=False):
            inst.set_faults(plan, epoch)
        return epoch

    def add_contention(self, instance: LocalInstance, processes: int = 1, seconds: float = 1.0,
                       cpu: int | None = None) -> list[subprocess.Popen]:
        """Co-located CPU contention: busy processes pinned to the same CPU as ``instance``'s worker.

        The worker is pinned to ``cpu`` (default: the first CPU it may run on) for as long as the
        contention lasts, so the busy processes really share its core rather than the whole machine.
        They spin for ``seconds`` and then exit; :meth:`stop_contention` ends them early and unpins.

        Returns:
            The busy processes (started).

        Raises:
            ValueError: the worker is not running.
        """
        if instance.pid is None or not instance.alive:
            raise ValueError(f"{instance.name} is not running; start the backend before adding contention.")
        allowed = _affinity(instance.pid)
        target = {cpu} if cpu is not None else ({min(allowed)} if allowed else None)
        if target is not None and instance.pid not in self._pinned:
            self._pinned[instance.pid] = allowed
            _set_affinity(instance.pid, target)
        # A bare interpreter (no torch import) starts in milliseconds; pinned from here at once.
        started = [subprocess.Popen([sys.executable, "-c", _BURN.format(seconds=float(seconds))])
                   for _ in range(processes)]
        for proc in started:
            if target is not None:
                _set_affinity(proc.pid, target)
        self._busy += started
        return started

    def stop_contention(self) -> None:
        """End every busy process and give pinned workers their CPUs back."""
        for proc in self._busy:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5.0)
        self._busy.clear()
        for pid, allowed in self._pinned.items():
            if allowed:
                _set_affinity(pid, allowed)
        self._pinned.clear()


def _affinity(pid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(pid)
    except (AttributeError, OSError):  # not Linux, or the process is gone
        return None


def _set_affinity(pid: int, cpus: set[int]) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(pid, cpus)
