"""parm.metrics against a plain NumPy reference: every Metric (over uneven batches) and its functional twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from parm.metrics import (
    DEFAULT_FRACTIONS,
    AvailableAccuracy,
    DefaultAnswerAccuracy,
    DegradedAccuracy,
    OverallAccuracy,
    ParityMetrics,
    ReconstructionAgreement,
    TopKAccuracy,
    default_answer_accuracy,
    overall_accuracy,
    reconstruction_agreement,
    topk_accuracy,
)

torch.set_num_threads(1)

# (N, C, top_k): single row/class, binary, k == C, many classes.
CASES = [(1, 1, 1), (2, 2, 1), (37, 3, 2), (100, 10, 1), (100, 10, 5), (64, 7, 7), (257, 100, 5)]
CASE_IDS = [f"N{n}-C{c}-k{k}" for n, c, k in CASES]


# ---------------------------------------------------------------- NumPy reference
def np_topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Textbook top-k: the label is among the k highest scores (valid on tie-free rows)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def np_tie_rule_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """parm's documented tie rule: fewer than k other classes score >= the label."""
    label_scores = scores[np.arange(len(labels)), labels][:, None]
    return (scores >= label_scores).sum(axis=1) - 1 < k


def np_mean(hits: np.ndarray) -> float:
    return float(hits.mean())


def np_overall(a_a: float, a_d: float, fractions) -> dict[float, float]:
    return {f: (1 - f) * a_a + f * a_d for f in fractions}


# ---------------------------------------------------------------- data
def make_scores(seed: int, n: int, c: int) -> np.ndarray:
    """Tie-free float32 scores (asserted, so textbook top-k and parm's tie rule coincide)."""
    scores = np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)
    assert np.all(np.diff(np.sort(scores, axis=1), axis=1) > 0)
    return scores


def make_labels(seed: int, n: int, c: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, c, size=n)


def uneven_batches(n: int, seed: int) -> list[slice]:
    """Split range(n) into 4 uneven slices; one may be empty."""
    cuts = np.sort(np.random.default_rng(seed + 2000).integers(0, n + 1, size=3))
    bounds = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


# ---------------------------------------------------------------- agreement with NumPy
@pytest.mark.parametrize(("n", "c", "k"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("cls", [TopKAccuracy, AvailableAccuracy, DegradedAccuracy])
def test_topk_accuracy_matches_numpy(cls: type[TopKAccuracy], n: int, c: int, k: int) -> None:
    scores, labels = make_scores(n * c + k, n, c), make_labels(n * c + k, n, c)
    expected = np_mean(np_topk_hits(scores, labels, k))
    metric = cls(top_k=k)
    for part in uneven_batches(n, n + k):
        metric.update(t(scores[part]), t(labels[part]))
    result = metric.compute()
    assert result.dtype == torch.float32 and result.ndim == 0
    assert result.item() == pytest.approx(expected, abs=1e-6)
    assert topk_accuracy(t(scores), t(labels), top_k=k).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("n", "c", "k"), CASES, ids=CASE_IDS)
def test_reconstruction_agreement_matches_numpy(n: int, c: int, k: int) -> None:
    reference = make_scores(n + c, n, c)
    noise = np.random.default_rng(k).standard_normal((n, c)).astype(np.float32)
    reconstructed = reference + noise  # a noisy decoder, so agreement is neither 0 nor 1
    expected = np_mean(np_topk_hits(reconstructed, reference.argmax(axis=1), k))
    metric = ReconstructionAgreement(top_k=k)
    for part in uneven_batches(n, c):
        metric.update(t(reconstructed[part]), t(reference[part]))
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert reconstruction_agreement(t(reconstructed), t(reference), top_k=k).item() == pytest.approx(expected, abs=1e-6)


def test_reconstruction_agreement_is_one_for_exact_decoding() -> None:
    reference = t(make_scores(3, 50, 10))
    assert reconstruction_agreement(reference * 2.0 + 1.0, reference).item() == 1.0


@pytest.mark.parametrize(("n", "c"), [(1, 1), (40, 3), (501, 10)])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_default_answer_accuracy_matches_numpy(n: int, c: int, dtype: torch.dtype) -> None:
    labels = np.random.default_rng(n).choice(c, size=n, p=np.arange(1, c + 1) / np.arange(1, c + 1).sum())
    default = int(np.bincount(labels, minlength=c).argmax())
    expected = np_mean(labels == default)
    metric = DefaultAnswerAccuracy(default)
    for part in uneven_batches(n, c):
        metric.update(t(labels[part]).to(dtype))
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert default_answer_accuracy(t(labels).to(dtype), default).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("n", "c"), [(1, 1), (60, 4), (300, 10)])
def test_overall_accuracy_metric_matches_numpy(n: int, c: int) -> None:
    avail, avail_y = make_scores(n, n, c), make_labels(n, n, c)
    nd = n // 2 + 1  # fewer decoded slots than available predictions, as with r < k
    degr, degr_y = make_scores(n + 7, nd, c), make_labels(n + 7, nd, c)
    a_a, a_d = np_mean(np_topk_hits(avail, avail_y, 1)), np_mean(np_topk_hits(degr, degr_y, 1))
    fractions = (0.0, 0.01, 0.3, 1.0)
    metric = OverallAccuracy(fractions)
    for pa, pd in zip(uneven_batches(n, 1), uneven_batches(nd, 2), strict=True):
        metric.update(t(avail[pa]), t(avail_y[pa]), t(degr[pd]), t(degr_y[pd]))
    result = metric.compute()
    assert list(result) == list(fractions)
    for f, value in np_overall(a_a, a_d, fractions).items():
        assert result[f].item() == pytest.approx(value, abs=1e-6)
    assert overall_accuracy(a_a, a_d, fractions) == pytest.approx(np_overall(a_a, a_d, fractions))


