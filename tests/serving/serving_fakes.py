"""Fake in-process instances: a real (linear) model behind an asyncio delay, with crashes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import torch
from torch import nn

from parm.serving.instance import Instance, InstanceError, RequestCancelled, Role

torch.set_num_threads(1)


class FakeInstance(Instance):
    """Answers ``model(x)`` after ``delay(request_number)`` seconds; records what it served.

    ``crash()`` fails every outstanding request, as a dead worker's closed connection does.
    """

    def __init__(self, name: str, role: Role, model: nn.Module, delay: Callable[[int], float],
                 parity_index: int | None = None) -> None:
        super().__init__(name, role, parity_index)
        self.model = model
        self.delay = delay
        self.served: list[int] = []
        self.seen: list[torch.Tensor] = []
        self.cancelled: list[int] = []
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._alive = True
        self._count = 0

    @property
    def alive(self) -> bool:
        return self._alive

    async def infer(self, request_id: int, x: torch.Tensor) -> torch.Tensor:
        if not self._alive:
            raise InstanceError(f"{self.name} is down")
        self._count += 1
        self.seen.append(x)
        gate = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = gate
        handle = asyncio.get_running_loop().call_later(self.delay(self._count), _resolve, gate)
        try:
            await gate
        finally:
            handle.cancel()
            self._waiting.pop(request_id, None)
        self.served.append(request_id)
        with torch.no_grad():
            return self.model(x[None])[0]

    def cancel(self, request_id: int) -> None:
        gate = self._waiting.get(request_id)
        if gate is not None and not gate.done():
            self.cancelled.append(request_id)
            gate.set_exception(RequestCancelled(request_id))

    def crash(self, restart_after: float | None = None) -> None:
        self._alive = False
        for gate in self._waiting.values():
            if not gate.done():
                gate.set_exception(InstanceError(f"{self.name} crashed"))
        if restart_after is not None:
            asyncio.get_running_loop().call_later(restart_after, setattr, self, "_alive", True)


def _resolve(gate: asyncio.Future[None]) -> None:
    if not gate.done():
        gate.set_result(None)


def jitter(base: float, seed: int, slow_every: int = 0, slow: float = 0.0) -> Callable[[int], float]:
    """Delay function: ``base`` plus up to 50% jitter, and ``slow`` every ``slow_every``-th request."""
    rng = random.Random(seed)

    def delay(n: int) -> float:
        extra = slow if slow_every and n % slow_every == 0 else 0.0
        return base * (1 + 0.5 * rng.random()) + extra

    return delay


def write_checkpoints(directory, k: int = 2, r: int = 1, seed: int = 0) -> tuple[str, str]:
    """An untrained MNIST MLP as ``base.pt`` and r parity MLPs with a sum code as ``parity.pt``."""
    from parm.artifacts import code_record, save_parity
    from parm.coding import CodeSpec, build_code
    from parm.models.checkpoint import save_model
    from parm.models.mlp import MLP

    torch.manual_seed(seed)
    spec = {"_target_": "parm.models.mlp.MLP", "input_shape": [1, 28, 28], "num_classes": 10}
    base = save_model(directory / "base.pt", MLP(input_shape=(1, 28, 28), num_classes=10), spec)
    code = build_code("sum", "subtraction", CodeSpec(k, r), (1, 28, 28), (10,))
    parities = [MLP(input_shape=(1, 28, 28), num_classes=10) for _ in range(r)]
    parity = save_parity(directory / "parity.pt", parities, spec, code, code_record(code, {}, {}), (1, 28, 28), (10,))
    return str(base), str(parity)
