"""What the frontend keeps: its settings, its answers and counters, and per-query/per-group state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import torch

from parm.serving.instance import Instance

Policy = Literal["parm", "plain", "hedge", "hedge-spare", "parm-hedge"]
POLICIES = ("parm", "plain", "hedge", "hedge-spare", "parm-hedge")


@dataclass(frozen=True)
class FrontendConfig:
    """Frontend settings.

    Args:
        policy: ``"parm"``, ``"plain"``, ``"hedge"``, or a hybrid: ``"hedge-spare"`` (a backup only to an
            idle instance: hedging limited to spare capacity) or ``"parm-hedge"`` (parm, plus a backup of
            a member still missing ``hedge_delay_s`` after it was sent while its group cannot be decoded).
        group_timeout_s: group-formation deadline. Members are sent the moment they arrive; the
            parities once the group has k members. A group still short of k this long after its first
            arrival is closed and its members stay uncoded (counted in ``Stats.uncoded``).
        decode_grace_s: once decoding is possible, wait up to this long for the original (0 = decode
            at once, the reference's behaviour).
        query_deadline_s: optional per-query deadline; when it passes, decode at once if possible.
        hedge_delay_s: ``hedge``, ``hedge-spare``, ``parm-hedge``: when to send the backup request.
        max_pending: queries admitted at once; :meth:`Frontend.predict` waits beyond (back-pressure).
        max_attempts: sends of one query before it is answered with an error.
    """

    policy: Policy = "parm"
    group_timeout_s: float = 0.05
    decode_grace_s: float = 0.002
    query_deadline_s: float | None = None
    hedge_delay_s: float = 0.02
    max_pending: int = 4096
    max_attempts: int = 4

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}.")
        for name in ("group_timeout_s", "decode_grace_s", "hedge_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}.")
        if self.query_deadline_s is not None and self.query_deadline_s <= 0:
            raise ValueError(f"query_deadline_s must be > 0 or None, got {self.query_deadline_s}.")
        if self.max_pending < 1 or self.max_attempts < 1:
            raise ValueError(f"max_pending and max_attempts must be >= 1, got {self.max_pending}, {self.max_attempts}.")


@dataclass(frozen=True)
class Prediction:
    """One answer.

    Attributes:
        output: ``(*output_shape)`` F(X), or the decoder's reconstruction when ``degraded``.
        degraded: True when the answer was reconstructed from parities.
        coded: True when the query travelled in a coding group.
        latency_s: from :meth:`Frontend.predict` to the answer.
    """

    output: torch.Tensor
    degraded: bool
    coded: bool
    latency_s: float


@dataclass
class Stats:
    """Counters since start."""

    queries: int = 0
    requests: int = 0
    answered: int = 0
    degraded: int = 0
    failed: int = 0
    groups: int = 0
    uncoded: int = 0
    resent: int = 0
    hedged: int = 0
    cancelled: int = 0
    instance_errors: int = 0


@dataclass(eq=False)
class QueryState:
    x: torch.Tensor
    future: asyncio.Future[Prediction]
    t0: float
    group: GroupState | None = None
    slot: int = 0
    attempts: int = 0
    deadline_passed: bool = False
    requests: dict[int, Instance] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class GroupState:
    queries: list[QueryState]
    r: int
    k: int
    coded: bool = True
    used: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    outputs: list[torch.Tensor | None] = field(default_factory=list)
    parities: list[torch.Tensor | None] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)
    parity_requests: dict[int, Instance] = field(default_factory=dict)
    grace: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.outputs = [None] * self.k
        self.parities = [None] * self.r
