"""One degraded-mode protocol: only erased slots are decoded and scored, in ParityModule and in scripts.

Every exactness test elsewhere uses an exact decoder, where scoring an available slot by mistake gives
the same number. Here the parity model answers garbage: the decoded slots are wrong, the available ones
right, so a protocol that scored any available slot would report A_d above chance.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from parm.coding import CodeSpec, build_code, erasure_patterns
from parm.evaluation import evaluate_parity_models, score_erasures
from parm.lit import ParityModule
from parm.tasks import get_task

CLASSES = 3


class Garbage(nn.Module):
    """A parity model that answers ``value`` on every output (NaN, or a huge score for class 0)."""

    def __init__(self, value: float, spike_class: int | None = None) -> None:
        super().__init__()
        self.value, self.spike_class = value, spike_class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spike_class is None:
            return torch.full((x.shape[0], CLASSES), self.value)
        out = torch.zeros(x.shape[0], CLASSES)
        out[:, self.spike_class] = self.value
        return out


def _data(k: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """F = identity on one-hot inputs: A_a is exactly 1; labels balanced over three classes."""
    y = torch.arange(12 * k) % CLASSES
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(k))]
    base = nn.Identity()
    return base, nn.functional.one_hot(y, CLASSES).float() * 5, y


def _module_scores(base: nn.Module, parity: nn.Module, code: object, x: torch.Tensor,
                   y: torch.Tensor) -> dict[str, float]:
    module = ParityModule(base, [parity], code, optimizer=functools.partial(torch.optim.Adam))  # type: ignore[arg-type]
    for start in range(0, len(x), 8):  # several test batches, as Lightning feeds them
        module.test_step((x[start:start + 8], y[start:start + 8], torch.arange(start, start + 8)), 0)
    return module.test_metrics.compute()


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("garbage,expected", [(Garbage(float("nan")), 0.0),
                                              (Garbage(1e6, spike_class=0), 1 / CLASSES)])
def test_garbage_parity_gives_chance_a_d_and_unchanged_a_a(k: int, garbage: Garbage, expected: float) -> None:
    base, x, y = _data(k)
    code = build_code("sum", "subtraction", CodeSpec(k, 1), (CLASSES,), (CLASSES,))
    exact = evaluate_parity_models("exact", base, [base], code, x, y)  # F linear: F_P = F decodes exactly
    assert (exact.available_acc, exact.degraded_acc) == (1.0, 1.0)
    result = evaluate_parity_models("garbage", base, [garbage], code, x, y)
    assert result.available_acc == 1.0, "A_a is F's alone"
    assert result.degraded_acc == pytest.approx(expected), "an available slot was scored as decoded"
    assert result.scored == len(y), "each slot of each group erased once (k patterns of one slot)"
    module = _module_scores(base, garbage, code, x, y)
    assert module["available_acc"] == 1.0
    assert module["degraded_acc"] == pytest.approx(expected), "ParityModule scores by the same protocol"
    assert module["degraded_acc"] == pytest.approx(result.degraded_acc)


def test_module_and_scripts_agree_on_a_trained_looking_model() -> None:
    """A noisy (not exact, not garbage) parity model: ParityModule's test A_d/agreement equal parm.evaluation's."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 4, (40,))
    base, parity = nn.Linear(6, 4), nn.Linear(6, 4)
    code = build_code("sum", "subtraction", CodeSpec(4, 1), (6,), (4,))
    module = ParityModule(base, [parity], code, optimizer=functools.partial(torch.optim.Adam))
    module.test_step((x, y, torch.arange(40)), 0)
    ours = module.test_metrics.compute()
    script = evaluate_parity_models("m", base, [parity], code, x, y)
    for key, value in (("available_acc", script.available_acc), ("degraded_acc", script.degraded_acc),
                       ("agreement", script.agreement)):
        assert float(ours[key]) == pytest.approx(value), key


def test_score_erasures_refuses_patterns_with_nothing_erased() -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), (3,), (3,))
    metrics = get_task("classification").parity_metrics(3, None, (0.5,))
    patterns = torch.cat([erasure_patterns(code.spec), torch.ones(1, 3, dtype=torch.bool)])
    with pytest.raises(ValueError, match="must erase at least one data slot"):
        score_erasures(metrics, code, torch.zeros(2, 2, 3), torch.zeros(2, 1, 3), torch.zeros(2, 2), patterns)