def test_overall_accuracy_formula() -> None:
    result = overall_accuracy(0.9, 0.5)
    assert list(result) == list(DEFAULT_FRACTIONS)
    assert result[0.1] == pytest.approx(0.86)
    assert result[0.5] == pytest.approx(0.7)
    assert overall_accuracy(0.8, 0.2, [0.0, 1.0]) == pytest.approx({0.0: 0.8, 1.0: 0.2})


@pytest.mark.parametrize(("c", "has_top5"), [(3, False), (5, True), (10, True)])
def test_parity_metrics_keys_and_values(c: int, has_top5: bool) -> None:
    n, default = 90, 1
    avail, y = make_scores(c, n, c), make_labels(c, n, c)
    base = make_scores(c + 1, n, c)
    recon = base + np.random.default_rng(c).standard_normal((n, c)).astype(np.float32)
    metrics = ParityMetrics(num_classes=c, default_class=default, fractions=(0.01, 0.05, 0.1, 0.2, 0.5))
    for part in uneven_batches(n, c):
        metrics.update_available(t(avail[part]), t(y[part]))
        metrics.update_degraded(t(recon[part]), t(base[part]), t(y[part]))
    result = metrics.compute()

    a_a, a_d = np_mean(np_topk_hits(avail, y, 1)), np_mean(np_topk_hits(recon, y, 1))
    expected = {"available_acc": a_a, "degraded_acc": a_d}
    if has_top5:
        expected["degraded_top5_acc"] = np_mean(np_topk_hits(recon, y, 5))
    expected["agreement"] = np_mean(np_topk_hits(recon, base.argmax(axis=1), 1))
    expected["default_acc"] = np_mean(y == default)
    expected.update({f"overall_acc@{f}": v for f, v in np_overall(a_a, a_d, DEFAULT_FRACTIONS).items()})
    assert list(result) == list(expected)
    assert "overall_acc@0.01" in result and "overall_acc@0.5" in result
    assert all(type(v) is float for v in result.values())
    assert result == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- ties and NaN
