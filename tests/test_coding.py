"""Contract tests over every registered coder, plus exact recovery for linear codes."""

from __future__ import annotations

import math

import pytest
import torch

from parm.coding import CodeSpec, Decoder, Encoder, build_code, decoders, encoders, erasure_patterns, random_erasures
from parm_coders.concat import choose_grid

IMAGE = (1, 28, 28)
CLASSES = (10,)


def _pairs() -> list[tuple[str, str]]:
    pairs = []
    for enc in encoders.names():
        for dec in decoders.names():
            enc_traits = encoders.get(enc).traits
            if decoders.get(dec).requires <= enc_traits:
                pairs.append((enc, dec))
    return pairs


@pytest.mark.parametrize("k,r", [(2, 1), (3, 1), (4, 2), (12, 1)])
@pytest.mark.parametrize("encoder,decoder", _pairs())
def test_contract_shapes_and_determinism(encoder: str, decoder: str, k: int, r: int) -> None:
    torch.manual_seed(0)
    code = build_code(encoder, decoder, CodeSpec(k, r), IMAGE, CLASSES).eval()
    x = torch.randn(5, k, *IMAGE)
    parities = code.encode(x)
    assert parities.shape == (5, r, *code.encoder.parity_shape)
    assert torch.equal(parities, code.encode(x)), "encoding must be deterministic"
    outputs, par_out = torch.randn(5, k, *CLASSES), torch.randn(5, r, *CLASSES)
    available = random_erasures(code.spec, 5, generator=torch.Generator().manual_seed(1))
    decoded = code.decode(outputs, par_out, available)
    assert decoded.shape == outputs.shape
    assert torch.equal(decoded, code.decode(outputs, par_out, available))
    keep = available[:, :k]
    assert torch.equal(decoded[keep], outputs[keep]), "available outputs must pass through untouched"
    assert torch.isfinite(decoded).all()


@pytest.mark.parametrize("encoder,decoder", _pairs())
def test_missing_slots_may_hold_nan(encoder: str, decoder: str) -> None:
    code = build_code(encoder, decoder, CodeSpec(3, 1), IMAGE, CLASSES)
    outputs = torch.randn(4, 3, 10)
    available = erasure_patterns(code.spec)[:, :].repeat(2, 1)[:4]
    outputs[~available[:, :3]] = float("nan")
    assert torch.isfinite(code.decode(outputs, torch.randn(4, 1, 10), available)).all()


@pytest.mark.parametrize("k,r", [(2, 1), (4, 1), (4, 2), (6, 3)])
@pytest.mark.parametrize("encoder", ["sum", "weighted"])  # weighted: the example plugin, plugins/parm-example
def test_linear_encoders_with_subtraction_recover_exactly_for_linear_f(encoder: str, k: int, r: int) -> None:
    torch.manual_seed(0)
    code = build_code(encoder, "subtraction", CodeSpec(k, r), (20,), (7,))
    weight = torch.randn(7, 20, dtype=torch.float64)
    x = torch.randn(8, k, 20, dtype=torch.float64)
    f = lambda t: t @ weight.T  # noqa: E731 - F is linear, so F_P = F is an exact parity model
    outputs, parities = f(x), f(code.encode(x))
    for available in erasure_patterns(code.spec):
        mask = available.expand(8, -1)
        corrupted = outputs.clone()
        corrupted[~mask[:, :k]] = 1e6
        decoded = code.decode(corrupted, parities, mask)
        torch.testing.assert_close(decoded, outputs, rtol=1e-9, atol=1e-9)


def test_subtraction_uses_only_arrived_parities() -> None:
    code = build_code("sum", "subtraction", CodeSpec(4, 2), (5,), (3,))
    weight = torch.randn(3, 5, dtype=torch.float64)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    outputs, parities = x @ weight.T, code.encode(x) @ weight.T
    available = torch.tensor([[True, False, True, True, False, True]] * 2)  # one output, one parity lost
    torch.testing.assert_close(code.decode(outputs, parities, available), outputs)


def test_mixed_erasure_patterns_in_one_batch() -> None:
    code = build_code("sum", "subtraction", CodeSpec(5, 2), (6,), (4,))
    weight = torch.randn(4, 6, dtype=torch.float64)
    x = torch.randn(10, 5, 6, dtype=torch.float64)
    outputs, parities = x @ weight.T, code.encode(x) @ weight.T
    masks = erasure_patterns(code.spec)
    available = masks[torch.arange(10) % len(masks)]
    torch.testing.assert_close(code.decode(outputs, parities, available), outputs)


@pytest.mark.parametrize("k,shape,grid", [(2, (28, 28), (1, 2)), (4, (28, 28), (2, 2)), (3, (32, 32), (2, 2)),
                                          (8, (28, 28), (2, 4)), (12, (32, 32), (4, 4)), (9, (27, 27), (3, 3))])
def test_concat_grid(k: int, shape: tuple[int, int], grid: tuple[int, int]) -> None:
    assert choose_grid(k, *shape) == grid


