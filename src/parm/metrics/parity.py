"""ParityMetrics: every accuracy of one evaluation stage behind two update calls and one flat dict."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from torch import Tensor, nn
from torchmetrics import Metric

from parm.metrics._validation import (
    DEFAULT_FRACTIONS,
    check_class_index,
    check_fractions,
    check_positive_int,
    check_same_shape,
    check_scores,
)
from parm.metrics.accuracy import (
    AvailableAccuracy,
    DefaultAnswerAccuracy,
    DegradedAccuracy,
    ReconstructionAgreement,
)
from parm.metrics.functional import _overall_from_tensors

__all__ = ["ParityMetrics"]


def degraded_key(k: int) -> str:
    """The result key for degraded-mode top-k accuracy: ``degraded_acc`` for k=1, else ``degraded_top{k}_acc``."""
    return "degraded_acc" if k == 1 else f"degraded_top{k}_acc"


class ParityMetrics(nn.Module):
    """A_a, A_d (top-1 and top-k), reconstruction agreement, default baseline and the A_o curve.

    An ``nn.Module`` rather than a ``MetricCollection`` because the two modes see different tensors.
    Hold one per stage (``val``, ``test``) in the LightningModule so ``.to(device)`` moves it; log
    ``compute()`` as ``f"{stage}/{key}"``. A_o uses top-1 A_a and A_d.

    Args:
        num_classes: C, checked against every batch.
        default_class: class answered by the default baseline (the most frequent training class).
        fractions: distinct f_u in [0, 1] for ``overall_acc@{f_u}``.
        top_k: degraded-mode ks to report; top-1 is always reported and ks above C are skipped
            (so no ``degraded_top5_acc`` when C < 5).
    """

    def __init__(
        self,
        num_classes: int,
        default_class: int,
        fractions: Iterable[float] = DEFAULT_FRACTIONS,
        top_k: Iterable[int] = (1, 5),
    ) -> None:
        super().__init__()
        self.num_classes = check_positive_int(num_classes, "num_classes")
        default_class = check_class_index(default_class, "default_class")
        if default_class >= num_classes:
            raise ValueError(
                f"default_class must be in [0, {num_classes}) for num_classes={num_classes}, got {default_class}."
            )
        self.fractions = check_fractions(fractions)
        ks = sorted({1, *(check_positive_int(k, "top_k entry") for k in top_k)})
        self.available = AvailableAccuracy(top_k=1)
        self.degraded = nn.ModuleDict({degraded_key(k): DegradedAccuracy(top_k=k) for k in ks if k <= num_classes})
        self.agreement = ReconstructionAgreement(top_k=1)
        self.default = DefaultAnswerAccuracy(default_class)

    def _degraded_metrics(self) -> list[tuple[str, DegradedAccuracy]]:
        return [(key, cast(DegradedAccuracy, metric)) for key, metric in self.degraded.items()]

    def _check_classes(self, scores: Tensor, name: str) -> None:
        check_scores(scores, name)
        if scores.shape[1] != self.num_classes:
            raise ValueError(
                f"{name} has C={scores.shape[1]} classes but ParityMetrics was built with "
                f"num_classes={self.num_classes}; got shape {tuple(scores.shape)}."
            )

    def update_available(self, logits: Tensor, target: Tensor) -> None:
        """Add F's outputs: ``logits`` ``(N, C)``, ``target`` ``(N,)`` integer labels."""
        self._check_classes(logits, "logits")
        self.available.update(logits, target)

    def update_degraded(self, recon_logits: Tensor, base_logits: Tensor, target: Tensor) -> None:
        """Add decoded slots only.

        Args:
            recon_logits: ``(N, C)`` reconstructed outputs of erased slots.
            base_logits: ``(N, C)`` F's real outputs for the same slots (for agreement).
            target: ``(N,)`` true labels of those slots.
        """
        self._check_classes(recon_logits, "recon_logits")
        self._check_classes(base_logits, "base_logits")
        check_same_shape(recon_logits, base_logits, "recon_logits", "base_logits")
        for _, metric in self._degraded_metrics():
            metric.update(recon_logits, target)
        self.agreement.update(recon_logits, base_logits)
        self.default.update(target)

    def compute(self) -> dict[str, float]:
        """Flat results: ``available_acc``, ``degraded_acc``, ``degraded_top{k}_acc``, ``agreement``,
        ``default_acc``, ``overall_acc@{f_u}``. A value is NaN when its mode saw no rows."""
        a_a = self.available.compute()
        degraded = {key: metric.compute() for key, metric in self._degraded_metrics()}
        a_d = degraded[degraded_key(1)]
        results = {"available_acc": a_a, **degraded}
        results["agreement"] = self.agreement.compute()
        results["default_acc"] = self.default.compute()
        results.update({f"overall_acc@{f}": v for f, v in _overall_from_tensors(a_a, a_d, self.fractions).items()})
        return {key: float(value) for key, value in results.items()}

    def reset(self) -> None:
        """Clear every count (call at the end of each epoch)."""
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()
