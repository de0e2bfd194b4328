"""A worker process: one model (F) or parity model (F_P) from a checkpoint, served over loopback.

Protocol (frames of :mod:`parm.serving.wire`), frontend -> worker:
    ``{"op": "infer", "id": n}`` + array ``(*input_shape)``; ``{"op": "cancel", "id": n}``;
    ``{"op": "faults", "plan": {...}, "epoch": t0}`` (a :class:`FaultPlan` relative to wall time t0);
    ``{"op": "crash"}`` (fault hook: die now).
worker -> frontend: ``{"op": "started", "ids": [n, ...]}`` when a batch starts running, then per request
``{"op": "result", "id": n}`` + array ``(*output_shape)``, or ``{"op": "dropped", "id": n}``
for a cancelled request, once the worker has let go of it. Every request gets exactly one of the two, so
the frontend counts a cancelled request against this worker's load until the worker is really done
with it (a request cancelled mid-batch keeps the worker busy until the batch ends).

The reader thread queues requests and notes cancellations; the main thread takes up to
``max_batch`` queued requests at a time, drops cancelled ones, runs one batch and answers.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from parm.serving.faults import FaultPlan
from parm.serving.service import ServiceTime
from parm.serving.wire import pack, recv_frame


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker loads and how it serves.

    Args:
        name: instance name.
        checkpoint: ``base.pt`` (model file of F) or ``parity.pt`` (parity artifact).
        parity_index: which parity model of the artifact to serve; None for F.
        base: F's model file, for a parity artifact whose parity model is F itself (Learning-a-Code
            mode); None: the file the artifact records.
        max_batch: most queued requests run as one batch.
        service_time_s: emulated accelerator time per batch; a batch takes at least this long (0 = off).
        service: a fitted service-time distribution (:mod:`parm.serving.service`); when set, each batch
            takes at least a time drawn from it (seeded by ``seed`` and ``name``) instead of ``service_time_s``.
        threads: torch intra-op threads.
        seed: seeds the service-time draws.
    """

    name: str
    checkpoint: str
    parity_index: int | None = None
    base: str | None = None
    max_batch: int = 8
    service_time_s: float = 0.0
    service: ServiceTime | None = None
    threads: int = 1
    seed: int = 0


def load_instance_model(spec: WorkerSpec):  # noqa: ANN201 - torch is imported lazily in the child
    """The nn.Module this worker serves, in eval mode."""
    if spec.parity_index is None:
        from parm.models.checkpoint import load_model

        model, _ = load_model(spec.checkpoint)
    else:
        from parm.artifacts import load_parity

        artifact = load_parity(spec.checkpoint, base=spec.base)
        if not 0 <= spec.parity_index < len(artifact.parity_models):
            raise ValueError(f"{spec.checkpoint} holds {len(artifact.parity_models)} parity models; "
                             f"parity_index {spec.parity_index} is out of range.")
        model = artifact.parity_models[spec.parity_index]
    return model.eval()


class _Inbox:
    """Requests and control state shared by the reader thread and the serving loop."""

    def __init__(self) -> None:
        self.requests: queue.Queue[tuple[int, np.ndarray]] = queue.Queue()
        self.cancelled: set[int] = set()
        self.plan = FaultPlan()
        self.epoch = time.time()
        self.lock = threading.Lock()
        self.crash_timers: list[threading.Timer] = []

    def read_forever(self, sock: socket.socket) -> None:
        try:
            while True:
                header, array = recv_frame(sock)
                op = header.get("op")
                if op == "infer" and array is not None:
                    self.requests.put((int(header["id"]), array))
                elif op == "cancel":
                    with self.lock:
                        self.cancelled.add(int(header["id"]))
                elif op == "faults":
                    self._arm(FaultPlan.from_dict(header["plan"]), float(header["epoch"]))
                elif op == "crash":
                    os._exit(17)
        except (EOFError, OSError, ValueError):
            os._exit(0)  # the frontend went away (or spoke nonsense): nothing left to serve

    def _arm(self, plan: FaultPlan, epoch: float) -> None:
        # A new plan replaces the old one entirely: its pending crashes must not hit the next run.
        for timer in self.crash_timers:
            timer.cancel()
        self.plan, self.epoch = plan, epoch
        now = time.time() - epoch
        self.crash_timers = [threading.Timer(t - now, os._exit, (17,)) for t in plan.crashes if t > now]
        for timer in self.crash_timers:
            timer.daemon = True
            timer.start()

    def take(self, max_batch: int) -> tuple[list[tuple[int, np.ndarray]], list[int]]:
        """Up to ``max_batch`` queued requests to run, and the ids of cancelled ones dropped unrun."""
        batch = [self.requests.get()]
        while len(batch) < max_batch:
            try:
                batch.append(self.requests.get_nowait())
            except queue.Empty:
                break
        with self.lock:
            kept = [(i, a) for i, a in batch if i not in self.cancelled]
            dropped = [i for i, _ in batch if i in self.cancelled]
            self.cancelled.difference_update(dropped)
        return kept, dropped


def worker_main(spec: WorkerSpec, port_pipe: Connection) -> None:
    """Process entry: load, bind 127.0.0.1, report the port, serve one frontend connection."""
    import torch

    torch.set_num_threads(spec.threads)
    model = load_instance_model(spec)
    server = socket.create_server(("127.0.0.1", 0))
    port_pipe.send(server.getsockname()[1])
    port_pipe.close()
    sock, _ = server.accept()
    server.close()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    inbox = _Inbox()
    threading.Thread(target=inbox.read_forever, args=(sock,), daemon=True).start()
    rng = np.random.default_rng([spec.seed, *spec.name.encode()])
    while True:
        batch, dropped = inbox.take(spec.max_batch)
        if dropped:
            sock.sendall(b"".join(pack({"op": "dropped", "id": i}) for i in dropped))
        if not batch:
            continue
        # Said before running: the frontend can tell a running request from a queued one (a cancelled
        # running request holds the worker until the batch ends; a queued one is dropped unrun).
        sock.sendall(pack({"op": "started", "ids": [i for i, _ in batch]}))
        start, started_at = time.perf_counter(), time.time() - inbox.epoch
        with torch.inference_mode():
            out = model(torch.from_numpy(np.stack([a for _, a in batch])).float()).numpy()
        emulated = spec.service_time_s if spec.service is None else float(spec.service.draw(rng, 1, len(batch))[0])
        busy = max(time.perf_counter() - start, emulated)
        # Emulated accelerator time, slow periods and pauses stretch the batch; the CPU is left to the others.
        wait = inbox.plan.batch_time(started_at, busy) - (time.perf_counter() - start)
        if wait > 0:
            time.sleep(wait)
        with inbox.lock:
            answers = b"".join(pack({"op": "dropped", "id": i}) if i in inbox.cancelled
                               else pack({"op": "result", "id": i}, out[n]) for n, (i, _) in enumerate(batch))
            inbox.cancelled.difference_update(i for i, _ in batch)
        sock.sendall(answers)
