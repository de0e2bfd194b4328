"""Training wall time and throughput, measured over training batches only."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch


class ThroughputMonitor(pl.Callback):
    """Accumulates seconds spent in training epochs and the samples they processed.

    Args:
        warmup_steps: training batches at the start of the fit left out of the figures (first-step
            allocations, cuDNN autotuning, ``torch.compile``'s compilation); the clock restarts after each.
    """

    def __init__(self, warmup_steps: int = 0) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.warmup_steps = warmup_steps
        self.seconds = 0.0
        self.samples = 0
        self._batches = 0
        self._start = 0.0
        self._last = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._batches += 1
        if self._batches <= self.warmup_steps:
            if self._batches == self.warmup_steps and pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)  # queued warm-up work must not leak into the clock
            self._start = self._last = time.perf_counter()
            return
        self.samples += int(batch[0].shape[0])
        if pl_module.device.type == "cuda" and batch_idx + 1 >= trainer.num_training_batches:
            # Training steps never wait for the GPU, so the host runs ahead: the epoch's clock stops when
            # its queued kernels have run (one sync per epoch), not when the last step was launched.
            torch.cuda.synchronize(pl_module.device)
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs end-of-epoch validation before this hook: stop the clock at the last
        # training batch so samples/s measures training alone.
        self.seconds += self._last - self._start

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0
