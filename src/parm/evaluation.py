"""Evaluation of a code on a fixed F and test set, outside Lightning (PARM.md section 2).

Used by ``scripts/compare_codes.py`` so that every method is scored on the same F, test samples and
coding groups (consecutive runs of k samples in the order given):

- :func:`evaluate_parity_models`: parm codes (parity models, or F itself for training-free codes such
  as systematic Berrut). Every r-subset of data slots is erased in turn (or a seeded sample of
  ``max_patterns`` of them), parities all available, and only the decoded slots are scored.
- :func:`evaluate_coded_computation`: codes where no query is an original (ApproxIFER): every
  S-subset of the N workers is erased in turn (or a sample) and *all* K estimates are scored.
- :func:`evaluate_default`: the default answer (most frequent training class) for missing predictions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from parm.coding import Code, erasure_patterns
from parm.metrics import DEFAULT_FRACTIONS
from parm.metrics.functional import topk_hits


class CodedComputation(Protocol):
    """A code whose N coded queries replace the K originals (e.g. ``parm_berrut.ApproxIFERCode``)."""

    k: int
    n: int
    stragglers: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, *S)`` -> ``(B, N, *S)``."""

    def decode(self, answers: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` answers and ``(B, N)`` mask -> ``(B, K, C)`` estimates of every output."""


@dataclass
class MethodResult:
    """Scores of one method at one k.

    Attributes:
        available_acc: A_a, F's top-1 on the grouped test samples.
        degraded_acc: A_d, top-1 of the decoded predictions (every prediction, for ApproxIFER).
        degraded_top5: the same, top-5 (None for the default answer).
        agreement: share of decoded predictions whose top-1 equals F's (None for the default answer).
        scored: decoded predictions scored.
        patterns: erasure patterns per group.
        approximates_all: True when every returned prediction is an estimate (its A_o is flat).
        full_acc: for such codes, top-1 when no answer is missing.
    """

    method: str
    k: int
    redundancy: int
    available_acc: float
    degraded_acc: float
    degraded_top5: float | None
    agreement: float | None
    scored: int
    patterns: int
    approximates_all: bool = False
    full_acc: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def overall(self, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[float, float]:
        """A_o(f_u) = (1 - f_u) A_a + f_u A_d; flat at A_d when every prediction is approximated."""
        if self.approximates_all:
            return {float(f): self.degraded_acc for f in fractions}
        return {float(f): (1.0 - f) * self.available_acc + f * self.degraded_acc for f in fractions}

    def as_dict(self, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, Any]:
        return {**asdict(self), "overall": {str(f): v for f, v in self.overall(fractions).items()}}


@torch.no_grad()
def predict(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
            batch_size: int = 4096) -> torch.Tensor:
    """``(N, *S)`` -> ``(N, C)`` float32 outputs of ``model`` (put in eval mode), in batches."""
    if isinstance(model, nn.Module):
        model.eval()
    return torch.cat([model(x[i : i + batch_size]).float() for i in range(0, x.shape[0], batch_size)])


def group(t: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, ...)`` -> ``(N // k, k, ...)``, dropping the trailing samples that fill no group."""
    groups = t.shape[0] // k
    if groups == 0:
        raise ValueError(f"{t.shape[0]} samples fill no coding group of k={k}; pass at least k samples.")
    return t[: groups * k].reshape(groups, k, *t.shape[1:])


class _Tally:
    """Counts of top-1 / top-5 hits against the label and top-1 agreement with F."""

    def __init__(self) -> None:
        self.top1 = self.top5 = self.agree = self.count = 0

    def add(self, estimate: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> None:
        top5 = min(5, estimate.shape[1])
        self.top1 += int(topk_hits(estimate, labels, 1).sum())
        self.top5 += int(topk_hits(estimate, labels, top5).sum())
        self.agree += int(topk_hits(estimate, reference.argmax(dim=1), 1).sum())
        self.count += labels.numel()

    def rates(self) -> tuple[float, float, float]:
        n = max(self.count, 1)
        return self.top1 / n, self.top5 / n, self.agree / n


def _available_acc(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    return float(topk_hits(outputs, labels, 1).float().mean())


@torch.no_grad()
def evaluate_decoder(code: Code, outputs: torch.Tensor, parity_outputs: torch.Tensor, labels: torch.Tensor,
                     patterns: torch.Tensor) -> tuple[_Tally, int]:
    """Erase each pattern in turn on every group; score the decoded slots.

    Args:
        code: the encoder/decoder pair.
        outputs: ``(G, k, C)`` F's outputs.
        parity_outputs: ``(G, r, C)`` the parity models' outputs.
        labels: ``(G, k)`` true labels.
        patterns: ``(P, k + r)`` availability masks.

    Returns:
        The tally over ``G * (erased slots)`` predictions per pattern, and the number of patterns.
    """
    tally, k = _Tally(), code.spec.k
    for pattern in patterns:
        available = pattern[None].expand(outputs.shape[0], -1)
        estimate = code.decode(outputs, parity_outputs, available)
        erased = ~pattern[:k]
        tally.add(estimate[:, erased].reshape(-1, outputs.shape[-1]), labels[:, erased].reshape(-1),
                  outputs[:, erased].reshape(-1, outputs.shape[-1]))
    return tally, patterns.shape[0]


@torch.no_grad()
def evaluate_parity_models(name: str, base: nn.Module, parity_models: Sequence[nn.Module | Callable[..., Any]],
                           code: Code, x: torch.Tensor, y: torch.Tensor, max_patterns: int | None = 64,
                           seed: int = 0) -> MethodResult:
    """A_d of a parm code: F answers the originals, ``parity_models[j]`` answers parity j.

    Args:
        name: the method's name in reports.
        base: F.
        parity_models: r callables; pass ``[base] * r`` for training-free codes (systematic Berrut).
        code: built with :func:`parm.coding.build_code`.
        x: ``(N, *S)`` normalised test inputs, in grouping order.
        y: ``(N,)`` labels.
        max_patterns: cap on erasure patterns (seeded sample beyond it); None for all C(k, r).
        seed: seed of that sample.
    """
    k, r = code.spec.k, code.spec.r
    if len(parity_models) != r:
        raise ValueError(f"need one parity model per parity (r={r}), got {len(parity_models)}.")
    code.eval()
    outputs = group(predict(base, x), k)
    labels = group(y, k)
    parities = code.encode(group(x, k))  # (G, r, *P)
    parity_outputs = torch.stack([predict(m, parities[:, j]) for j, m in enumerate(parity_models)], dim=1)
    tally, n_patterns = evaluate_decoder(code, outputs, parity_outputs, labels,
                                         erasure_patterns(code.spec, max_patterns, seed))
    top1, top5, agree = tally.rates()
    return MethodResult(name, k, r, _available_acc(outputs.flatten(0, 1), labels.flatten()), top1, top5, agree,
                        tally.count, n_patterns)


def straggler_patterns(n: int, stragglers: int, max_patterns: int | None = 64, seed: int = 0) -> torch.Tensor:
    """Every way to lose ``stragglers`` of ``n`` answers, or a seeded sample: ``(P, n)`` bool masks."""
    total = math.comb(n, stragglers)
    combos = list(itertools.combinations(range(n), stragglers))
    if max_patterns is not None and total > max_patterns:
        picks = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:max_patterns].sort().values
        combos = [combos[int(i)] for i in picks]
    masks = torch.ones(len(combos), n, dtype=torch.bool)
    for row, lost in enumerate(combos):
        masks[row, list(lost)] = False
    return masks


@torch.no_grad()
def evaluate_coded_computation(name: str, base: nn.Module, code: CodedComputation, x: torch.Tensor,
                               y: torch.Tensor, max_patterns: int | None = 64, seed: int = 0) -> MethodResult:
    """Accuracy of a code that approximates every prediction (ApproxIFER).

    F answers all N coded queries; for each pattern of S lost answers all K outputs are decoded and
    scored (so ``degraded_acc`` is the accuracy of every returned prediction). ``full_acc`` decodes
    with all N answers.
    """
    k = code.k
    outputs = group(predict(base, x), k)
    labels = group(y, k)
    coded = code.encode(group(x, k))  # (G, N, *S)
    answers = group(predict(base, coded.flatten(0, 1)), code.n)  # (G, N, C)
    tally = _Tally()
    patterns = straggler_patterns(code.n, code.stragglers, max_patterns, seed)
    for pattern in patterns:
        estimate = code.decode(answers, pattern[None].expand(answers.shape[0], -1))
        tally.add(estimate.flatten(0, 1), labels.flatten(), outputs.flatten(0, 1))
    full = code.decode(answers, torch.ones(answers.shape[:2], dtype=torch.bool))
    top1, top5, agree = tally.rates()
    return MethodResult(name, k, code.stragglers, _available_acc(outputs.flatten(0, 1), labels.flatten()), top1,
                        top5, agree, tally.count, patterns.shape[0], approximates_all=True,
                        full_acc=_available_acc(full.flatten(0, 1), labels.flatten()))


@torch.no_grad()
def evaluate_default(base: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, default_class: int,
                     redundancy: int = 1) -> MethodResult:
    """The default answer: every missing prediction is ``default_class`` (A_d = its share of labels)."""
    outputs = group(predict(base, x), k).flatten(0, 1)
    labels = group(y, k).flatten()
    a_d = float((labels == default_class).float().mean())
    return MethodResult("default", k, redundancy, _available_acc(outputs, labels), a_d, None, None,
                        labels.numel(), 1)
