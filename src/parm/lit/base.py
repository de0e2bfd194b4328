"""LightningModule that trains the deployed model F (stage ``base``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from parm.metrics import TopKAccuracy


class BaseModule(pl.LightningModule):
    """Cross-entropy training of F.

    Args:
        model: F, mapping ``(N, *input_shape)`` to logits ``(N, C)``.
        optimizer: partial optimizer ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: optional partial ``optimizer -> LRScheduler``, stepped per epoch.
    """

    def __init__(self, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_acc = TopKAccuracy(top_k=1)
        self.test_acc = TopKAccuracy(top_k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        loss = F.cross_entropy(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _shared_eval(self, batch: tuple[torch.Tensor, ...], stage: str) -> None:
        x, y = batch[0], batch[1]
        logits = self.model(x)
        metric = self.val_acc if stage == "val" else self.test_acc
        metric.update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y))
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
