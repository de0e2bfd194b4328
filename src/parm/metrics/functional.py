"""Functional twins of the parm metrics: whole tensors in, one number out.

Tie rule (all top-k scores here): a label counts as a hit iff fewer than ``top_k`` *other* classes
score greater than *or equal to* it, and the row holds no NaN. On tie-free scores this is exactly
"label in ``torch.topk(scores, k)``"; on ties it is pessimistic and, unlike ``topk``'s unspecified
tie order, the same on CPU and CUDA. A collapsed model that outputs constant logits scores 0, not
1/C by luck of index order.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from parm.metrics._validation import (
    DEFAULT_FRACTIONS,
    check_accuracy,
    check_class_index,
    check_fractions,
    check_positive_int,
    check_same_shape,
    check_scores,
    check_target,
    check_top_k,
)

__all__ = [
    "default_answer_accuracy",
    "overall_accuracy",
    "reconstruction_agreement",
    "topk_accuracy",
    "topk_hits",
]


def topk_hits(scores: Tensor, labels: Tensor, top_k: int) -> Tensor:
    """Which rows have their label among the top-k scores (see the module's tie rule).

    Args:
        scores: ``(N, C)`` floating logits or probabilities.
        labels: ``(N,)`` integer class indices in ``[0, C)``; not validated here.
        top_k: k >= 1.

    Returns:
        ``(N,)`` bool tensor on the device of ``scores``.
    """
    label_scores = scores.gather(1, labels.long().unsqueeze(1))  # (N, 1)
    rivals = (scores >= label_scores).sum(dim=1) - 1  # the label itself always ties with itself
    return (rivals < top_k) & ~scores.isnan().any(dim=1)


def _fraction(hits: Tensor) -> Tensor:
    """Mean of a bool tensor as float32; NaN for an empty tensor (there is nothing to score)."""
    return hits.sum().float() / hits.numel()


def topk_accuracy(logits: Tensor, target: Tensor, top_k: int = 1) -> Tensor:
    """Top-k accuracy: A_a on F's outputs, or A_d on the reconstructed outputs of erased slots.

    Args:
        logits: ``(N, C)`` floating scores.
        target: ``(N,)`` integer true labels.
        top_k: k >= 1 and <= C.

    Returns:
        0-d float32 tensor in [0, 1] (NaN when N = 0).
    """
    top_k = check_positive_int(top_k, "top_k")
    check_scores(logits, "logits")
    check_top_k(top_k, logits.shape[1])
    check_target(target, logits.shape[0], logits.shape[1])
    return _fraction(topk_hits(logits, target, top_k))


def reconstruction_agreement(reconstructed: Tensor, reference: Tensor, top_k: int = 1) -> Tensor:
    """Share of decoded slots whose F-argmax is among the top-k of the reconstruction.

    With ``top_k=1`` this is argmax agreement between the reconstruction and F's real output.

    Args:
        reconstructed: ``(N, C)`` decoded outputs of the erased slots.
        reference: ``(N, C)`` F's real outputs for the same slots; its argmax (first on ties) is the label.
        top_k: k >= 1 and <= C.

    Returns:
        0-d float32 tensor in [0, 1] (NaN when N = 0).
    """
    top_k = check_positive_int(top_k, "top_k")
    check_scores(reconstructed, "reconstructed")
    check_scores(reference, "reference")
    check_same_shape(reconstructed, reference, "reconstructed", "reference")
    check_top_k(top_k, reconstructed.shape[1])
    return _fraction(topk_hits(reconstructed, reference.argmax(dim=1), top_k))


def default_answer_accuracy(target: Tensor, default_class: int) -> Tensor:
    """Accuracy of answering ``default_class`` for every missing prediction (the no-ParM baseline).

    Args:
        target: ``(N,)`` integer true labels of the missing predictions.
        default_class: the class always answered, usually the most frequent training class.

    Returns:
        0-d float32 tensor in [0, 1] (NaN when N = 0).
    """
    default_class = check_class_index(default_class, "default_class")
    check_target(target, None, None)
    return _fraction(target == default_class)


def overall_accuracy(a_a: float, a_d: float, fractions: Iterable[float] = DEFAULT_FRACTIONS) -> dict[float, float]:
    """A_o(f_u) = (1 - f_u) * A_a + f_u * A_d for each fraction f_u of unavailable predictions.

    Args:
        a_a: available accuracy in [0, 1].
        a_d: degraded-mode accuracy in [0, 1].
        fractions: distinct f_u in [0, 1].

    Returns:
        ``{f_u: A_o(f_u)}`` in the order of ``fractions``.
    """
    a_a = check_accuracy(a_a, "a_a")
    a_d = check_accuracy(a_d, "a_d")
    return {f: (1.0 - f) * a_a + f * a_d for f in check_fractions(fractions)}


def _overall_from_tensors(a_a: Tensor, a_d: Tensor, fractions: tuple[float, ...]) -> dict[float, Tensor]:
    """Tensor form of :func:`overall_accuracy` for already-validated fractions (keeps NaN, no host sync)."""
    return {f: (1.0 - f) * a_a + f * a_d for f in fractions}
