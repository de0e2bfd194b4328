"""Speed engineering for :class:`~parm.lit.ParityModule`, kept out of the algorithm.

- :class:`FastPath`: the settings (``parity.compile``, ``parity.channels_last``, ``parity.cache_targets``,
  ``parity.precompute_targets``).
- :class:`CompiledCalls`: F and F_P as called in steps: through ``torch.compile`` (the networks, not the
  module, so the state dict keeps its plain keys), in channels-last layout, with CUDA-graph bookkeeping.
- :class:`TargetCache`: F's outputs on the training split, computed once (F is frozen and, without
  augmentation, sees the same inputs every epoch), so a step runs only F_P.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes whose compiled calls replay CUDA graphs
_PRECOMPUTE_CHUNK = 4096  # samples per F forward when precomputing the target cache


def compile_mode(value: bool | str | None) -> str | None:
    """``parity.compile`` as a ``torch.compile`` mode: None (off), or one of :data:`COMPILE_MODES`."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ValueError(f"parity.compile must be false, true or one of {COMPILE_MODES}, got {value!r}.")


@dataclass(frozen=True)
class FastPath:
    """How F and F_P run; none of it changes what they compute.

    Attributes:
        compile: False, True (torch's default mode) or a mode from :data:`COMPILE_MODES`;
            ``"reduce-overhead"`` replays F_P's forward and backward as CUDA graphs.
        channels_last: feed 4-D inputs in channels-last layout (tensor-core convolutions); the caller
            converts the networks' weights.
        cache_targets: keep F's training outputs once computed. Only valid without input augmentation.
        precompute_targets: with ``cache_targets``, compute F on the whole training split when training
            starts (batched) instead of filling the cache lazily.
    """

    compile: bool | str = False
    channels_last: bool = False
    cache_targets: bool = True
    precompute_targets: bool = True

    def __post_init__(self) -> None:
        compile_mode(self.compile)  # refuse an unknown mode at construction


class CompiledCalls:
    """F and the parity models as a training or evaluation step calls them.

    Plain attributes, not submodules: the compiled wrappers share the networks' parameters, and the
    LightningModule's state dict keeps the networks' own keys.
    """

    def __init__(self, base_model: nn.Module, parity_models: Iterable[nn.Module], fast: FastPath) -> None:
        self.mode = mode = compile_mode(fast.compile)
        self.channels_last = fast.channels_last
        # Static shapes: every training batch has the same size; the last eval batch compiles once more.
        self.base: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(base_model, mode=mode, dynamic=False) if mode else base_model)
        self.parities: list[Callable[[torch.Tensor], torch.Tensor]] = [
            torch.compile(m, mode=mode, dynamic=False) if mode else m for m in parity_models]

    @property
    def graphs(self) -> bool:
        return self.mode in CUDA_GRAPH_MODES

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def base_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """F's outputs ``(N, C)`` in float32 for inputs ``(N, *S)``, without gradients."""
        with torch.no_grad():
            out = self.base(self.layout(x))
        if self.graphs and out.dtype == torch.float32:
            # A CUDA-graph replay overwrites its previous outputs (the target precompute calls F chunk
            # after chunk); .float() copies only non-float32 outputs, so copy here.
            return out.clone()
        return out.float()

    def parity_outputs(self, queries: torch.Tensor) -> torch.Tensor:
        """Parity queries ``(B, r, *P)`` -> answers ``(B, r, C)``, query j by parity model j."""
        return torch.stack([call(self.layout(queries[:, j])) for j, call in enumerate(self.parities)], dim=1)

    def step_begin(self) -> None:
        """CUDA-graph trees reuse their output memory on the next replay: a new step starts here."""
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()


class TargetCache:
    """F's outputs ``(N, C)`` on the training split, by sample index, filled once.

    Args:
        output_dim: C.
        forward: F's outputs for a batch of inputs (:meth:`CompiledCalls.base_outputs`).
    """

    def __init__(self, output_dim: int, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.output_dim, self.forward = output_dim, forward
        self.values: torch.Tensor | None = None
        self.known: torch.Tensor | None = None
        self.complete = False
        self.seconds = 0.0  # time spent precomputing

    def precompute(self, datamodule: Any, device: torch.device) -> None:
        """Fill the cache from the datamodule's whole training split (``split``, ``normalize``), once."""
        if self.complete:
            return
        started = time.perf_counter()
        x = datamodule.split("train")[0]
        outputs = [self.forward(datamodule.normalize(chunk.to(device, non_blocking=True)))
                   for chunk in x.split(_PRECOMPUTE_CHUNK)]
        self.values = torch.cat(outputs)
        self.known = torch.ones(len(x), dtype=torch.bool, device=device)
        self.complete = True
        self.seconds = time.perf_counter() - started

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """F's outputs for inputs ``x`` ``(N, *S)`` of training samples ``index`` ``(N,)``."""
        if self.complete and self.values is not None and self.values.device == x.device:
            return self.values[index]  # no host sync
        needed = int(index.max()) + 1
        if self.values is None or self.known is None or self.values.device != x.device \
                or self.values.shape[0] < needed:
            self._grow(needed, x.device)
        assert self.values is not None and self.known is not None
        if bool(self.known[index].all()):
            return self.values[index]
        out = self.forward(x)
        self.values[index] = out
        self.known[index] = True
        return out

    def _grow(self, size: int, device: torch.device) -> None:
        """(Re)allocate for ``size`` training samples, keeping what the cache holds."""
        values = torch.zeros(size, self.output_dim, device=device)
        known = torch.zeros(size, dtype=torch.bool, device=device)
        if self.values is not None and self.known is not None:
            old = min(size, self.values.shape[0])
            values[:old] = self.values[:old].to(device)
            known[:old] = self.known[:old].to(device)
        self.values, self.known = values, known
