"""Argument and tensor checks shared by the Metric classes and their functional twins.

Constructor arguments are checked once; tensors are checked at every ``update`` because that is the
shape boundary where a wrong batch would otherwise become a silent wrong number or an opaque CUDA
index assert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an int >= 1; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return value


def check_class_index(value: object, name: str) -> int:
    """Return ``value`` if it is an int >= 0 (a class index); raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int class index, got {type(value).__name__} {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must be a class index >= 0, got {value}.")
    return value


def check_fractions(fractions: Iterable[float]) -> tuple[float, ...]:
    """Validate the unavailable fractions f_u: a non-empty list of distinct numbers in [0, 1]."""
    values = tuple(float(f) for f in fractions)
    if not values:
        raise ValueError(f"fractions must list at least one f_u in [0, 1], got an empty list. Try {DEFAULT_FRACTIONS}.")
    bad = [f for f in values if not (0.0 <= f <= 1.0)]  # also rejects NaN
    if bad:
        raise ValueError(f"every f_u must be in [0, 1] (a share of unavailable predictions), got {bad} in {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"fractions must be distinct (they key the result), got {values}.")
    return values


def check_accuracy(value: float, name: str) -> float:
    """Validate an accuracy given as a plain number in [0, 1]."""
    value = float(value)
    if math.isnan(value) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be an accuracy in [0, 1], got {value}.")
    return value


def check_scores(scores: Tensor, name: str) -> None:
    """Scores (logits or probabilities) must be a floating ``(N, C)`` tensor with C >= 1."""
    if not isinstance(scores, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C), got {type(scores).__name__}.")
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, C) with C >= 1, got shape {tuple(scores.shape)}.")
    if not scores.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor (logits or probabilities), got dtype {scores.dtype}.")


def check_target(target: Tensor, n: int | None, num_classes: int | None, name: str = "target") -> None:
    """Target must be an integer ``(N,)`` tensor of class indices in ``[0, num_classes)``.

    Args:
        target: ``(N,)`` class indices.
        n: the expected N (rows of the matching scores), or None to skip the check.
        num_classes: the expected C, or None to skip the range check.
        name: how to call the tensor in the error message.
    """
    if not isinstance(target, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N,), got {type(target).__name__}.")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"{name} must be an integer tensor of class indices, got dtype {target.dtype}. "
            f"Pass labels, not one-hot or probabilities (e.g. target.long())."
        )
    if target.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {tuple(target.shape)}.")
    if n is not None and target.shape[0] != n:
        raise ValueError(f"{name} has {target.shape[0]} entries but the scores have N={n} rows; they must match.")
    if num_classes is not None and target.numel() > 0:
        # One host sync per batch; cheap next to a forward pass, and it turns a CUDA device-side
        # assert inside gather into a readable error.
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"{name} must hold class indices in [0, {num_classes}), got values in [{low}, {high}].")


def check_top_k(top_k: int, num_classes: int) -> None:
    """top_k may not exceed the number of classes C (every answer would trivially be correct)."""
    if top_k > num_classes:
        raise ValueError(f"top_k={top_k} is larger than the number of classes C={num_classes}; use top_k <= C.")


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Two score tensors that are compared row by row must have the same ``(N, C)``."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (N, C), got {tuple(a.shape)} and {tuple(b.shape)}."
        )
