"""One timing harness for every training contender: the same warm-up, synchronisation and compile setting.

Each contender (the reference loop, the plain loop, the speed of light) hands :meth:`Harness.time` one
training step; parm's Lightning fit gets the same treatment from :class:`parm.lit.ThroughputMonitor`
with :attr:`Harness.warmup_steps`. The clock starts after ``warmup_steps`` untimed steps and a device
synchronisation (compilation, cuDNN autotuning, first allocations stay out), and stops after a final
synchronisation (queued GPU work counts). Every contender's networks run under the same
``parity.compile`` mode (:meth:`Harness.compiled`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from parm.lit.speed import CUDA_GRAPH_MODES


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rates_of(samples: int, seconds: float, k: int) -> dict[str, float]:
    """Seconds, images/s and coding groups/s for ``samples`` images in ``seconds``."""
    seconds = max(seconds, 1e-9)
    return {"seconds": seconds, "images_per_second": samples / seconds, "groups_per_second": samples / k / seconds}


@dataclass(frozen=True)
class Harness:
    """What every contender shares.

    Attributes:
        device: where training runs.
        warmup_steps: untimed steps before each contender's clock starts.
        compile: the ``torch.compile`` mode every contender's networks run under (None: eager).
    """

    device: torch.device
    warmup_steps: int = 3
    compile: str | None = None

    def compiled(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """``model`` as every contender calls it: through ``torch.compile`` when the bench compiles."""
        return torch.compile(model, mode=self.compile, dynamic=False) if self.compile else model  # type: ignore[return-value]

    def step_begin(self) -> None:
        if self.compile in CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()

    def time(self, step: Callable[[], Any], steps: int, samples_per_step: int, k: int) -> dict[str, float]:
        """Rates of ``steps`` timed calls of ``step`` after :attr:`warmup_steps` untimed ones."""
        for _ in range(self.warmup_steps):
            self.step_begin()
            step()
        sync(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            self.step_begin()
            step()
        sync(self.device)
        return rates_of(steps * samples_per_step, time.perf_counter() - started, k)
