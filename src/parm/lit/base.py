"""LightningModule that trains the deployed model F (stage ``base``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric

from parm.lit.progress import LogSteps
from parm.tasks import Task, get_task


class BaseModule(LogSteps, pl.LightningModule):
    """Training of F with its task's loss: cross-entropy on logits, or MSE on boxes.

    Logs ``{stage}/loss`` and the task's metrics (``{stage}/acc``; ``{stage}/iou`` and ``{stage}/miou``).

    Args:
        model: F, mapping ``(N, *input_shape)`` to outputs ``(N, D)`` (logits or boxes).
        optimizer: partial optimizer ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: optional partial ``optimizer -> LRScheduler``, stepped per epoch.
        task: what F predicts (:mod:`parm.tasks`), by name or as a :class:`~parm.tasks.Task`.
    """

    def __init__(self, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, task: str | Task = "classification") -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.task = get_task(task)
        self.val_metrics = nn.ModuleDict(self.task.base_metrics())
        self.test_metrics = nn.ModuleDict(self.task.base_metrics())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        loss = self.task.base_loss(self.model(x), y)
        self.log("train/loss", loss)  # off the progress bar: Lightning would read it every step (a sync)
        if self._is_log_step():
            self._note_loss(loss, "base model")
        return loss

    def _shared_eval(self, batch: tuple[torch.Tensor, ...], stage: str) -> None:
        x, y = batch[0], batch[1]
        outputs = self.model(x)
        self.log(f"{stage}/loss", self.task.base_loss(outputs, y))
        for key, module in (self.val_metrics if stage == "val" else self.test_metrics).items():
            metric = cast(Metric, module)
            metric.update(outputs, y)
            self.log(f"{stage}/{key}", metric, prog_bar=key == self.task.base_metric)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