def test_ties_follow_documented_rule() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 6)).astype(np.float32)  # many ties
    labels = rng.integers(0, 6, size=200)
    for k in (1, 2, 6):
        expected = np_mean(np_tie_rule_hits(scores, labels, k))
        assert topk_accuracy(t(scores), t(labels), top_k=k).item() == pytest.approx(expected, abs=1e-6)


def test_constant_logits_score_zero_not_one_over_c() -> None:
    assert topk_accuracy(torch.zeros(8, 4), torch.zeros(8, dtype=torch.long)).item() == 0.0
    assert topk_accuracy(torch.zeros(8, 4), torch.zeros(8, dtype=torch.long), top_k=4).item() == 1.0


def test_nan_row_is_a_miss() -> None:
    logits = torch.tensor([[5.0, float("nan"), 0.0], [5.0, 1.0, 0.0]])
    assert topk_accuracy(logits, torch.tensor([0, 0])).item() == 0.5


# ---------------------------------------------------------------- invalid input
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: topk_accuracy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)), r"5 entries.*N=4"),
        (lambda: TopKAccuracy().update(torch.randn(4, 3), torch.zeros(3, dtype=torch.long)), r"3 entries.*N=4"),
        (lambda: topk_accuracy(torch.randn(4), torch.zeros(4, dtype=torch.long)), r"shape \(N, C\).*\(4,\)"),
        (lambda: topk_accuracy(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long)), r"shape \(N,\).*\(4, 1\)"),
        (lambda: topk_accuracy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), top_k=4), r"top_k=4.*C=3"),
        (lambda: TopKAccuracy(top_k=5).update(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)), r"top_k=5.*C=3"),
        (lambda: ReconstructionAgreement(top_k=4).update(torch.randn(2, 3), torch.randn(2, 3)), r"top_k=4.*C=3"),
        (lambda: TopKAccuracy(top_k=0), r"top_k must be >= 1"),
        (lambda: topk_accuracy(torch.randn(4, 3), torch.zeros(4)), r"integer tensor.*torch.float32"),
        (lambda: TopKAccuracy().update(torch.randn(4, 3), torch.zeros(4, dtype=torch.bool)), r"integer.*torch.bool"),
        (lambda: DefaultAnswerAccuracy(0).update(torch.zeros(4)), r"integer tensor.*torch.float32"),
        (lambda: topk_accuracy(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long)), r"floating"),
        (lambda: topk_accuracy(torch.randn(2, 3), torch.tensor([0, 3])), r"\[0, 3\).*\[0, 3\]"),
        (lambda: topk_accuracy(torch.randn(2, 3), torch.tensor([-1, 0])), r"\[0, 3\).*\[-1, 0\]"),
        (lambda: reconstruction_agreement(torch.randn(4, 3), torch.randn(4, 2)), r"same shape.*\(4, 3\).*\(4, 2\)"),
        (lambda: ReconstructionAgreement().update(torch.randn(4, 3), torch.randn(5, 3)), r"same shape"),
        (lambda: overall_accuracy(0.9, 0.5, [0.1, 1.5]), r"\[0, 1\].*1\.5"),
        (lambda: overall_accuracy(0.9, 0.5, [-0.1]), r"\[0, 1\].*-0\.1"),
        (lambda: overall_accuracy(0.9, 0.5, [float("nan")]), r"\[0, 1\]"),
        (lambda: overall_accuracy(0.9, 0.5, []), r"at least one"),
        (lambda: overall_accuracy(0.9, 0.5, [0.1, 0.1]), r"distinct"),
        (lambda: overall_accuracy(1.2, 0.5), r"a_a must be an accuracy in \[0, 1\], got 1.2"),
        (lambda: OverallAccuracy(fractions=(0.5, 2.0)), r"\[0, 1\].*2\.0"),
        (lambda: ParityMetrics(10, 0, fractions=(1.01,)), r"\[0, 1\]"),
        (lambda: ParityMetrics(10, 10), r"default_class must be in \[0, 10\)"),
        (lambda: ParityMetrics(10, 0).update_available(torch.randn(4, 9), torch.zeros(4, dtype=torch.long)), "C=9"),
        (lambda: ParityMetrics(10, 0).update_degraded(torch.randn(4, 10), torch.randn(3, 10), torch.zeros(4)), "same"),
        (lambda: ParityMetrics(10, 0).update_degraded(torch.randn(4, 10), torch.randn(4, 10), torch.zeros(4)), "int"),
        (lambda: default_answer_accuracy(torch.zeros(3, dtype=torch.long), -1), r"class index >= 0"),
    ],
)
def test_invalid_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_non_int_constructor_arguments_raise_type_error() -> None:
    with pytest.raises(TypeError, match="top_k must be an int, got float"):
        TopKAccuracy(top_k=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="default_class must be an int class index, got bool"):
        DefaultAnswerAccuracy(True)


