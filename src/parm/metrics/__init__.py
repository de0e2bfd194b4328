"""Accuracy metrics for parity models (PARM.md section 2): torchmetrics Metrics and functional twins.

- A_a, available accuracy: :class:`AvailableAccuracy` / :func:`topk_accuracy` on F's outputs.
- A_d, degraded-mode accuracy: :class:`DegradedAccuracy` / :func:`topk_accuracy` on decoded slots only.
- Reconstruction agreement: :class:`ReconstructionAgreement` / :func:`reconstruction_agreement`.
- Default baseline: :class:`DefaultAnswerAccuracy` / :func:`default_answer_accuracy`.
- A_o(f_u) = (1 - f_u) A_a + f_u A_d: :class:`OverallAccuracy` / :func:`overall_accuracy`.
- :class:`ParityMetrics` bundles them for one stage and returns flat keys for ``stage/key`` logging.
- Boxes (regression): :func:`box_iou`, IoU >= 0.75 hit rates (:class:`IoUHitRate` / :func:`iou_hit_rate`,
  :func:`localization_agreement`), :class:`MeanIoU`, and their bundle :class:`LocalizationMetrics`.
"""

from parm.metrics._validation import DEFAULT_FRACTIONS
from parm.metrics.accuracy import (
    AvailableAccuracy,
    DefaultAnswerAccuracy,
    DegradedAccuracy,
    OverallAccuracy,
    ReconstructionAgreement,
    TopKAccuracy,
)
from parm.metrics.functional import (
    default_answer_accuracy,
    overall_accuracy,
    reconstruction_agreement,
    topk_accuracy,
)
from parm.metrics.parity import ParityMetrics
from parm.metrics.regression import (
    IOU_THRESHOLD,
    IoUHitRate,
    LocalizationMetrics,
    MeanIoU,
    box_iou,
    iou_hit_rate,
    localization_agreement,
)

__all__ = [
    "DEFAULT_FRACTIONS",
    "IOU_THRESHOLD",
    "AvailableAccuracy",
    "DefaultAnswerAccuracy",
    "DegradedAccuracy",
    "IoUHitRate",
    "LocalizationMetrics",
    "MeanIoU",
    "OverallAccuracy",
    "ParityMetrics",
    "ReconstructionAgreement",
    "TopKAccuracy",
    "box_iou",
    "default_answer_accuracy",
    "iou_hit_rate",
    "localization_agreement",
    "overall_accuracy",
    "reconstruction_agreement",
    "topk_accuracy",
]
