"""The loops :mod:`parm.bench.training` times beside parm's own: the reference algorithm, the plain loop
and the speed of light, with the evaluation clock they share. Each one is timed by the same
:class:`~parm.bench.harness.Harness` and scored by :func:`parm.evaluation.evaluate_parity_models`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from parm.bench.harness import Harness, sync
from parm.coding import Code
from parm.data import transforms
from parm.data.base import TensorDataModule
from parm.evaluation import evaluate_parity_models
from parm.lit.speed import CompiledCalls, FastPath
from parm.pipeline import ParityParts

# ---- shared pieces ---------------------------------------------------------------------------------------


def evaluate(base: nn.Module, parity_models: Sequence[nn.Module], code: Code, datamodule: TensorDataModule,
             device: torch.device) -> dict[str, float]:
    """Test-set A_a, A_d and agreement by the one protocol (:func:`parm.evaluation.score_erasures`);
    the parity models are back in training mode afterwards."""
    x, y = datamodule.split("test")
    modes = [m.training for m in parity_models]
    result = evaluate_parity_models("bench", base, list(parity_models), code,
                                    datamodule.normalize(x.to(device)), y.to(device), task=datamodule.task)
    for model, mode in zip(parity_models, modes, strict=True):
        model.train(mode)
    return {"available_acc": result.available_acc, "degraded_acc": result.degraded_acc,
            "agreement": float(result.agreement) if result.agreement is not None else float("nan")}


class Clock:
    """Training seconds with evaluation pauses taken out, and the A_d trace at each evaluation."""

    def __init__(self, target: float, budget: float) -> None:
        self.target, self.budget = target, budget
        self.elapsed, self.started = 0.0, 0.0
        self.trace: list[tuple[float, float]] = []
        self.reached: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def checkpoint(self, evaluate_fn: Any, device: torch.device) -> bool:
        """Stop the clock, evaluate, restart it; True when the target is met or the budget spent."""
        sync(device)
        self.elapsed += time.perf_counter() - self.started
        a_d = float(evaluate_fn()["degraded_acc"])
        self.trace.append((round(self.elapsed, 3), round(a_d, 4)))
        if self.reached is None and a_d >= self.target:
            self.reached = self.elapsed
        self.start()
        return self.reached is not None or self.elapsed >= self.budget

    def result(self) -> dict[str, Any]:
        return {"target": self.target, "seconds": self.reached, "trace": self.trace,
                "final_degraded_acc": self.trace[-1][1] if self.trace else None}


# ---- the reference loop ----------------------------------------------------------------------------------


class PerSampleDataset(torch.utils.data.Dataset):
    """The reference's input path: one uint8 sample at a time to a normalised float tensor."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        # Stored as the files hold them: (N, H, W) grey or (N, H, W, C) colour uint8.
        x = x.cpu()
        self.x = (x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)).numpy()
        self.y = y.cpu().numpy()
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # torchvision's MNIST/CIFAR10 datasets hand out PIL images; ToTensor() turns each back into a
        # (C, H, W) float tensor in [0, 1], Normalize() standardises it: done here without torchvision.
        image = Image.fromarray(self.x[i])
        x = torch.from_numpy(np.array(image, copy=True)).view(image.size[1], image.size[0], -1)
        x = x.permute(2, 0, 1).contiguous().float().div(255.0)
        return (x - self.mean) / self.std, int(self.y[i])


