"""What the frontend needs from a serving instance, and the pool that picks among them."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Literal

import torch

Role = Literal["model", "parity"]


class InstanceError(RuntimeError):
    """An instance failed while holding a request (crash, closed connection)."""


class RequestCancelled(RuntimeError):
    """The frontend withdrew a request before its answer arrived."""


class Instance(ABC):
    """One model (F) or parity-model (F_P) replica.

    Args:
        name: unique name, e.g. ``"model-0"``.
        role: ``"model"`` answers queries, ``"parity"`` answers parity queries.
        parity_index: for a parity instance, which parity j of the code it answers.
    """

    shares_domains = False  # True where instances can share a failure domain (the ray backend's nodes)

    def __init__(self, name: str, role: Role, parity_index: int | None = None) -> None:
        if role not in ("model", "parity"):
            raise ValueError(f"instance role must be 'model' or 'parity', got {role!r}.")
        if (role == "parity") != (parity_index is not None):
            raise ValueError(f"instance {name!r}: a parity index is required for parity instances and only for them.")
        self.name = name
        self.role: Role = role
        self.parity_index = parity_index

    @property
    @abstractmethod
    def alive(self) -> bool:
        """Whether requests may be sent now (False while crashed or restarting)."""

    @property
    def domain(self) -> str:
        """Failure domain, e.g. the node it runs on: the frontend keeps a group's requests in distinct
        domains when it can. By default each instance is its own."""
        return self.name

    @abstractmethod
    async def infer(self, request_id: int, x: torch.Tensor) -> torch.Tensor:
        """Answer one query ``(*input_shape)`` with ``(*output_shape)``.

        Raises:
            InstanceError: the instance died holding the request.
            RequestCancelled: :meth:`cancel` withdrew it.
        """

    @abstractmethod
    def cancel(self, request_id: int) -> None:
        """Withdraw a request: queued work is dropped, a running one's answer is discarded.

        :meth:`infer` then raises :class:`RequestCancelled`; an instance that can tell (the local
        workers do) raises it only once it has let go of the request, so the pool's load keeps counting
        a cancelled request that still occupies the instance.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class InstancePool:
    """Tracks outstanding requests per instance and picks the least-loaded eligible ones.

    Args:
        instances: every model and parity instance.
        capacity: outstanding requests per instance before dispatch waits (back-pressure).
    """

    def __init__(self, instances: Iterable[Instance], capacity: int = 64) -> None:
        self.instances = list(instances)
        names = [i.name for i in self.instances]
        if len(set(names)) != len(names):
            raise ValueError(f"instance names must be unique, got {names}.")
        if capacity < 1:
            raise ValueError(f"instance capacity must be >= 1, got {capacity}.")
        self.capacity = capacity
        self._domains = any(i.shares_domains for i in self.instances)
        self.recheck_s = 0.05
        self.load: dict[str, int] = {n: 0 for n in names}
        self._changed = asyncio.Condition()
        self._waiting = 0  # dispatchers blocked in pick(); release() only wakes them when there are some

    def members(self, role: Role, parity_index: int | None = None) -> list[Instance]:
        """Instances of a role (and parity index), alive or not."""
        return [i for i in self.instances
                if i.role == role and (parity_index is None or i.parity_index == parity_index)]

    def sharing_domain(self, names: Iterable[str]) -> set[str]:
        """Names of the instances in the same failure domain as any of ``names`` (those included)."""
        names = set(names)
        if not self._domains:
            return names
        domains = {i.domain for i in self.instances if i.name in names}
        return names | {i.name for i in self.instances if i.domain in domains}

    def queue_depth(self) -> int:
        """Requests outstanding over all instances."""
        return sum(self.load.values())

    def _eligible(self, role: Role, parity_index: int | None, exclude: set[str],
                  below: int | None = None) -> list[Instance]:
        limit = self.capacity if below is None else min(below, self.capacity)
        found = [i for i in self.members(role, parity_index)
                 if i.alive and i.name not in exclude and self.load[i.name] < limit]
        return sorted(found, key=lambda i: self.load[i.name])

    def try_pick(self, role: Role, count: int = 1, parity_index: int | None = None,
                 exclude: set[str] | None = None, below: int | None = None) -> list[Instance] | None:
        """``count`` distinct least-loaded eligible instances, or None if there are not enough now.

        ``below``: only instances with fewer outstanding requests than this (1: idle ones). The chosen
        instances' load is counted at once; :meth:`release` each when its request ends.
        """
        found = self._eligible(role, parity_index, exclude or set(), below)
        if len(found) < count:
            return None
        for inst in found[:count]:
            self.load[inst.name] += 1
        return found[:count]

    def can_ever_pick(self, role: Role, count: int, parity_index: int | None = None,
                      exclude: set[str] | None = None) -> bool:
        """Whether enough instances exist at all (alive or restarting), ignoring load."""
        return len([i for i in self.members(role, parity_index) if i.name not in (exclude or set())]) >= count

    async def pick(self, role: Role, count: int = 1, parity_index: int | None = None,
                   exclude: set[str] | None = None) -> list[Instance]:
        """Like :meth:`try_pick` but waits for capacity (back-pressure) or a restart."""
        if not self.can_ever_pick(role, count, parity_index, exclude):
            raise ValueError(f"the pool has fewer than {count} {role} instances outside {sorted(exclude or ())}.")
        if (chosen := self.try_pick(role, count, parity_index, exclude)) is not None:
            return chosen
        self._waiting += 1
        try:
            async with self._changed:
                while (chosen := self.try_pick(role, count, parity_index, exclude)) is None:
                    # Liveness can change without a release (a restart), so re-check now and then.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), self.recheck_s)
                return chosen
        finally:
            self._waiting -= 1

    async def release(self, instance: Instance) -> None:
        """Uncount one request and wake dispatchers waiting for capacity."""
        self.load[instance.name] -= 1
        if self._waiting:
            await self.notify()

    async def notify(self) -> None:
        """Wake waiters after a change in load or liveness (e.g. an instance restarted)."""
        async with self._changed:
            self._changed.notify_all()
