"""Metrics for regression / localization outputs: F predicts boxes ``(x1, y1, x2, y2)``.

The analogue of PARM.md section 2 for boxes, with "correct" meaning IoU >= a threshold (0.75):

- available hit rate: F's boxes against the ground truth;
- degraded hit rate: reconstructed boxes of erased slots against the ground truth;
- localization agreement: reconstructed boxes against F's own boxes for those slots;
- overall hit rate ``(1 - f_u) * available + f_u * degraded`` per f_u;
- mean IoU and the MSE of the reconstructions (the training loss).

States are integer counts or float sums reduced with ``sum``, so results are exact under DDP.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from parm.metrics._validation import DEFAULT_FRACTIONS, check_fractions, check_same_shape

__all__ = [
    "IOU_THRESHOLD",
    "IoUHitRate",
    "LocalizationMetrics",
    "MeanIoU",
    "box_iou",
    "iou_hit_rate",
    "localization_agreement",
]

IOU_THRESHOLD = 0.75


def check_boxes(boxes: Tensor, name: str) -> None:
    """Boxes must be a floating ``(N, 4)`` tensor ``(x1, y1, x2, y2)``."""
    if not isinstance(boxes, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}.")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as (x1, y1, x2, y2), got shape {tuple(boxes.shape)}.")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {boxes.dtype}.")


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {threshold}.")
    return threshold


def box_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Row-wise IoU of two ``(N, 4)`` box tensors ``(x1, y1, x2, y2)``.

    Corners are sorted first, so a box given as ``(x2, y2, x1, y1)`` is the same box. Boxes of zero
    union (two points) score 0; a row with NaN scores 0.

    Returns:
        ``(N,)`` IoU in [0, 1], float32 or the inputs' dtype if wider.
    """
    check_boxes(pred, "pred")
    check_boxes(target, "target")
    check_same_shape(pred, target, "pred", "target")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    p, t = pred.to(dtype), target.to(dtype)
    p_lo, p_hi = torch.minimum(p[:, :2], p[:, 2:]), torch.maximum(p[:, :2], p[:, 2:])
    t_lo, t_hi = torch.minimum(t[:, :2], t[:, 2:]), torch.maximum(t[:, :2], t[:, 2:])
    inter = (torch.minimum(p_hi, t_hi) - torch.maximum(p_lo, t_lo)).clamp_min(0).prod(dim=1)
    union = (p_hi - p_lo).prod(dim=1) + (t_hi - t_lo).prod(dim=1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(union))
    return torch.nan_to_num(iou, nan=0.0)


def iou_hit_rate(pred: Tensor, target: Tensor, threshold: float = IOU_THRESHOLD) -> Tensor:
    """Share of rows with IoU(pred, target) >= threshold (0-d float32; NaN for N = 0)."""
    hits = box_iou(pred, target) >= _check_threshold(threshold)
    return hits.sum().float() / hits.numel()


def localization_agreement(reconstructed: Tensor, reference: Tensor, threshold: float = IOU_THRESHOLD) -> Tensor:
    """Share of decoded boxes within IoU ``threshold`` of F's own box for the same query."""
    return iou_hit_rate(reconstructed, reference, threshold)


class IoUHitRate(Metric):
    """Share of ``(N, 4)`` boxes with IoU >= ``threshold`` against a reference (ground truth or F).

    Args:
        threshold: IoU threshold in (0, 1].
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    hits: Tensor
    total: Tensor

    def __init__(self, threshold: float = IOU_THRESHOLD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = _check_threshold(threshold)
        self.add_state("hits", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of ``(N, 4)`` boxes and their references."""
        hits = box_iou(pred, target) >= self.threshold
        self.hits = self.hits + hits.sum()
        self.total = self.total + hits.numel()

    def compute(self) -> Tensor:
        """0-d float32 in [0, 1]; NaN before any row was seen."""
        return self.hits.float() / self.total


class MeanIoU(Metric):
    """Mean row-wise IoU of ``(N, 4)`` boxes against a reference."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    iou_sum: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        iou = box_iou(pred, target)
        self.iou_sum = self.iou_sum + iou.double().sum()
        self.total = self.total + iou.numel()

    def compute(self) -> Tensor:
        return (self.iou_sum / self.total).float()


class _SquaredError(Metric):
    """Mean squared error over all coordinates (the parity training loss, on decoded slots)."""

    full_state_update = False
    sq_sum: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sq_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.sq_sum = self.sq_sum + (pred.double() - target.double()).square().sum()
        self.total = self.total + pred.numel()

    def compute(self) -> Tensor:
        return (self.sq_sum / self.total).float()


class LocalizationMetrics(nn.Module):
    """Every localization score of one stage behind two update calls: the box twin of ParityMetrics.

    Args:
        threshold: IoU threshold of a "correct" box (0.75).
        fractions: f_u values of ``overall_iou@{f_u}``.
        default_box: the default-answer baseline's box ``(x1, y1, x2, y2)`` for a missing prediction
            (e.g. the mean training box); adds ``default_iou`` when given.
    """

    def __init__(self, threshold: float = IOU_THRESHOLD, fractions: Iterable[float] = DEFAULT_FRACTIONS,
                 default_box: Sequence[float] | None = None) -> None:
        super().__init__()
        self.fractions = check_fractions(fractions)
        if default_box is not None and len(default_box) != 4:
            raise ValueError(f"default_box must be (x1, y1, x2, y2), got {default_box!r}.")
        self.default_box = None if default_box is None else torch.tensor([float(v) for v in default_box])
        self.default = IoUHitRate(threshold)
        self.available = IoUHitRate(threshold)
        self.degraded = IoUHitRate(threshold)
        self.agreement = IoUHitRate(threshold)
        self.available_miou = MeanIoU()
        self.degraded_miou = MeanIoU()
        self.degraded_mse = _SquaredError()

    def update_available(self, boxes: Tensor, target: Tensor) -> None:
        """F's boxes ``(N, 4)`` against the ground truth ``(N, 4)``."""
        self.available.update(boxes, target)
        self.available_miou.update(boxes, target)

    def update_degraded(self, recon: Tensor, base: Tensor, target: Tensor) -> None:
        """Decoded slots only: reconstructed boxes, F's boxes for them, and the ground truth, each ``(N, 4)``."""
        check_same_shape(recon, base, "recon", "base")
        self.degraded.update(recon, target)
        self.degraded_miou.update(recon, target)
        self.agreement.update(recon, base)
        self.degraded_mse.update(recon, base)
        if self.default_box is not None:
            self.default.update(self.default_box.to(target).expand_as(target), target)

    def compute(self) -> dict[str, float]:
        """``available_iou``, ``degraded_iou``, ``agreement_iou`` (hit rates), ``available_miou``,
        ``degraded_miou``, ``degraded_mse`` (against F), ``default_iou`` (with a default box) and
        ``overall_iou@{f_u}``."""
        a_a, a_d = self.available.compute(), self.degraded.compute()
        results = {"available_iou": a_a, "degraded_iou": a_d, "agreement_iou": self.agreement.compute(),
                   "available_miou": self.available_miou.compute(), "degraded_miou": self.degraded_miou.compute(),
                   "degraded_mse": self.degraded_mse.compute()}
        if self.default_box is not None:
            results["default_iou"] = self.default.compute()
        results.update({f"overall_iou@{f}": (1.0 - f) * a_a + f * a_d for f in self.fractions})
        return {key: float(value) for key, value in results.items()}

    def reset(self) -> None:
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()