# ---------------------------------------------------------------- lifecycle
def test_reset_clears_counts() -> None:
    logits, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    metric = TopKAccuracy()
    metric.update(logits, y)
    assert metric.compute().item() == 0.5
    metric.reset()
    metric.update(logits[:1], y[:1])
    assert metric.compute().item() == 1.0

    parity = ParityMetrics(num_classes=2, default_class=1)
    parity.update_available(logits, y)
    parity.update_degraded(logits, logits, y)
    parity.reset()
    parity.update_available(logits[:1], y[:1])
    parity.update_degraded(logits[1:], logits[1:], torch.tensor([1]))
    result = parity.compute()
    assert (result["available_acc"], result["degraded_acc"], result["default_acc"]) == (1.0, 1.0, 1.0)


def test_inference_mode_in_any_order() -> None:
    logits, y = t(make_scores(5, 30, 4)), t(make_labels(5, 30, 4))
    expected = topk_accuracy(logits, y).item()
    metric, overall = TopKAccuracy(), OverallAccuracy()
    with torch.inference_mode():
        metric.update(logits, y)
        overall.update(logits, y, logits, y)
        metric.reset()
        overall.reset()
    metric.update(logits, y)  # states created under inference_mode must still accept updates outside it
    overall.update(logits, y, logits, y)
    with torch.inference_mode():
        metric.update(logits, y)
        assert metric.compute().item() == pytest.approx(expected)
    assert overall.compute()[0.5].item() == pytest.approx(expected)


def test_forward_returns_batch_value_and_accumulates() -> None:
    logits, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0, 0])
    metric = TopKAccuracy()
    assert metric(logits[:2], y[:2]).item() == 0.5
    assert metric(logits[2:], y[2:]).item() == 1.0
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_states_are_integer_sums_so_ddp_merge_is_exact() -> None:
    """Merging per-rank states (what DDP's sum reduction does) equals one pass over all data."""
    scores, y = t(make_scores(9, 101, 10)), t(make_labels(9, 101, 10))
    rank0, rank1, single = TopKAccuracy(top_k=5), TopKAccuracy(top_k=5), TopKAccuracy(top_k=5)
    rank0.update(scores[:13], y[:13])  # deliberately uneven shards
    rank1.update(scores[13:], y[13:])
    single.update(scores, y)
    assert rank0.correct.dtype == torch.long and rank0.total.dtype == torch.long
    assert rank0._reductions == {"correct": dim_zero_sum, "total": dim_zero_sum}
    rank0.merge_state(rank1)
    assert rank0.compute().item() == single.compute().item()


def test_empty_input_gives_nan() -> None:
    assert torch.isnan(topk_accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    avail, y = t(make_scores(1, 300, 10)), t(make_labels(1, 300, 10))
    base = t(make_scores(2, 300, 10))
    recon = base + 0.5 * t(make_scores(3, 300, 10))
    results = []
    for device in ("cpu", "cuda"):
        metrics = ParityMetrics(num_classes=10, default_class=0).to(device)
        with torch.inference_mode():
            metrics.update_available(avail.to(device), y.to(device))
            metrics.update_degraded(recon.to(device), base.to(device), y.to(device))
        results.append(metrics.compute())
    assert results[0] == results[1]
