"""Discrete-event simulator of the serving policies (one event heap, no threads, seeded).

It mirrors the frontend and the local workers. Poisson arrivals. ``parm`` sends each query on
arrival to the least-loaded model instance that no other member of its forming group used, sends
parity j to the least-loaded parity instance of index j once the group has k members (a
group-formation deadline closes short groups), answers each member when its output arrives, decodes
once k of k + r outputs are in (after the decode grace) and cancels the stragglers' requests. A cancelled
request counts against its instance's load until the instance lets go of it, as with the local workers'
"dropped" reply: when it is reached in the queue (dropped unrun) or its batch ends.
``plain`` and ``hedge`` as in :mod:`parm.serving.frontend`. An instance serves up to ``max_batch``
queued requests per batch; a batch takes ``service_s`` times the slowdown factor of the instance's
fault trace (:func:`parm.serving.faults.draw_plan`) at its start; a running batch is never aborted.
Every request adds ``net_s`` (frontend + loopback cost, measured on the real system).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np

from parm.serving.faults import FaultConfig, draw_plan
from parm.serving.loadgen import RunResult

RESULT, FINISH, GROUP_TIMEOUT, GRACE, HEDGE = range(5)


@dataclass(frozen=True)
class SimConfig:
    """One simulated run.

    Args:
        policy: ``"none"``, ``"equal"``, ``"hedge"`` or ``"parm"`` (instance counts as in the bench).
        n: N, model instances of ``none`` and ``parm``.
        k, r: the code; ``equal``/``hedge`` get N + N*r/k instances, ``parm`` N*r/k parity instances.
        rate_hz: Poisson arrival rate; queries: how many.
        service_s: batch service time; max_batch: requests per batch.
        net_s: cost of one frontend -> instance -> frontend round trip on top of service.
        group_timeout_s, decode_grace_s, hedge_delay_s: as in :class:`~parm.serving.frontend.FrontendConfig`.
        faults: the fault process; seed: seeds arrivals and fault traces.
    """

    policy: str = "parm"
    n: int = 4
    k: int = 2
    r: int = 1
    rate_hz: float = 150.0
    queries: int = 10_000
    service_s: float = 0.005
    max_batch: int = 8
    net_s: float = 0.0005
    group_timeout_s: float = 0.05
    decode_grace_s: float = 0.002
    hedge_delay_s: float = 0.01
    faults: FaultConfig = FaultConfig()
    seed: int = 0


class _Instance:
    __slots__ = ("busy", "queue", "slow_starts", "slow", "index", "pool")

    def __init__(self, index: int, pool: np.ndarray, slow: tuple[tuple[float, float, float], ...]) -> None:
        self.index, self.pool = index, pool
        self.busy = False
        self.queue: deque[list] = deque()
        self.slow = slow
        self.slow_starts = [s for s, _, _ in slow]

    def factor(self, t: float) -> float:
        i = bisect.bisect_right(self.slow_starts, t) - 1
        if i >= 0 and t < self.slow[i][1]:
            return self.slow[i][2]
        return 1.0


class Simulator:
    """Runs a :class:`SimConfig`; :meth:`run` returns per-query outcomes."""

    def __init__(self, config: SimConfig) -> None:
        c = self.c = config
        if c.policy not in ("none", "equal", "hedge", "parm"):
            raise ValueError(f"policy must be none, equal, hedge or parm, got {c.policy!r}.")
        extra = c.n * c.r // c.k
        n_model = c.n + extra if c.policy in ("equal", "hedge") else c.n
        n_parity = extra if c.policy == "parm" else 0
        duration = c.queries / c.rate_hz + 10
        plans = [draw_plan(c.faults, duration, c.seed, slot).slow for slot in range(n_model + n_parity)]
        self.model_load = np.zeros(n_model)
        self.models = [_Instance(i, self.model_load, plans[i]) for i in range(n_model)]
        # Parity instances of index j are every r-th one, as in LocalBackend.for_code.
        self.parity_load = [np.zeros(len(range(j, n_parity, c.r))) for j in range(c.r)]
        self.parities = [[_Instance(m, self.parity_load[j], plans[n_model + i])
                          for m, i in enumerate(range(j, n_parity, c.r))] for j in range(c.r)]
        self.heap: list[tuple] = []
        self.seq = itertools.count()
        self.answer_t = np.full(c.queries, np.nan)
        self.degraded = np.zeros(c.queries, dtype=bool)

    def _push(self, t: float, kind: int, payload: object) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, payload))

    def run(self) -> RunResult:
        c = self.c
        gaps = np.random.default_rng(c.seed).exponential(1 / c.rate_hz, size=c.queries)
        self.arrival = np.cumsum(gaps) - gaps[0]
        self.forming: dict | None = None
        # Query state: [group or None, slot, outstanding requests]; group: dict.
        self.qstate: list[list] = [[None, 0, []] for _ in range(c.queries)]
        next_arrival = 0
        while next_arrival < c.queries or self.heap:
            if next_arrival < c.queries and (not self.heap or self.arrival[next_arrival] <= self.heap[0][0]):
                t, q = self.arrival[next_arrival], next_arrival
                next_arrival += 1
                self._arrive(t, q)
                continue
            t, _, kind, payload = heapq.heappop(self.heap)
            if kind == FINISH:
                self._finish(t, payload)
            elif kind == RESULT:
                self._result(t, payload)
            elif kind == GROUP_TIMEOUT:
                if payload is self.forming and payload is not None:
                    payload["coded"] = False  # the group-formation deadline: its members stay uncoded
                    self.forming = None
            elif kind == GRACE:
                self._decode(t, payload)
            elif kind == HEDGE:
                q = payload
                if np.isnan(self.answer_t[q]):
                    held = {req[1] for req in self.qstate[q][2]}
                    self._send_plain(t, q, exclude=held)
        latency = self.answer_t - self.arrival
        return RunResult(latency, self.degraded, np.zeros(c.queries, dtype=int))

    # -- dispatch ---------------------------------------------------------------------------------

    def _arrive(self, t: float, q: int) -> None:
        if self.c.policy != "parm":
            self._send_plain(t, q)
            if self.c.policy == "hedge":
                self._push(t + self.c.hedge_delay_s, HEDGE, q)
            return
        if self.forming is None:
            self.forming = {"members": [], "used": set(), "outputs": 0, "parities": 0, "grace": False, "reqs": [],
                            "coded": True}
            self._push(t + self.c.group_timeout_s, GROUP_TIMEOUT, self.forming)
        group = self.forming
        self.qstate[q][0], self.qstate[q][1] = group, len(group["members"])
        group["members"].append(q)
        self._send_member(t, q, group)
        if len(group["members"]) == self.c.k:
            self.forming = None
            self._send_parities(t, group)

    def _send_plain(self, t: float, q: int, exclude: set[int] | None = None) -> None:
        loads = self.model_load
        if exclude:
            loads = loads.copy()
            loads[list(exclude)] = np.inf
        inst = self.models[int(np.argmin(loads))]
        req = [q, inst.index, False, "plain", None]  # query, instance, cancelled, kind, group
        self.qstate[q][2].append(req)
        self._enqueue(t, inst, req)

    def _send_member(self, t: float, q: int, group: dict) -> None:
        loads = self.model_load
        if group["used"]:
            loads = loads.copy()
            loads[list(group["used"])] = np.inf
        i = int(np.argmin(loads))
        group["used"].add(i)
        req = [q, i, False, "member", group]
        self.qstate[q][2].append(req)
        self._enqueue(t, self.models[i], req)

    def _send_parities(self, t: float, group: dict) -> None:
        if all(not np.isnan(self.answer_t[q]) for q in group["members"]):
            return
        for j in range(self.c.r):
            inst = self.parities[j][int(np.argmin(self.parity_load[j]))]
            req = [-1, inst.index, False, "parity", group]
            group["reqs"].append(req)
            self._enqueue(t, inst, req)

    def _enqueue(self, t: float, inst: _Instance, req: list) -> None:
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
        if not batch:
            inst.busy = False
            return
        inst.busy = True
        self._push(t + self.c.service_s * inst.factor(t), FINISH, (inst, batch))

    def _finish(self, t: float, payload: tuple[_Instance, list]) -> None:
        inst, batch = payload
        for req in batch:  # answers, or "dropped" for requests cancelled while running
            self._push(t + self.c.net_s / 2, RESULT, req)
        self._start_batch(t, inst)

    # -- answers ----------------------------------------------------------------------------------

    @staticmethod
    def _cancel(req: list) -> None:
        """Withdraw a request (a no-op once it has answered); its load stays until the instance's reply."""
        req[2] = True

    def _answer(self, t: float, q: int, degraded: bool) -> None:
        if not np.isnan(self.answer_t[q]):
            return
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
        waiting = [q for q in group["members"] if np.isnan(self.answer_t[q])]
        if not waiting:
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
