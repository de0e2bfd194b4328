"""ParityModule in isolation: the objective, frozen F, target cache, non-finite loss."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parm.coding import CodeSpec, build_code
from parm.lit import FastPath, ParityModule


def _module(base: nn.Module, k: int = 2, r: int = 1, encoder: str = "sum", decoder: str = "subtraction",
            cache: bool = True) -> ParityModule:
    code = build_code(encoder, decoder, CodeSpec(k, r), (6,), (3,))
    parity = [nn.Linear(6, 3) for _ in range(r)]
    return ParityModule(base, parity, code, optimizer=functools.partial(torch.optim.Adam, lr=1e-2),
                        fast=FastPath(cache_targets=cache))


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(n, 6), torch.randint(0, 3, (n,)), torch.arange(n)


def test_loss_is_reference_mse_for_sum_subtraction() -> None:
    torch.manual_seed(0)
    module = _module(nn.Linear(6, 3))
    x, y, idx = _batch()
    loss = module.training_step((x, y, idx), 0)
    groups = x.reshape(4, 2, 6)
    with torch.no_grad():
        reference = torch.nn.functional.mse_loss(module.parity_models[0](groups.sum(1)),
                                                 module.base_model(x).reshape(4, 2, 3).sum(1))
    torch.testing.assert_close(loss.detach(), reference)


def test_base_model_stays_frozen_and_in_eval_mode() -> None:
    base = nn.Sequential(nn.Linear(6, 3), nn.BatchNorm1d(3))
    module = _module(base)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    module.train()
    assert not base.training
    optimizer = module.configure_optimizers()
    for _ in range(3):
        loss = module.training_step(_batch(), 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert all(not p.requires_grad for p in base.parameters())


def test_cached_targets_equal_fresh_outputs() -> None:
    base = nn.Linear(6, 3)
    module = _module(base, cache=True)
    x, _, idx = _batch()
    first = module.targets(x, idx)
    # Second visit is served from the cache even for inputs that would now give other outputs.
    second = module.targets(torch.zeros_like(x), idx)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, base(x).detach())


def test_learned_coders_receive_gradients() -> None:
    module = _module(nn.Linear(6, 3), k=3, encoder="learned", decoder="learned")
    module.training_step(_batch(9), 0).backward()
    assert all(p.grad is not None for p in module.code.parameters())
    assert all(p.grad is not None for p in module.parity_models.parameters())


def test_non_finite_loss_stops_with_advice() -> None:
    class NaNModel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 3), float("nan"))

    module = _module(NaNModel())
    with pytest.raises(FloatingPointError, match=r"parity loss became nan.*Lower the learning rate"):
        module.training_step(_batch(), 0)


def test_wrong_number_of_parity_models_and_bad_loss() -> None:
    code = build_code("sum", "subtraction", CodeSpec(3, 2), (6,), (3,))
    opt = functools.partial(torch.optim.Adam)
    with pytest.raises(ValueError, match=r"one parity model per parity \(r=2\), got 1"):
        ParityModule(nn.Linear(6, 3), [nn.Linear(6, 3)], code, optimizer=opt)
    with pytest.raises(ValueError, match="loss must be one of"):
        ParityModule(nn.Linear(6, 3), [nn.Linear(6, 3)] * 2, code, optimizer=opt, loss="l1")


@pytest.mark.parametrize("encoder", ["sum", "concat"])
def test_residual_loss_equals_the_erased_slot_loss(encoder: str) -> None:
    """The shortcut for plain-sum parities scores what the general path scores, for any erased slot."""
    torch.manual_seed(0)
    code = build_code(encoder, "subtraction", CodeSpec(3, 1), (1, 6, 6), (4,))
    base, parity = nn.Sequential(nn.Flatten(), nn.Linear(36, 4)), nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    module = ParityModule(base, [parity], code, optimizer=functools.partial(torch.optim.Adam))
    assert module.residual_loss
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer here
    x = torch.randn(12, 1, 6, 6)
    shortcut = module.training_step((x, torch.zeros(12, dtype=torch.long), torch.arange(12)), 0)
    targets, parities = module.base_forward(x).view(4, 3, 4), module.parity_forward(x.view(4, 3, 1, 6, 6))
    for slot in range(3):
        available = torch.ones(4, 4, dtype=torch.bool)
        available[:, slot] = False
        erased = torch.full((4, 1), slot)
        estimate, truth = module._erased_pairs(targets, parities, available, erased)
        torch.testing.assert_close(F.mse_loss(estimate, truth), shortcut)
    kl = ParityModule(base, [parity], code, optimizer=functools.partial(torch.optim.Adam), loss="kl")
    assert not kl.residual_loss, "KL scores the decoded slot's softmax: no shortcut"
    r2 = build_code(encoder, "subtraction", CodeSpec(3, 2), (1, 6, 6), (4,))
    assert not ParityModule(base, [parity, parity], r2, optimizer=functools.partial(torch.optim.Adam)).residual_loss
