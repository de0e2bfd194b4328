"""Accuracy metrics for parity models (PARM.md section 2): torchmetrics Metrics and functional twins.

- A_a, available accuracy: :class:`AvailableAccuracy` / :func:`topk_accuracy` on F's outputs.
- A_d, degraded-mode accuracy: :class:`DegradedAccuracy` / :func:`topk_accuracy` on decoded slots only.
- Reconstruction agreement: :class:`ReconstructionAgreement` / :func:`reconstruction_agreement`.
- Default baseline: :class:`DefaultAnswerAccuracy` / :func:`default_answer_accuracy`.
- A_o(f_u) = (1 - f_u) A_a + f_u A_d: :class:`OverallAccuracy` / :func:`overall_accuracy`.
- :class:`ParityMetrics` bundles them for one stage and returns flat keys for ``stage/key`` logging.
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

__all__ = [
    "DEFAULT_FRACTIONS",
    "AvailableAccuracy",
    "DefaultAnswerAccuracy",
    "DegradedAccuracy",
    "OverallAccuracy",
    "ParityMetrics",
    "ReconstructionAgreement",
    "TopKAccuracy",
    "default_answer_accuracy",
    "overall_accuracy",
    "reconstruction_agreement",
    "topk_accuracy",
]
