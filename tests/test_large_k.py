"""Large k (up to 12) for the built-in coders, and the r-subset erasure bookkeeping at that size."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from parm.coding import CodeSpec, build_code, erasure_patterns, random_erasures, sample_erasures
from parm.evaluation import evaluate_decoder, group
from parm_coders.concat import choose_grid

IMAGE = (1, 28, 28)
LARGE_K = (8, 10, 12)
PAIRS = (("sum", "subtraction"), ("concat", "subtraction"), ("learned", "learned"), ("sum", "learned"))


@pytest.mark.parametrize("k", LARGE_K)
@pytest.mark.parametrize("r", [1, 3])
@pytest.mark.parametrize("encoder,decoder", PAIRS)
def test_build_encode_decode_at_large_k(encoder: str, decoder: str, k: int, r: int) -> None:
    torch.manual_seed(0)
    code = build_code(encoder, decoder, CodeSpec(k, r), IMAGE, (10,)).eval()
    x = torch.randn(3, k, *IMAGE)
    with torch.no_grad():
        parities = code.encode(x)
        assert parities.shape == (3, r, *IMAGE)
        outputs, parity_out = torch.randn(3, k, 10), torch.randn(3, r, 10)
        available = random_erasures(code.spec, 3, generator=torch.Generator().manual_seed(k))
        decoded = code.decode(outputs, parity_out, available)
    keep = available[:, :k]
    assert torch.equal(decoded[keep], outputs[keep])
    assert torch.isfinite(decoded).all()


@pytest.mark.parametrize("k", LARGE_K)
def test_concat_grid_holds_every_tile_at_large_k(k: int) -> None:
    rows, cols = choose_grid(k, 28, 28)
    assert rows * cols >= k and 28 % rows == 0 and 28 % cols == 0
    code = build_code("concat", "subtraction", CodeSpec(k, 1), IMAGE, (10,))
    x = torch.zeros(1, k, *IMAGE)
    x[0, k - 1] = 1.0  # only the last query is bright: exactly its tile lights up
    tile_h, tile_w = 28 // rows, 28 // cols
    parity = code.encode(x)[0, 0, 0]
    assert float(parity.sum()) == pytest.approx(tile_h * tile_w)
    row, col = divmod(k - 1, cols)
    assert bool((parity[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w] == 1).all())


@pytest.mark.parametrize("k,r", [(8, 1), (10, 2), (12, 1), (12, 3)])
def test_sum_subtraction_exact_for_linear_f_at_large_k(k: int, r: int) -> None:
    torch.manual_seed(0)
    code = build_code("sum", "subtraction", CodeSpec(k, r), (20,), (7,)).double()
    weight = torch.randn(7, 20, dtype=torch.float64)
    x = torch.randn(4, k, 20, dtype=torch.float64)
    outputs, parity_out = x @ weight.T, code.encode(x) @ weight.T
    for pattern in erasure_patterns(code.spec, max_patterns=40):
        decoded = code.decode(outputs, parity_out, pattern[None].expand(4, -1))
        torch.testing.assert_close(decoded, outputs, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("k,r", [(12, 1), (12, 2), (12, 6), (10, 5)])
def test_eval_pattern_sampling_stays_bounded(k: int, r: int) -> None:
    spec = CodeSpec(k, r)
    total = math.comb(k, r)
    patterns = erasure_patterns(spec, max_patterns=64, seed=5)
    assert patterns.shape == (min(total, 64), k + r)
    assert bool((patterns[:, k:]).all()), "parities are never erased in evaluation"
    assert bool(((~patterns[:, :k]).sum(dim=1) == r).all()), "every pattern erases exactly r data slots"
    assert torch.unique(patterns, dim=0).shape[0] == patterns.shape[0], "no pattern twice"
    assert torch.equal(patterns, erasure_patterns(spec, max_patterns=64, seed=5)), "the sample is seeded"
    if total > 64:
        assert not torch.equal(patterns, erasure_patterns(spec, max_patterns=64, seed=6))


def test_parity_module_eval_patterns_are_capped_at_large_k() -> None:
    from parm.lit.parity import ParityModule

    code = build_code("sum", "subtraction", CodeSpec(12, 6), (4,), (3,))
    module = ParityModule(nn.Linear(4, 3), [nn.Linear(4, 3) for _ in range(6)], code,
                          optimizer=lambda params: torch.optim.Adam(params), max_eval_patterns=64)
    assert module.eval_patterns.shape == (64, 18)  # C(12, 6) = 924 would be scored otherwise


def test_random_erasures_erase_exactly_r_data_slots() -> None:
    spec = CodeSpec(12, 4)
    masks = random_erasures(spec, 500, generator=torch.Generator().manual_seed(0))
    assert bool(((~masks[:, :12]).sum(dim=1) == 4).all()) and bool(masks[:, 12:].all())
    counts = (~masks[:, :12]).sum(dim=0).float()
    assert float(counts.min()) > 0.5 * float(counts.mean()), "every slot gets erased"


@pytest.mark.parametrize("k,r", [(2, 1), (12, 1), (12, 4)])
def test_sample_erasures_indices_are_the_masks_erased_slots_in_order(k: int, r: int) -> None:
    spec = CodeSpec(k, r)
    masks, erased = sample_erasures(spec, 400, generator=torch.Generator().manual_seed(1))
    assert erased.shape == (400, r) and bool((erased.diff(dim=1) > 0).all())
    rebuilt = torch.ones_like(masks)
    rebuilt[torch.arange(400)[:, None], erased] = False
    assert torch.equal(rebuilt, masks)
    counts = torch.bincount(erased.flatten(), minlength=k).float()
    assert float(counts.min()) > 0.5 * float(counts.mean()), "every slot gets erased"


@pytest.mark.parametrize("k,r", [(4, 2), (12, 1), (12, 3)])
def test_evaluation_scores_each_erased_slot_once_per_pattern(k: int, r: int) -> None:
    torch.manual_seed(0)
    code = build_code("sum", "subtraction", CodeSpec(k, r), (5,), (4,)).double()
    weight = torch.randn(4, 5, dtype=torch.float64)
    x = torch.randn(7 * k + 1, 5, dtype=torch.float64)  # one trailing sample fills no group
    groups = group(x, k)
    outputs, parity_out = groups @ weight.T, code.encode(groups) @ weight.T
    labels = outputs.argmax(dim=-1)
    patterns = erasure_patterns(code.spec, max_patterns=30)
    scores, n_patterns = evaluate_decoder(code, outputs, parity_out, labels, patterns)
    assert n_patterns == min(30, math.comb(k, r))
    assert scores.count == 7 * n_patterns * r
    values = scores.values()
    assert values["degraded_acc"] == 1.0 and values["agreement"] == 1.0, "exact decoding of a linear F agrees"


@pytest.mark.parametrize("k", [12])
def test_learned_coders_train_a_step_at_large_k(k: int) -> None:
    torch.manual_seed(0)
    code = build_code("learned", "learned", CodeSpec(k, 2), IMAGE, (10,))
    parity_model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    x, target = torch.randn(4, k, *IMAGE), torch.randn(4, k, 10)
    available = random_erasures(code.spec, 4, generator=torch.Generator().manual_seed(0))
    parities = code.encode(x)
    parity_out = torch.stack([parity_model(parities[:, j]) for j in range(2)], dim=1)
    decoded = code.decode(target, parity_out, available)
    loss = (decoded - target)[~available[:, :k]].square().mean()
    loss.backward()
    grads = [p.grad for p in code.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
