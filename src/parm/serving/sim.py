"""Discrete-event simulator of the serving policies (one event heap, no threads, seeded).

It mirrors the frontend and the local workers. Poisson arrivals. ``parm`` sends each query on
arrival to the least-loaded model instance that no other member of its forming group used, sends
parity j to the least-loaded parity instance of index j once the group has k members (a
group-formation deadline closes short groups), answers each member when its output arrives, decodes
once k of k + r outputs are in (after the decode grace) and cancels the stragglers' requests. A cancelled
request counts against its instance's load until the instance lets go of it, as with the local workers'
"dropped" reply: when it is reached in the queue (dropped unrun) or its batch ends.
``plain``/``none``/``equal``, ``hedge``, ``hedge-spare`` and ``parm-hedge`` as in
:mod:`parm.serving.frontend`. An instance serves up to ``max_batch`` queued requests per batch; a batch
takes a service time (fixed ``service_s``, or drawn from a fitted :class:`~parm.serving.service.ServiceTime`)
stretched by the instance's fault trace (:func:`parm.serving.faults.draw_plan`: slow periods, pauses)
at its start; a running batch is never aborted. A crash fails every request the instance holds (the
frontend decodes or re-sends them, as with a closed worker connection) and takes the instance out for
``restart_s``. Every request adds ``net_s`` (frontend + loopback cost, measured on the real system), and
every batch holds its instance ``occupancy_s`` beyond its service time (the worker's own per-request
cost: IPC, timer overshoot, Python; measured at saturation on the real system): a delay that queues.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from parm.serving.faults import FaultConfig, FaultPlan, draw_plan
from parm.serving.loadgen import RunResult
from parm.serving.service import ServiceTime

RESULT, FINISH, GROUP_TIMEOUT, GRACE, HEDGE, HEDGE_MEMBER, CRASH, RESTART, FAIL = range(9)
SIM_POLICIES = ("none", "equal", "hedge", "hedge-spare", "parm", "parm-hedge")
_DOWN = 1e9  # added to a crashed instance's load, so the least-loaded pick avoids it


@dataclass(frozen=True)
class SimConfig:
    """One simulated run.

    Args:
        policy: one of :data:`SIM_POLICIES` (instance counts as in the bench).
        n: N, model instances of ``none`` and the parm policies.
        k, r: the code; the other policies get N + N*r/k model instances, parm N*r/k parity instances.
        rate_hz: Poisson arrival rate; queries: how many.
        service_s: fixed batch service time, used when ``service`` is None.
        service, parity_service: fitted service-time distributions of F and F_P (``parity_service``
            None: the same as ``service``).
        max_batch: requests per batch.
        net_s: cost of one frontend -> instance -> frontend round trip on top of service (a pure delay).
        occupancy_s: time an instance stays busy with each batch beyond its service time (it queues).
        group_timeout_s, decode_grace_s, hedge_delay_s: as in :class:`~parm.serving.frontend.FrontendConfig`.
        faults: the fault process; restart_s: how long a crashed instance is out; seed: seeds arrivals,
            fault traces and service draws.
    """

    policy: str = "parm"
    n: int = 4
    k: int = 2
    r: int = 1
    rate_hz: float = 150.0
    queries: int = 10_000
    service_s: float = 0.005
    service: ServiceTime | None = None
    parity_service: ServiceTime | None = None
    max_batch: int = 8
    net_s: float = 0.0005
    occupancy_s: float = 0.0
    group_timeout_s: float = 0.05
    decode_grace_s: float = 0.002
    hedge_delay_s: float = 0.01
    faults: FaultConfig = FaultConfig()
    restart_s: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in SIM_POLICIES:
            raise ValueError(f"policy must be one of {SIM_POLICIES}, got {self.policy!r}.")

    @property
    def coded(self) -> bool:
        return self.policy in ("parm", "parm-hedge")

    def instance_counts(self) -> tuple[int, int]:
        """(model instances, parity instances) of this policy: N + N*r/k in all but ``none``."""
        extra = self.n * self.r // self.k
        if self.coded:
            return self.n, extra
        return (self.n, 0) if self.policy == "none" else (self.n + extra, 0)


class _Instance:
    __slots__ = ("busy", "queue", "plan", "index", "pool", "service", "fixed_s", "draws", "drawn", "epoch",
                 "running", "rng")

    def __init__(self, index: int, pool: np.ndarray, plan: FaultPlan, service: ServiceTime | None,
                 fixed_s: float, rng: np.random.Generator) -> None:
        self.index, self.pool, self.plan = index, pool, plan
        self.service, self.fixed_s, self.rng = service, fixed_s, rng
        self.busy = False
        self.queue: deque[list] = deque()
        self.running: list[list] = []
        self.draws = np.empty(0)
        self.drawn = 0
        self.epoch = 0

    def batch_s(self, t: float, size: int) -> float:
        if self.service is None:
            base = self.fixed_s
        else:
            if self.drawn == len(self.draws):
                self.draws, self.drawn = self.service.draw(self.rng, 256), 0
            base = float(self.draws[self.drawn]) * (1 + self.service.per_item_s / self.service.median_s * (size - 1))
            self.drawn += 1
        return self.plan.batch_time(t, base)


class Simulator:
    """Runs a :class:`SimConfig`; :meth:`run` returns per-query outcomes."""

    def __init__(self, config: SimConfig) -> None:
        c = self.c = config
        n_model, n_parity = c.instance_counts()
        duration = c.queries / c.rate_hz + 10
        plans = [draw_plan(c.faults, duration, c.seed, slot) for slot in range(n_model + n_parity)]
        parity_service = c.parity_service or c.service

        def make(slot: int, index: int, pool: np.ndarray, service: ServiceTime | None) -> _Instance:
            return _Instance(index, pool, plans[slot], service, c.service_s, np.random.default_rng([c.seed, slot]))

        self.model_load = np.zeros(n_model)
        self.models = [make(i, i, self.model_load, c.service) for i in range(n_model)]
        # Parity instances of index j are every r-th one, as in LocalBackend.for_code.
        self.parity_load = [np.zeros(len(range(j, n_parity, c.r))) for j in range(c.r)]
        self.parities = [[make(n_model + i, m, self.parity_load[j], parity_service)
                          for m, i in enumerate(range(j, n_parity, c.r))] for j in range(c.r)]
        self.heap: list[tuple] = []
        self.seq = itertools.count()
        for inst in (*self.models, *(p for ps in self.parities for p in ps)):
            for t in inst.plan.crashes:
                self._push(t, CRASH, inst)
        self.answer_t = np.full(c.queries, np.nan)
        self.degraded = np.zeros(c.queries, dtype=bool)
        self.done = [False] * c.queries  # a list: scalar lookups in the hot path are cheaper than numpy's
        self.unanswered = c.queries
        self.sent = self.ran = 0

    def _push(self, t: float, kind: int, payload: object) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, payload))

    def run(self) -> RunResult:
        c = self.c
        gaps = np.random.default_rng(c.seed).exponential(1 / c.rate_hz, size=c.queries)
        self.arrival = np.cumsum(gaps) - gaps[0]
        self.forming: dict | None = None
        # Query state: [group or None, slot, requests]; group: dict.
        self.qstate: list[list] = [[None, 0, []] for _ in range(c.queries)]
        handlers: dict[int, Callable[[float, Any], None]] = {
            FINISH: self._finish, RESULT: self._result, GROUP_TIMEOUT: self._group_timeout, GRACE: self._decode,
            HEDGE: self._hedge, HEDGE_MEMBER: self._hedge_member, CRASH: self._crash, RESTART: self._restart,
            FAIL: self._failed}
        arrival, heap, nxt = self.arrival, self.heap, 0
        while nxt < c.queries or (heap and self.unanswered):
            if nxt < c.queries and (not heap or arrival[nxt] <= heap[0][0]):
                self._arrive(float(arrival[nxt]), nxt)
                nxt += 1
                continue
            t, _, kind, payload = heapq.heappop(heap)
            handlers[kind](t, payload)
        latency = self.answer_t - self.arrival
        counts = {"extra_load": self.sent / c.queries - 1, "extra_work": self.ran / c.queries - 1}
        return RunResult(latency, self.degraded, np.zeros(c.queries, dtype=int), counts=counts)

    # -- dispatch ---------------------------------------------------------------------------------

    def _arrive(self, t: float, q: int) -> None:
        c = self.c
        if not c.coded:
            self._send(t, q, "plain", None, ())
            if c.policy in ("hedge", "hedge-spare") and math.isfinite(c.hedge_delay_s):
                self._push(t + c.hedge_delay_s, HEDGE, q)
            return
        if self.forming is None:
            self.forming = {"members": [], "used": set(), "outputs": 0, "parities": 0, "grace": False, "reqs": [],
                            "coded": True}
            self._push(t + c.group_timeout_s, GROUP_TIMEOUT, self.forming)
        group = self.forming
        self.qstate[q][0], self.qstate[q][1] = group, len(group["members"])
        group["members"].append(q)
        self._send_member(t, q, group)
        if c.policy == "parm-hedge" and math.isfinite(c.hedge_delay_s):
            self._push(t + c.hedge_delay_s, HEDGE_MEMBER, q)
        if len(group["members"]) == c.k:
            self.forming = None
            self._send_parities(t, group)

    @staticmethod
    def _least_loaded(loads: np.ndarray, exclude: set[int] | tuple[()]) -> int:
        if not exclude or len(exclude) >= len(loads):  # nowhere else to go: as the frontend, ignore it
            return int(loads.argmin())
        saved = [(i, loads[i]) for i in exclude]
        for i, _ in saved:
            loads[i] = np.inf
        best = int(loads.argmin())
        for i, v in saved:
            loads[i] = v
        return best

    def _send(self, t: float, q: int, kind: str, group: dict | None, exclude: set[int] | tuple[()]) -> int:
        i = self._least_loaded(self.model_load, exclude)
        req = [q, i, False, kind, group]  # query, instance, done/cancelled, kind, group (+ instance)
        self.qstate[q][2].append(req)
        self._enqueue(t, self.models[i], req)
        return i

    def _send_member(self, t: float, q: int, group: dict) -> None:
        used = group["used"] if len(group["used"]) < len(self.models) else ()
        group["used"].add(self._send(t, q, "member", group, used))

    def _send_parities(self, t: float, group: dict) -> None:
        if all(self.done[q] for q in group["members"]):
            return
        for j in range(self.c.r):
            inst = self.parities[j][int(np.argmin(self.parity_load[j]))]
            req = [-1, inst.index, False, "parity", group]
            group["reqs"].append(req)
            self._enqueue(t, inst, req)

    def _held(self, q: int) -> set[int]:
        return {req[1] for req in self.qstate[q][2] if not req[2]}

    def _hedge(self, t: float, q: int) -> None:
        if self.done[q]:
            return
        held = self._held(q)
        if self.c.policy == "hedge-spare":
            i = self._least_loaded(self.model_load, held)
            if self.model_load[i] > 0 or i in held:
                return  # no idle instance: spare capacity only
        self._send(t, q, "plain", None, held)

    def _hedge_member(self, t: float, q: int) -> None:
        group = self.qstate[q][0]
        if self.done[q] or (group["coded"] and group["outputs"] + group["parities"] >= self.c.k):
            return
        self._send(t, q, "member", group, self._held(q))

    def _group_timeout(self, t: float, group: dict) -> None:
        if group is self.forming:
            group["coded"] = False  # the group-formation deadline: its members stay uncoded
            self.forming = None

    def _enqueue(self, t: float, inst: _Instance, req: list) -> None:
        self.sent += 1
        inst.pool[inst.index] += 1
        req.append(inst)
        inst.queue.append(req)
        if not inst.busy:
            self._start_batch(t + self.c.net_s / 2, inst)

    def _start_batch(self, t: float, inst: _Instance) -> None:
        batch: list[list] = []
        while inst.queue and len(batch) < self.c.max_batch:
            req = inst.queue.popleft()
            if req[2]:
                self._push(t + self.c.net_s / 2, RESULT, req)  # dropped unrun: the "dropped" reply
            else:
                batch.append(req)
        inst.running = batch
        if not batch:
            inst.busy = False
            return
        inst.busy = True
        self.ran += len(batch)
        self._push(t + inst.batch_s(t, len(batch)) + self.c.occupancy_s, FINISH, (inst, batch, inst.epoch))

    def _finish(self, t: float, payload: tuple[_Instance, list, int]) -> None:
        inst, batch, epoch = payload
        if epoch != inst.epoch:
            return  # the instance crashed while running this batch
        for req in batch:  # answers, or "dropped" for requests cancelled while running
            self._push(t + self.c.net_s / 2, RESULT, req)
        self._start_batch(t, inst)

    # -- crashes ----------------------------------------------------------------------------------

    def _crash(self, t: float, inst: _Instance) -> None:
        if inst.pool[inst.index] >= _DOWN:
            return  # already down
        for req in (*inst.running, *inst.queue):
            inst.pool[inst.index] -= 1
            if not req[2]:
                self._push(t + self.c.net_s / 2, FAIL, req)
        inst.queue.clear()
        inst.running, inst.busy = [], False
        inst.epoch += 1
        inst.pool[inst.index] += _DOWN
        self._push(t + self.c.restart_s, RESTART, inst)

    def _restart(self, t: float, inst: _Instance) -> None:
        inst.pool[inst.index] -= _DOWN

    def _failed(self, t: float, req: list) -> None:
        """A request lost in a crash: decode its group if possible, else re-send (as the frontend does)."""
        if req[2]:
            return
        req[2] = True
        q, kind, group = req[0], req[3], req[4]
        if kind == "parity" or self.done[q] or self._held(q):
            return
        if kind == "member" and group["coded"] and group["outputs"] + group["parities"] >= self.c.k:
            self._decode(t, group)
        elif kind == "member":
            self._send(t, q, "member", group, {req[1]})
        else:
            self._send(t, q, "plain", None, {req[1]})

    # -- answers ----------------------------------------------------------------------------------

    @staticmethod
    def _cancel(req: list) -> None:
        """Withdraw a request (a no-op once it has answered); its load stays until the instance's reply."""
        req[2] = True

    def _answer(self, t: float, q: int, degraded: bool) -> None:
        if self.done[q]:
            return
        self.done[q] = True
        self.unanswered -= 1
        self.answer_t[q] = t
        self.degraded[q] = degraded
        for req in self.qstate[q][2]:
            self._cancel(req)

    def _result(self, t: float, req: list) -> None:
        inst = req[5]
        inst.pool[inst.index] -= 1  # every request ends with exactly one reply
        if req[2]:
            return  # cancelled: dropped unrun, or its answer discarded
        req[2] = True
        q, kind, group = req[0], req[3], req[4]
        if kind == "plain":
            self._answer(t, q, False)
            return
        if kind == "member":
            group["outputs"] += 1
            self._answer(t, q, False)
        else:
            group["parities"] += 1
        self._check(t, group)

    def _check(self, t: float, group: dict) -> None:
        if all(self.done[q] for q in group["members"]):
            for req in group["reqs"]:
                self._cancel(req)
            return
        if not group["coded"] or group["outputs"] + group["parities"] < self.c.k:
            return
        if self.c.decode_grace_s == 0:
            self._decode(t, group)
        elif not group["grace"]:
            group["grace"] = True
            self._push(t + self.c.decode_grace_s, GRACE, group)

    def _decode(self, t: float, group: dict) -> None:
        for q in group["members"]:
            self._answer(t, q, True)
        for req in group["reqs"]:
            self._cancel(req)


def simulate(config: SimConfig) -> RunResult:
    """Run one configuration."""
    return Simulator(config).run()
