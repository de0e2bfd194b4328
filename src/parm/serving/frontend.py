"""The coded-serving frontend: coding groups, dispatch, decode grace, deadlines, re-sends.

Policies:
    ``parm``: queries form coding groups of k; r parities are encoded and sent to parity instances;
        a missing answer is rebuilt by the decoder once k of the k + r outputs are in.
    ``plain``: each query goes to the least-loaded model instance (the ``none`` and ``equal``
        baselines differ only in how many instances they get).
    ``hedge``: like ``plain``, plus a backup request to another instance after ``hedge_delay_s``;
        the first answer wins and the other request is cancelled.
    ``hedge-spare``: like ``hedge``, but the backup goes only to an idle instance (none idle: no backup),
        so hedging uses spare capacity only.
    ``parm-hedge``: ``parm``, plus a backup of a member still unanswered ``hedge_delay_s`` after it was
        sent while its group cannot be decoded yet (fewer than k of k + r outputs in).

Every query is answered exactly once: with F's output, a reconstruction flagged ``degraded``, or an
:class:`InstanceError` once ``max_attempts`` sends have failed.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import torch

from parm.coding import Code
from parm.serving.instance import Instance, InstanceError, InstancePool, RequestCancelled, Role
from parm.serving.records import FrontendConfig, GroupState, Prediction, QueryState, Stats

__all__ = ["Frontend", "FrontendConfig", "Prediction", "Stats"]

Done = Callable[[int, Instance, "torch.Tensor | Exception"], None]


class Frontend:
    """Serves queries over a pool of model (and, for ``parm``, parity) instances.

    Args:
        pool: the instances; a ``parm`` pool needs at least k model instances and, for every parity
            index j < r, a parity instance answering parity j.
        code: the code (``build_code(...)``); required for ``parm``, unused otherwise.
        config: settings.
    """

    def __init__(self, pool: InstancePool, code: Code | None = None, config: FrontendConfig | None = None) -> None:
        self.pool = pool
        self.code = code
        self.config = config or FrontendConfig()
        self.stats = Stats()
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._forming: GroupState | None = None
        self._forming_timer: asyncio.TimerHandle | None = None
        self._admission = asyncio.Semaphore(self.config.max_pending)
        self._pending: set[QueryState] = set()
        self._check_pool()

    def _check_pool(self) -> None:
        if not self.pool.members("model"):
            raise ValueError("the pool has no model instances; add at least one.")
        if self.config.policy not in ("parm", "parm-hedge"):
            return
        if self.code is None:
            raise ValueError(f"policy {self.config.policy!r} needs a code: pass code=build_code(...).")
        k, r = self.code.spec.k, self.code.spec.r
        if len(self.pool.members("model")) < k:
            raise ValueError(f"policy 'parm' with k={k} needs >= {k} model instances, the pool has "
                             f"{len(self.pool.members('model'))}; a group never puts two members on one instance.")
        absent = [j for j in range(r) if not self.pool.members("parity", j)]
        if absent:
            raise ValueError(f"policy 'parm' with r={r} needs a parity instance for every parity index; "
                             f"none for {absent}.")

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one query when a code fixes it."""
        return None if self.code is None else self.code.encoder.input_shape

    @property
    def pending(self) -> int:
        """Queries admitted and not yet answered."""
        return len(self._pending)

    async def predict(self, x: torch.Tensor) -> Prediction:
        """Answer one query ``(*input_shape)``; waits while ``max_pending`` queries are in flight.

        Raises:
            ValueError: ``x`` does not have the code's input shape.
            InstanceError: every attempt failed.
        """
        if self.input_shape is not None and tuple(x.shape) != self.input_shape:
            raise ValueError(f"a query must have shape {self.input_shape}, got {tuple(x.shape)}.")
        await self._admission.acquire()
        loop = asyncio.get_running_loop()
        q = QueryState(x=x, future=loop.create_future(), t0=time.perf_counter())
        self._pending.add(q)
        self.stats.queries += 1
        if self.config.query_deadline_s is not None:
            q.timer = loop.call_later(self.config.query_deadline_s, self._on_deadline, q)
        if self.config.policy in ("parm", "parm-hedge"):
            self._join_group(q)
        else:
            self._spawn(self._send_plain(q))
        return await q.future

    async def close(self) -> None:
        """Cancel timers and dispatch tasks; queries still pending are answered with an error."""
        for q in list(self._pending):
            self._fail(q, InstanceError("the frontend was closed before an answer arrived."))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- plumbing -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start(self, inst: Instance, x: torch.Tensor, on_done: Done) -> int:
        """Send ``x`` to ``inst`` (its load already acquired by ``pool.pick``); returns the request id."""
        req_id = next(self._ids)
        self.stats.requests += 1
        self._spawn(self._call(inst, req_id, x, on_done))
        return req_id

    async def _call(self, inst: Instance, req_id: int, x: torch.Tensor, on_done: Done) -> None:
        try:
            result: torch.Tensor | Exception = await inst.infer(req_id, x)
        except (InstanceError, RequestCancelled) as e:
            result = e
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
            result = InstanceError(f"{inst.name}: {type(e).__name__}: {e}")
        finally:
            await self.pool.release(inst)
        if isinstance(result, InstanceError):
            self.stats.instance_errors += 1
        on_done(req_id, inst, result)

    def _cancel(self, requests: dict[int, Instance], keep: int | None = None) -> None:
        for req_id, inst in list(requests.items()):
            if req_id != keep:
                inst.cancel(req_id)
                self.stats.cancelled += 1
        requests.clear()

    def _answer(self, q: QueryState, output: torch.Tensor, degraded: bool, keep: int | None = None) -> None:
        if q.future.done():
            return
        self._cancel(q.requests, keep)
        self._finish(q)
        self.stats.answered += 1
        self.stats.degraded += int(degraded)
        latency = time.perf_counter() - q.t0
        coded = q.group is not None and q.group.coded and len(q.group.queries) == q.group.k
        q.future.set_result(Prediction(output, degraded, coded, latency))

    def _fail(self, q: QueryState, error: Exception) -> None:
        if q.future.done():
            return
        self._cancel(q.requests)
        self._finish(q)
        self.stats.failed += 1
        q.future.set_exception(error)

    def _finish(self, q: QueryState) -> None:
        if q.timer is not None:
            q.timer.cancel()
        self._pending.discard(q)
        self._admission.release()

    def _on_deadline(self, q: QueryState) -> None:
        q.deadline_passed = True
        if q.group is not None:
            self._check_decode(q.group)

    # -- plain and hedged queries ---------------------------------------------------------------

    async def _send_plain(self, q: QueryState, exclude: set[str] | None = None) -> None:
        if q.future.done():
            return
        avoid = self._avoid("model", None, exclude) if exclude else None
        (inst,) = await self.pool.pick("model", 1, exclude=avoid)
        if q.future.done():
            await self.pool.release(inst)
            return
        q.attempts += 1
        q.requests[self._start(inst, q.x, lambda rid, i, res: self._on_plain(q, rid, i, res))] = inst
        hedged = self.config.policy in ("hedge", "hedge-spare") and math.isfinite(self.config.hedge_delay_s)
        if hedged and q.attempts == 1:
            asyncio.get_running_loop().call_later(self.config.hedge_delay_s, self._hedge, q)

    def _hedge(self, q: QueryState) -> None:
        if q.future.done():
            return
        held = {i.name for i in q.requests.values()}
        if self.config.policy == "hedge":
            self.stats.hedged += 1
            self._spawn(self._send_plain(q, exclude=held))
            return
        picked = self.pool.try_pick("model", 1, exclude=held, below=1)  # hedge-spare: idle instances only
        if picked is not None:
            self.stats.hedged += 1
            q.attempts += 1
            q.requests[self._start(picked[0], q.x, lambda rid, i, res: self._on_plain(q, rid, i, res))] = picked[0]

    def _on_plain(self, q: QueryState, req_id: int, inst: Instance, result: torch.Tensor | Exception) -> None:
        q.requests.pop(req_id, None)
        if isinstance(result, torch.Tensor):
            self._answer(q, result, degraded=False, keep=req_id)
        elif isinstance(result, InstanceError) and not q.future.done() and not q.requests:
            self._resend(q, result, lambda: self._send_plain(q, exclude={inst.name}))

    def _resend(self, q: QueryState, error: InstanceError, send: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if q.attempts >= self.config.max_attempts:
            self._fail(q, InstanceError(f"query failed after {q.attempts} attempts; last error: {error}"))
        else:
            self.stats.resent += 1
            self._spawn(send())

    # -- coding groups ---------------------------------------------------------------------------

    def _join_group(self, q: QueryState) -> None:
        """Send ``q`` at once (never held for its group); encode the parities when the group fills."""
        assert self.code is not None
        loop = asyncio.get_running_loop()
        if self._forming is None:
            self._forming = GroupState([], self.code.spec.r, self.code.spec.k)
            self._forming_timer = loop.call_later(self.config.group_timeout_s, self._close_forming)
        group = self._forming
        q.group, q.slot, q.attempts = group, len(group.queries), 0
        group.queries.append(q)
        # Dispatch synchronously when an instance is free: a task and a lock round trip per request
        # are a good part of the frontend's CPU time, which competes with the workers for the cores.
        if not self._send_member_now(q):
            self._spawn(self._send_member(q))
        if len(group.queries) == self.code.spec.k:
            self._forming = None
            if self._forming_timer is not None:
                self._forming_timer.cancel()
            self._send_parities_now(group)

    def _close_forming(self) -> None:
        """Group-formation deadline: a group still short of k members stays uncoded."""
        group, self._forming = self._forming, None
        if group is not None:
            group.coded = False
            self.stats.uncoded += len(group.queries)

    def _avoid(self, role: Role, parity_index: int | None, used: set[str]) -> set[str] | None:
        """Instances to skip: the failure domains of ``used`` if another instance exists, else ``used``, else none."""
        for exclude in (self.pool.sharing_domain(used), used):
            if self.pool.can_ever_pick(role, 1, parity_index, exclude=exclude):
                return exclude
        return None

    def _member_exclude(self, group: GroupState) -> set[str] | None:
        return self._avoid("model", None, group.used)

    def _send_member_now(self, q: QueryState) -> bool:
        """Send a new member at once if an eligible instance has capacity; False: use the async path."""
        group = q.group
        assert group is not None
        if group.lock.locked():
            return False  # an earlier member is waiting for an instance: keep the order
        picked = self.pool.try_pick("model", 1, exclude=self._member_exclude(group))
        if picked is None:
            return False
        group.used.add(picked[0].name)
        self._dispatch_member(q, picked[0])
        return True

    async def _send_member(self, q: QueryState) -> None:
        """Send (or re-send) a member to the least-loaded model instance that no other member used."""
        group = q.group
        assert group is not None
        async with group.lock:  # members pick one at a time, so two never land on one instance
            if q.future.done():
                return
            (inst,) = await self.pool.pick("model", 1, exclude=self._member_exclude(group))
            group.used.add(inst.name)
        if q.future.done():
            await self.pool.release(inst)
            return
        self._dispatch_member(q, inst)

    def _dispatch_member(self, q: QueryState, inst: Instance) -> None:
        assert q.group is not None
        q.attempts += 1
        q.group.failed.discard(q.slot)
        q.requests[self._start(inst, q.x, lambda rid, i, res: self._on_member(q, rid, i, res))] = inst
        if self.config.policy == "parm-hedge" and q.attempts == 1 and math.isfinite(self.config.hedge_delay_s):
            asyncio.get_running_loop().call_later(self.config.hedge_delay_s, self._hedge_member, q)

    def _hedge_member(self, q: QueryState) -> None:
        """``parm-hedge``: back up a member whose group cannot be decoded yet (the decoder will not save it)."""
        group = q.group
        assert group is not None
        arrived = sum(o is not None for o in group.outputs) + sum(p is not None for p in group.parities)
        if q.future.done() or (group.coded and arrived >= group.k):
            return
        picked = self.pool.try_pick("model", 1, exclude={i.name for i in q.requests.values()})
        if picked is not None:
            self.stats.hedged += 1
            q.requests[self._start(picked[0], q.x, lambda rid, i, res: self._on_member(q, rid, i, res))] = picked[0]

    def _send_parities_now(self, group: GroupState) -> None:
        """Encode the group and send each parity to a free parity instance, or wait for one in a task."""
        assert self.code is not None
        if all(q.future.done() for q in group.queries):
            return  # every member already answered: nothing left to protect
        with torch.inference_mode():
            parities = self.code.encode(torch.stack([q.x for q in group.queries])[None])[0]
        self.stats.groups += 1
        for j in range(group.r):
            picked = self.pool.try_pick("parity", 1, parity_index=j, exclude=self._avoid("parity", j, group.used))
            if picked is None:
                self._spawn(self._send_parity(group, j, parities[j]))
            else:
                self._dispatch_parity(group, j, parities[j], picked[0])

    async def _send_parity(self, group: GroupState, j: int, parity: torch.Tensor) -> None:
        (inst,) = await self.pool.pick("parity", 1, parity_index=j, exclude=self._avoid("parity", j, group.used))
        self._dispatch_parity(group, j, parity, inst)

    def _dispatch_parity(self, group: GroupState, j: int, parity: torch.Tensor, inst: Instance) -> None:
        group.used.add(inst.name)  # a re-sent member keeps out of the parity's failure domain too
        group.parity_requests[self._start(inst, parity, lambda rid, i, res: self._on_parity(group, j, rid, res))] = inst

    def _on_member(self, q: QueryState, req_id: int, inst: Instance, result: torch.Tensor | Exception) -> None:
        group = q.group
        assert group is not None
        q.requests.pop(req_id, None)
        if isinstance(result, torch.Tensor):
            group.outputs[q.slot] = result
            self._answer(q, result, degraded=False)
            self._check_decode(group)
        elif isinstance(result, InstanceError) and not q.future.done() and not q.requests:
            group.failed.add(q.slot)
            if not self._check_decode(group):
                self._resend(q, result, lambda: self._send_member(q))

    def _on_parity(self, group: GroupState, j: int, req_id: int, result: torch.Tensor | Exception) -> None:
        group.parity_requests.pop(req_id, None)
        if isinstance(result, torch.Tensor):
            group.parities[j] = result
            self._check_decode(group)

    def _check_decode(self, group: GroupState) -> bool:
        """Decode now, arm the grace timer, or wait. Returns True if a decode happened or is armed."""
        waiting = [q for q in group.queries if not q.future.done()]
        if not waiting:
            self._cancel(group.parity_requests)
            return False
        arrived = sum(o is not None for o in group.outputs) + sum(p is not None for p in group.parities)
        if not group.coded or arrived < group.k:
            return False
        urgent = any(q.deadline_passed or q.slot in group.failed for q in waiting)
        if urgent or self.config.decode_grace_s == 0:
            self._decode(group)
        elif group.grace is None:
            group.grace = asyncio.get_running_loop().call_later(self.config.decode_grace_s, self._decode, group)
        return True

    def _decode(self, group: GroupState) -> None:
        assert self.code is not None
        if group.grace is not None:
            group.grace.cancel()
        waiting = [q for q in group.queries if not q.future.done()]
        if not waiting:
            return
        template = next(t for t in (*group.outputs, *group.parities) if t is not None)
        available = torch.tensor([[t is not None for t in (*group.outputs, *group.parities)]])
        outputs = torch.stack([template.new_zeros(template.shape) if t is None else t for t in group.outputs])
        parities = torch.stack([template.new_zeros(template.shape) if t is None else t for t in group.parities])
        with torch.inference_mode():
            decoded = self.code.decode(outputs[None], parities[None], available)[0]
        for q in waiting:
            self._answer(q, decoded[q.slot].clone(), degraded=True)
        self._cancel(group.parity_requests)
