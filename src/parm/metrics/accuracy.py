"""torchmetrics Metrics for parity models: A_a, A_d, reconstruction agreement, default baseline, A_o.

Every state is an integer count reduced with ``sum``, so the metrics are exact under DDP (no
averaging of per-rank means over uneven shards). States are replaced, never updated in place, so a
metric may be updated inside ``torch.inference_mode`` and outside it in any order. Scoring follows
the tie rule of :mod:`parm.metrics.functional`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from parm.metrics._validation import (
    DEFAULT_FRACTIONS,
    check_class_index,
    check_fractions,
    check_positive_int,
    check_same_shape,
    check_scores,
    check_target,
    check_top_k,
)
from parm.metrics.functional import _overall_from_tensors, topk_hits

__all__ = [
    "AvailableAccuracy",
    "DefaultAnswerAccuracy",
    "DegradedAccuracy",
    "OverallAccuracy",
    "ReconstructionAgreement",
    "TopKAccuracy",
]


def _count_state(metric: Metric, name: str) -> None:
    metric.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")


class _HitRate(Metric):
    """Share of rows that are hits: integer ``correct`` and ``total`` summed over batches and ranks."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    correct: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _count_state(self, "correct")
        _count_state(self, "total")

    def _accumulate(self, hits: Tensor) -> None:
        self.correct = self.correct + hits.sum()
        self.total = self.total + hits.numel()

    def compute(self) -> Tensor:
        """0-d float32 tensor in [0, 1]; NaN before any row was seen."""
        return self.correct.float() / self.total


class TopKAccuracy(_HitRate):
    """Top-k accuracy of ``(N, C)`` scores against ``(N,)`` integer labels.

    Args:
        top_k: k >= 1; checked against C at every ``update``.
        **kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).
    """

    def __init__(self, top_k: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.top_k = check_positive_int(top_k, "top_k")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch: ``logits`` ``(N, C)`` floating, ``target`` ``(N,)`` integer in ``[0, C)``."""
        check_scores(logits, "logits")
        check_top_k(self.top_k, logits.shape[1])
        check_target(target, logits.shape[0], logits.shape[1])
        self._accumulate(topk_hits(logits, target, self.top_k))


class AvailableAccuracy(TopKAccuracy):
    """A_a: top-k accuracy of F's own outputs on the test set."""


class DegradedAccuracy(TopKAccuracy):
    """A_d: top-k accuracy of the reconstructed outputs of erased slots (pass only decoded slots)."""


class ReconstructionAgreement(_HitRate):
    """Share of decoded slots whose F-argmax is among the top-k of the reconstruction.

    Args:
        top_k: k >= 1; the default 1 is plain argmax agreement.
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    def __init__(self, top_k: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.top_k = check_positive_int(top_k, "top_k")

    def update(self, reconstructed: Tensor, reference: Tensor) -> None:
        """Add a batch: both ``(N, C)``, the decoded outputs and F's real outputs for the same slots."""
        check_scores(reconstructed, "reconstructed")
        check_scores(reference, "reference")
        check_same_shape(reconstructed, reference, "reconstructed", "reference")
        check_top_k(self.top_k, reconstructed.shape[1])
        self._accumulate(topk_hits(reconstructed, reference.argmax(dim=1), self.top_k))


class DefaultAnswerAccuracy(_HitRate):
    """Baseline without ParM: answer ``default_class`` (the most frequent training class) when missing.

    Args:
        default_class: the class index always answered.
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    def __init__(self, default_class: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_class = check_class_index(default_class, "default_class")

    def update(self, target: Tensor) -> None:
        """Add a batch of ``(N,)`` integer true labels of the missing predictions."""
        check_target(target, None, None)
        self._accumulate(target == self.default_class)


class OverallAccuracy(Metric):
    """A_o(f_u) = (1 - f_u) * A_a + f_u * A_d, from top-1 counts of both modes.

    Args:
        fractions: distinct f_u in [0, 1], the shares of unavailable predictions to report.
        **kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    available_correct: Tensor
    available_total: Tensor
    degraded_correct: Tensor
    degraded_total: Tensor

    def __init__(self, fractions: Iterable[float] = DEFAULT_FRACTIONS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fractions = check_fractions(fractions)
        for mode in ("available", "degraded"):
            _count_state(self, f"{mode}_correct")
            _count_state(self, f"{mode}_total")

    def update(
        self, available_logits: Tensor, available_target: Tensor, degraded_logits: Tensor, degraded_target: Tensor
    ) -> None:
        """Add a batch of each mode; either may have N = 0.

        Args:
            available_logits: ``(N_a, C)`` F's outputs.
            available_target: ``(N_a,)`` their labels.
            degraded_logits: ``(N_d, C)`` reconstructed outputs of erased slots.
            degraded_target: ``(N_d,)`` their labels.
        """
        for mode, logits, target in (
            ("available", available_logits, available_target),
            ("degraded", degraded_logits, degraded_target),
        ):
            check_scores(logits, f"{mode}_logits")
            check_target(target, logits.shape[0], logits.shape[1], f"{mode}_target")
            hits = topk_hits(logits, target, 1)
            setattr(self, f"{mode}_correct", getattr(self, f"{mode}_correct") + hits.sum())
            setattr(self, f"{mode}_total", getattr(self, f"{mode}_total") + hits.numel())

    def compute(self) -> dict[float, Tensor]:
        """``{f_u: A_o(f_u)}`` as 0-d float32 tensors; NaN while a mode has no rows."""
        a_a = self.available_correct.float() / self.available_total
        a_d = self.degraded_correct.float() / self.degraded_total
        return _overall_from_tensors(a_a, a_d, self.fractions)