def test_concat_k2_halves_and_k4_quadrants() -> None:
    x = torch.arange(4, dtype=torch.float32).reshape(1, 4, 1, 1, 1).expand(1, 4, 3, 8, 8).contiguous()
    p4 = build_code("concat", "subtraction", CodeSpec(4), (3, 8, 8), CLASSES).encode(x)[0, 0]
    assert p4.shape == (3, 8, 8)
    assert (p4[:, :4, :4] == 0).all() and (p4[:, :4, 4:] == 1).all()
    assert (p4[:, 4:, :4] == 2).all() and (p4[:, 4:, 4:] == 3).all()
    p2 = build_code("concat", "subtraction", CodeSpec(2), (3, 8, 8), CLASSES).encode(x[:, :2])[0, 0]
    assert (p2[:, :, :4] == 0).all() and (p2[:, :, 4:] == 1).all()


def test_concat_downsamples_by_averaging_per_channel() -> None:
    x = torch.zeros(1, 2, 2, 4, 4)
    x[0, 1, 1, :, 1::2] = 1.0  # member 2, channel 1: alternating columns
    tile = build_code("concat", "subtraction", CodeSpec(2), (2, 4, 4), CLASSES).encode(x)[0, 0]
    torch.testing.assert_close(tile[1, :, 2:], torch.full((4, 2), 0.5))
    assert (tile[0] == 0).all()


def test_sum_coefficients_row0_is_plain_sum() -> None:
    code = build_code("sum", "subtraction", CodeSpec(3, 2), (4,), (2,))
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(code.encode(x)[:, 0], x.sum(1))
    coeffs = code.encoder.coefficients
    for cols in ((0, 1), (0, 2), (1, 2)):
        assert abs(torch.linalg.det(coeffs[:, cols].double())) > 1e-3


@pytest.mark.parametrize("k,r,match", [(1, 1, "k >= 2"), (3, 0, "r >= 1"), (3, 3, "r < k"), (2, 5, "r < k")])
def test_codespec_rejects_bad_values(k: int, r: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CodeSpec(k, r)


def test_codespec_rejects_non_int() -> None:
    with pytest.raises(TypeError, match="must be an int"):
        CodeSpec(2.0, 1)  # type: ignore[arg-type]


def test_concat_rejects_non_images_and_untileable_sizes() -> None:
    with pytest.raises(ValueError, match=r"tiles images of shape \(C, H, W\)"):
        build_code("concat", "subtraction", CodeSpec(2), (784,), CLASSES)
    with pytest.raises(ValueError, match="cannot tile k=5 queries onto a 2x2 image"):
        build_code("concat", "subtraction", CodeSpec(5), (3, 2, 2), CLASSES)
    with pytest.raises(ValueError, match="grid 1x3 cannot hold"):
        build_code("concat", "subtraction", CodeSpec(4), (3, 8, 9), CLASSES, encoder_kwargs={"grid": (1, 3)})


def test_wrong_decoder_pair_fails_at_construction() -> None:
    with pytest.raises(ValueError, match=r"pairs only with encoders that have traits \['linear'\]"):
        build_code("learned", "subtraction", CodeSpec(2), IMAGE, CLASSES)


def test_unknown_coder_lists_installed() -> None:
    with pytest.raises(ValueError, match=r"unknown encoder 'nope'; installed encoders: .*concat.*sum"):
        build_code("nope", "subtraction", CodeSpec(2), IMAGE, CLASSES)


def test_decoder_rejects_too_many_erasures_and_bad_shapes() -> None:
    code = build_code("sum", "subtraction", CodeSpec(3, 1), (4,), (2,))
    outputs, parities = torch.randn(2, 3, 2), torch.randn(2, 1, 2)
    with pytest.raises(ValueError, match="2 missing outputs but a code with r=1"):
        code.decode(outputs, parities, torch.tensor([[False, False, True, True]] * 2))
    with pytest.raises(ValueError, match=r"outputs must have shape \(B, 3, 2\)"):
        code.decode(torch.randn(2, 3, 5), parities, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"coding group of shape \(B, k, \*input_shape\)"):
        code.encode(torch.randn(2, 2, 4))


def test_erasure_patterns_enumerate_and_sample() -> None:
    spec = CodeSpec(6, 2)
    patterns = erasure_patterns(spec)
    assert patterns.shape == (math.comb(6, 2), 8)
    assert ((~patterns[:, :6]).sum(1) == 2).all() and patterns[:, 6:].all()
    assert len({tuple(p.tolist()) for p in patterns}) == 15
    sampled = erasure_patterns(CodeSpec(12, 3), max_patterns=20, seed=3)
    assert sampled.shape == (20, 15)
    assert torch.equal(sampled, erasure_patterns(CodeSpec(12, 3), max_patterns=20, seed=3))
    assert len({tuple(p.tolist()) for p in sampled}) == 20


def test_learned_coders_have_gradients() -> None:
    code = build_code("learned", "learned", CodeSpec(2), IMAGE, CLASSES)
    assert code.decoder.trainable and any(p.requires_grad for p in code.encoder.parameters())
    assert isinstance(code.encoder, Encoder) and isinstance(code.decoder, Decoder)
    x = torch.randn(3, 2, *IMAGE, requires_grad=True)
    out = code.decode(torch.randn(3, 2, 10), code.encode(x).mean(dim=(2, 3, 4))[..., None].expand(3, 1, 10),
                      torch.tensor([[True, False, True]] * 3))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