class ReferenceLoop:
    """The reference algorithm: encode, F_P(P), MSE to sum_i F(X_i) with F run on every batch."""

    def __init__(self, parts: ParityParts, datamodule: TensorDataModule, groups_per_batch: int,
                 harness: Harness, seed: int) -> None:
        self.harness, self.device, self.k = harness, harness.device, parts.code.spec.k
        self.base = copy.deepcopy(parts.module.base_model).to(self.device).eval()
        self.code = copy.deepcopy(parts.code).to(self.device)
        self.parity = copy.deepcopy(parts.parity_models[0]).to(self.device).train()
        self.parity_call = harness.compiled(self.parity)
        self.optimizer = torch.optim.Adam(self.parity.parameters(), lr=1e-3, weight_decay=1e-5)
        x, y = datamodule.split("train")
        dataset = PerSampleDataset(x, y, datamodule.mean, datamodule.std)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=groups_per_batch * self.k, shuffle=True,
                                                  drop_last=True, generator=torch.Generator().manual_seed(seed))
        self.samples_per_step = groups_per_batch * self.k

    def step(self, x: torch.Tensor) -> None:
        x = x.to(self.device)
        groups = x.view(-1, self.k, *x.shape[1:])
        with torch.no_grad():
            target = self.base(x).view(groups.shape[0], self.k, -1).sum(1)
        loss = F.mse_loss(self.parity_call(self.code.encode(groups)[:, 0]), target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def _batches(self) -> Iterator[torch.Tensor]:
        while True:
            for x, _ in self.loader:
                yield x

    def throughput(self, max_steps: int) -> dict[str, float]:
        """Rates over ``max_steps`` timed steps after the harness's warm-up."""
        batches = self._batches()
        return self.harness.time(lambda: self.step(next(batches)), max_steps, self.samples_per_step, self.k)

    def time_to_accuracy(self, clock: Clock, datamodule: TensorDataModule, eval_every: int) -> dict[str, Any]:
        clock.start()
        for steps, x in enumerate(self._batches(), start=1):
            self.harness.step_begin()
            self.step(x)
            if steps % eval_every == 0 and clock.checkpoint(
                    lambda: evaluate(self.base, [self.parity], self.code, datamodule, self.device), self.device):
                return clock.result()
        raise AssertionError("unreachable: the batches never end")


# ---- the plain fast loop ---------------------------------------------------------------------------------


class PlainLoop:
    """parm's training algorithm without Lightning (the issue's "plain loop"), same init and settings.

    For r = 1 with the subtraction decoder, parm's loss on one erased slot equals
    ``MSE(F_P(P), sum_i F(X_i))``, which this loop computes directly.
    """

    def __init__(self, parts: ParityParts, datamodule: TensorDataModule, cfg: DictConfig,
                 harness: Harness, seed: int) -> None:
        module = parts.module
        self.harness, self.k = harness, parts.code.spec.k
        self.device = device = harness.device
        self.base = copy.deepcopy(module.base_model).to(device).eval()
        self.code = copy.deepcopy(parts.code).to(device)
        self.parity = copy.deepcopy(parts.parity_models[0]).to(device).train()
        self.channels_last = module.fast.channels_last
        # F and F_P called exactly as parm's module calls them, under the harness's compile mode.
        self.calls = CompiledCalls(self.base, [self.parity], FastPath(compile=harness.compile or False,
                                                                      channels_last=self.channels_last))
        self.optimizer = module.optimizer_factory(self.parity.parameters())
        self.bf16 = str(cfg.trainer.precision).startswith("bf16")
        self.datamodule, self.augment = datamodule, datamodule.augment
        x, _ = datamodule.split("train")
        self.x = x.to(device)
        self.batch = datamodule.groups_per_batch * self.k
        self.generator = torch.Generator(device).manual_seed(seed)
        self.cache: torch.Tensor | None = None
        if module.cache_targets:
            with torch.no_grad():
                self.cache = torch.cat([self._base(datamodule.normalize(chunk)) for chunk in self.x.split(4096)])

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.calls.base_outputs(x)

    def loss(self, index: torch.Tensor) -> torch.Tensor:
        """The training loss on the samples ``index`` of the training split (consecutive k form a group)."""
        x = self.x[index]
        if self.augment:
            x = transforms.augment(x, generator=self.generator)
        x = self.datamodule.normalize(x)
        outputs = self.cache[index] if self.cache is not None else self._base(x)
        target = outputs.view(-1, self.k, outputs.shape[-1]).sum(1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            parity = self.calls.parity_outputs(self.code.encode(x.view(-1, self.k, *x.shape[1:])))[:, 0]
            return F.mse_loss(parity.float(), target)

    def step(self, index: torch.Tensor) -> None:
        loss = self.loss(index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _batches(self) -> Iterator[torch.Tensor]:
        """Sample indices of every full batch of a fresh permutation per epoch, epoch after epoch."""
        while True:
            order = torch.randperm(len(self.x), device=self.device, generator=self.generator)
            for start in range(0, len(order) - self.batch + 1, self.batch):
                yield order[start:start + self.batch]

    def throughput(self, max_steps: int) -> dict[str, float]:
        """Rates over ``max_steps`` timed steps after the harness's warm-up."""
        batches = self._batches()
        return self.harness.time(lambda: self.step(next(batches)), max_steps, self.batch, self.k)

    def time_to_accuracy(self, clock: Clock, datamodule: TensorDataModule, eval_every: int) -> dict[str, Any]:
        """Training seconds until test A_d reaches the clock's target (constant lr: no schedule here)."""
        clock.start()
        for steps, index in enumerate(self._batches(), start=1):
            self.harness.step_begin()
            self.step(index)
            if steps % eval_every == 0 and clock.checkpoint(
                    lambda: evaluate(self.base, [self.parity], self.code, datamodule, self.device), self.device):
                return clock.result()
        raise AssertionError("unreachable: the batches never end")


# ---- speed of light ---------------------------------------------------------------------------------------


def speed_of_light(parity: nn.Module, shape: tuple[int, ...], groups: int, k: int, harness: Harness,
                   steps: int, fast: bool) -> dict[str, float]:
    """F_P forward + backward + Adam step on random parity queries ``(groups, *shape)``."""
    device = harness.device
    model = copy.deepcopy(parity).to(device).train()
    x = torch.randn(groups, *shape, device=device)
    if fast:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
        x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
    with torch.no_grad():
        target = torch.randn_like(model(x).float())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)
    call = harness.compiled(model)

    def step() -> None:
        with autocast:
            loss = F.mse_loss(call(x).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return harness.time(step, steps, groups * k, k)
