"""Evaluation of a code on a fixed F and test set, outside Lightning (PARM.md section 2).

One protocol, :func:`score_erasures` (erase, decode from what is available, score only the erased
slots), used by ``ParityModule``'s validation and test, by the functions below and by every script, so
that every method is scored on the same F, test samples and coding groups (consecutive runs of k
samples in the order given):

- :func:`evaluate_parity_models`: parm codes (parity models, or F itself for training-free codes such
  as systematic Berrut). Every r-subset of data slots is erased in turn (or a seeded sample of
  ``max_patterns`` of them), parities all available, and only the decoded slots are scored.
- :func:`evaluate_coded_computation`: codes where no query is an original (ApproxIFER): every
  S-subset of the N workers is erased in turn (or a sample) and *all* K estimates are scored.
- :func:`evaluate_default`: the default answer (most frequent training class, or the mean training box)
  for missing predictions.

Scores come from the task's own metrics (:mod:`parm.tasks`, the ones training logs): accuracies for
classification; for boxes (``task="regression"``) the share with IoU >= 0.75 in the accuracy fields,
with mean IoU and the rest in :attr:`MethodResult.metrics`.
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
from parm.tasks import StageMetrics, Task, get_task


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
        available_acc: A_a, F's top-1 on the grouped test samples (boxes: IoU >= 0.75 with the truth).
        degraded_acc: A_d, top-1 of the decoded predictions (every prediction, for ApproxIFER).
        degraded_top5: the same, top-5 (None for the default answer and for boxes).
        agreement: share of decoded predictions whose top-1 equals F's (boxes: IoU >= 0.75 with F's box;
            None for the default answer).
        scored: decoded predictions scored.
        patterns: erasure patterns per group.
        approximates_all: True when every returned prediction is an estimate (its A_o is flat).
        full_acc: for such codes, top-1 when no answer is missing.
        metrics: every value of the task's metrics (mean IoU, MSE to F, ... for boxes).
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
    metrics: dict[str, float] = field(default_factory=dict)

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


class _Scores:
    """The task's stage metrics over the scored predictions, and how many there were."""

    def __init__(self, task: Task, output_dim: int, default_answer: Any = None) -> None:
        self.task = task
        self.metrics: StageMetrics = task.parity_metrics(output_dim, default_answer, DEFAULT_FRACTIONS)
        self.count = 0

    def add_available(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """F's own outputs ``(N, C)`` against the labels (class indices, or boxes ``(N, 4)``)."""
        self.metrics.update_available(outputs, labels)

    def add(self, estimate: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> None:
        """Estimates ``(N, C)`` of predictions whose true labels and F outputs are ``labels``, ``reference``."""
        self.metrics.update_degraded(estimate, reference, labels)
        self.count += labels.shape[0]

    def values(self) -> dict[str, float]:
        return self.metrics.compute()

    def headline(self) -> dict[str, Any]:
        """A_a, A_d, top-5 A_d and agreement under :class:`MethodResult`'s names, plus every value."""
        values, degraded = self.values(), self.task.degraded_key
        return {"available_acc": values[degraded.replace("degraded", "available")],
                "degraded_acc": values[degraded], "degraded_top5": values.get("degraded_top5_acc"),
                "agreement": values[self.task.parity_monitor], "scored": self.count, "metrics": values}


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``(G, k, ...)`` -> ``(G * k, ...)``: labels may be class indices ``(G, k)`` or boxes ``(G, k, 4)``."""
    return t.reshape(-1, *t.shape[2:])


@torch.no_grad()
def score_erasures(metrics: StageMetrics, code: Code, outputs: torch.Tensor, parity_outputs: torch.Tensor,
                   labels: torch.Tensor, patterns: torch.Tensor) -> int:
    """The degraded-mode protocol (PARM.md section 2) on one batch of coding groups.

    Every pattern erases its slots in every group at once; the code decodes from the available outputs
    alone (:meth:`parm.coding.Decoder.forward` zeroes the erased ones), and only the erased slots'
    reconstructions are scored, against the labels (A_d) and against F's own outputs (agreement).
    ``ParityModule``'s validation and test, :func:`evaluate_parity_models` and the benchmarks all score
    through this function.

    Args:
        metrics: the task's stage metrics (:meth:`parm.tasks.Task.parity_metrics`), updated in place.
        code: the encoder/decoder pair.
        outputs: ``(G, k, C)`` F's outputs.
        parity_outputs: ``(G, r, C)`` the parity models' outputs.
        labels: ``(G, k)`` class indices, or ``(G, k, 4)`` boxes.
        patterns: ``(P, k + r)`` bool availability masks, each with at least one data slot erased.

    Returns:
        The number of decoded predictions scored, ``G * (erased data slots summed over patterns)``.
    """
    k, groups, n_patterns = code.spec.k, outputs.shape[0], patterns.shape[0]
    if groups == 0:
        return 0
    if bool(patterns[:, :k].all(dim=1).any()):
        raise ValueError("every erasure pattern must erase at least one data slot: a pattern with all k "
                         "outputs available has nothing to decode. Build them with parm.coding.erasure_patterns.")
    # Pattern-major: row p * G + g is group g under pattern p.
    available = patterns.to(outputs.device).repeat_interleave(groups, dim=0)
    reference = outputs.repeat(n_patterns, 1, 1)
    estimate = code.decode(reference, parity_outputs.repeat(n_patterns, 1, 1), available)
    erased = ~available[:, :k]
    truth = labels.repeat(n_patterns, *([1] * (labels.ndim - 1)))
    metrics.update_degraded(estimate[erased], reference[erased], truth[erased])
    return int(erased.sum())


@torch.no_grad()
def evaluate_decoder(code: Code, outputs: torch.Tensor, parity_outputs: torch.Tensor, labels: torch.Tensor,
                     patterns: torch.Tensor, task: str | Task = "classification") -> tuple[_Scores, int]:
    """Erase each pattern in turn on every group; score the decoded slots (:func:`score_erasures`).

    Args:
        code: the encoder/decoder pair.
        outputs: ``(G, k, C)`` F's outputs.
        parity_outputs: ``(G, r, C)`` the parity models' outputs.
        labels: ``(G, k)`` true labels (or ``(G, k, 4)`` boxes).
        patterns: ``(P, k + r)`` availability masks.
        task: what F predicts (:mod:`parm.tasks`).

    Returns:
        The scores over ``G * (erased slots)`` predictions per pattern (F's own outputs as A_a), and
        the number of patterns.
    """
    scores = _Scores(get_task(task), outputs.shape[-1])
    scores.add_available(_flat(outputs), _flat(labels))
    scores.count += score_erasures(scores.metrics, code, outputs, parity_outputs, labels, patterns)
    return scores, patterns.shape[0]


@torch.no_grad()
def evaluate_parity_models(name: str, base: nn.Module, parity_models: Sequence[nn.Module | Callable[..., Any]],
                           code: Code, x: torch.Tensor, y: torch.Tensor, max_patterns: int | None = 64,
                           seed: int = 0, task: str | Task = "classification") -> MethodResult:
    """A_d of a parm code: F answers the originals, ``parity_models[j]`` answers parity j.

    Args:
        name: the method's name in reports.
        base: F.
        parity_models: r callables; pass ``[base] * r`` for training-free codes (systematic Berrut).
        code: built with :func:`parm.coding.build_code`.
        x: ``(N, *S)`` normalised test inputs, in grouping order.
        y: ``(N,)`` labels (or ``(N, 4)`` boxes).
        max_patterns: cap on erasure patterns (seeded sample beyond it); None for all C(k, r).
        seed: seed of that sample.
        task: what F predicts (:mod:`parm.tasks`).
    """
    k, r = code.spec.k, code.spec.r
    if len(parity_models) != r:
        raise ValueError(f"need one parity model per parity (r={r}), got {len(parity_models)}.")
    code.eval()
    outputs = group(predict(base, x), k)
    labels = group(y, k)
    parities = code.encode(group(x, k))  # (G, r, *P)
    parity_outputs = torch.stack([predict(m, parities[:, j]) for j, m in enumerate(parity_models)], dim=1)
    scores, n_patterns = evaluate_decoder(code, outputs, parity_outputs, labels,
                                          erasure_patterns(code.spec, max_patterns, seed), task)
    return MethodResult(name, k, r, patterns=n_patterns, **scores.headline())


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
                               y: torch.Tensor, max_patterns: int | None = 64, seed: int = 0,
                               task: str | Task = "classification") -> MethodResult:
    """Accuracy of a code that approximates every prediction (ApproxIFER).

    F answers all N coded queries; for each pattern of S lost answers all K outputs are decoded and
    scored (so ``degraded_acc`` is the accuracy of every returned prediction). ``full_acc`` decodes
    with all N answers.
    """
    k, task = code.k, get_task(task)
    outputs = group(predict(base, x), k)
    labels = _flat(group(y, k))
    coded = code.encode(group(x, k))  # (G, N, *S)
    answers = group(predict(base, coded.flatten(0, 1)), code.n)  # (G, N, C)
    scores, full_scores = _Scores(task, outputs.shape[-1]), _Scores(task, outputs.shape[-1])
    for s in (scores, full_scores):
        s.add_available(outputs.flatten(0, 1), labels)
    patterns = straggler_patterns(code.n, code.stragglers, max_patterns, seed)
    for pattern in patterns:
        estimate = code.decode(answers, pattern[None].expand(answers.shape[0], -1))
        scores.add(estimate.flatten(0, 1), labels, outputs.flatten(0, 1))
    full = code.decode(answers, torch.ones(answers.shape[:2], dtype=torch.bool))
    full_scores.add(full.flatten(0, 1), labels, outputs.flatten(0, 1))
    return MethodResult(name, k, code.stragglers, patterns=patterns.shape[0], approximates_all=True,
                        full_acc=full_scores.headline()["degraded_acc"], **scores.headline())


@torch.no_grad()
def evaluate_default(base: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, default_answer: Any,
                     redundancy: int = 1, task: str | Task = "classification") -> MethodResult:
    """The default answer for every missing prediction: a class index (A_d = its share of the labels), or
    for boxes a box (A_d = the share of true boxes it overlaps with IoU >= 0.75)."""
    task = get_task(task)
    outputs = group(predict(base, x), k).flatten(0, 1)
    labels = _flat(group(y, k))
    scores = _Scores(task, outputs.shape[-1], default_answer)
    scores.add_available(outputs, labels)
    scores.add(outputs, labels, outputs)  # what the default-answer metric counts is the labels alone
    values = scores.values()
    default = values[task.degraded_key.replace("degraded", "default")]
    return MethodResult("default", k, redundancy, scores.headline()["available_acc"], default, None, None,
                        labels.shape[0], 1, metrics={"default": default})
