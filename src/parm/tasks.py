"""What F predicts decides how F and F_P are trained and scored: one :class:`Task` per kind of output.

- ``classification``: F outputs ``(N, C)`` logits, labels are ``(N,)`` int64; F trains by cross-entropy,
  F_P by MSE on logits or KL; scores are top-k accuracies (:class:`~parm.metrics.ParityMetrics`).
- ``regression``: F outputs ``(N, 4)`` boxes ``(x1, y1, x2, y2)``, targets are ``(N, 4)`` float; F and F_P
  train by MSE; scores are IoU >= 0.75 hit rates and mean IoU
  (:class:`~parm.metrics.regression.LocalizationMetrics`).

The datamodule names its task (``TensorDataModule.task``); the Lightning modules and the pipeline ask
the task for the loss, the metrics, the default answer and the checkpoint monitor, and never branch on
the task themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from parm.metrics import ParityMetrics, TopKAccuracy
from parm.metrics.regression import IOU_THRESHOLD, IoUHitRate, LocalizationMetrics, MeanIoU, box_iou

__all__ = ["TASKS", "ClassificationTask", "RegressionTask", "StageMetrics", "Task", "get_task"]

# F_P's metrics of one stage: both share update_available / update_degraded / compute / reset.
StageMetrics = ParityMetrics | LocalizationMetrics


class Task(ABC):
    """The task-specific pieces of training and scoring F and F_P.

    Attributes:
        name: the task's name (``task=`` in the config).
        parity_losses: the ``parity.loss`` values that fit this task's outputs.
        base_metric: the key F's headline metric is logged under (``val/{base_metric}``), its monitor.
        summary_keys: logged key of stage ``base`` -> its key in the summary's ``test`` block.
        parity_monitor: the key F_P's checkpoint is chosen by (``val/{parity_monitor}``).
        degraded_key: the degraded-mode headline (progress bar, the sweep objective).
    """

    name: str
    parity_losses: tuple[str, ...]
    base_metric: str
    summary_keys: Mapping[str, str]
    parity_monitor: str
    degraded_key: str

    @abstractmethod
    def base_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """F's training loss for outputs ``(N, D)`` and the batch's targets."""

    @abstractmethod
    def base_metrics(self) -> dict[str, Metric]:
        """Fresh metrics of F for one stage, by logged key; updated with ``(outputs, targets)``."""

    @abstractmethod
    def default_answer(self, train_targets: torch.Tensor) -> Any:
        """The default-answer baseline's answer for a missing prediction, from the training targets."""

    @abstractmethod
    def parity_metrics(self, output_dim: int, default_answer: Any, fractions: Sequence[float]) -> StageMetrics:
        """Fresh metrics of one stage of F_P, with ``update_available``/``update_degraded``/``compute``/``reset``."""

    @abstractmethod
    def answer(self, output: torch.Tensor) -> dict[str, Any]:
        """What a server answers for F's output ``(D,)``: ``prediction`` and what else the task gives."""

    @abstractmethod
    def hits(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: which outputs ``(N, D)`` count as correct for their targets (a load test's accuracy)."""

    def check_parity_loss(self, loss: str) -> str:
        """``loss`` if it fits this task, else a ValueError that says which do."""
        if loss not in self.parity_losses:
            raise ValueError(f"loss must be one of {self.parity_losses} for task={self.name}, got {loss!r}."
                             f"{self._loss_advice(loss)}")
        return loss

    def _loss_advice(self, loss: str) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ClassificationTask(Task):
    """Logits and integer labels: cross-entropy for F, accuracies for both."""

    name = "classification"
    parity_losses = ("mse", "kl")
    base_metric = "acc"
    summary_keys = {"acc": "available_acc"}
    parity_monitor = "agreement"
    degraded_key = "degraded_acc"

    def base_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def base_metrics(self) -> dict[str, Metric]:
        return {"acc": TopKAccuracy(top_k=1)}

    def answer(self, output: torch.Tensor) -> dict[str, Any]:
        """The class (top-1) and the logits."""
        logits = output.float().flatten()
        return {"prediction": int(logits.argmax()), "logits": logits.tolist()}

    def hits(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Top-1 equals the label."""
        return outputs.argmax(dim=1) == targets.long()

    def default_answer(self, train_targets: torch.Tensor) -> int:
        """The most frequent training label."""
        return int(torch.bincount(train_targets.cpu()).argmax())

    def parity_metrics(self, output_dim: int, default_answer: Any, fractions: Sequence[float]) -> ParityMetrics:
        return ParityMetrics(num_classes=output_dim, default_class=0 if default_answer is None else default_answer,
                             fractions=tuple(fractions))


class RegressionTask(Task):
    """Boxes ``(x1, y1, x2, y2)``: MSE for F and F_P, IoU hit rates (>= 0.75) and mean IoU for both."""

    name = "regression"
    parity_losses = ("mse",)
    base_metric = "iou"
    summary_keys = {"iou": "available_iou", "miou": "available_miou"}
    parity_monitor = "agreement_iou"
    degraded_key = "degraded_iou"

    def base_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs.float(), targets.float())

    def base_metrics(self) -> dict[str, Metric]:
        return {"iou": IoUHitRate(), "miou": MeanIoU()}

    def answer(self, output: torch.Tensor) -> dict[str, Any]:
        """The output vector itself (a box ``(x1, y1, x2, y2)``)."""
        return {"prediction": output.float().flatten().tolist()}

    def hits(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """IoU with the true box >= 0.75, the threshold of the task's metrics."""
        return box_iou(outputs.float(), targets.float()) >= IOU_THRESHOLD

    def default_answer(self, train_targets: torch.Tensor) -> list[float]:
        """The mean training box."""
        return train_targets.float().mean(dim=0).tolist()

    def parity_metrics(self, output_dim: int, default_answer: Any,
                       fractions: Sequence[float]) -> LocalizationMetrics:
        if output_dim != 4:
            raise ValueError(f"task=regression scores outputs as boxes (x1, y1, x2, y2) by IoU and needs 4 outputs "
                             f"per sample, got {output_dim}. Use a datamodule whose targets are boxes.")
        return LocalizationMetrics(fractions=tuple(fractions), default_box=default_answer)

    def _loss_advice(self, loss: str) -> str:
        if loss == "kl":
            return (" KL compares softmax distributions over classes and means nothing for boxes: "
                    "train regression parity models with parity.loss=mse.")
        return ""


TASKS: dict[str, Task] = {task.name: task for task in (ClassificationTask(), RegressionTask())}


def get_task(task: str | Task) -> Task:
    """The :class:`Task` named ``task`` (a Task passes through)."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; available: {sorted(TASKS)}.")
    return TASKS[task]
