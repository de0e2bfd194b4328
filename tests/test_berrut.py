"""The parm-berrut plugin: installed as its own distribution, Berrut interpolation against a NumPy
reference, what is exact (systematic + subtraction for affine F, constant groups for any F, the
interpolation property) and what only converges (smooth inputs, linear F), ApproxIFER decoding from
any K of N, and the Byzantine-tolerant decoder."""

from __future__ import annotations

import importlib
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from parm.coding import CodeSpec, Encoder, build_code, decoders, encoders, erasure_patterns
from parm.coding.registry import AUTOLOAD_ENV, Registry

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SRC = ROOT / "plugins" / "parm-berrut"


def install_plugin(tmp: Path) -> Path:
    """pip-install a copy of plugins/parm-berrut (so no build files land in the tree) into ``tmp/site``."""
    source = tmp / "source"
    shutil.copytree(PLUGIN_SRC, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(tmp / "site"), str(source)], check=True)
    return tmp / "site"


@pytest.fixture(scope="module")
def berrut(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """parm_berrut pip-installed from its source dir into a temp site, on sys.path for this module."""
    site = install_plugin(tmp_path_factory.mktemp("berrut"))
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    module = importlib.import_module("parm_berrut")
    # Leave the session's registries as they were found: discovered before or after the install.
    saved = [(reg, dict(reg._entries), dict(reg._conflicts), reg._discovered) for reg in (encoders, decoders)]
    for registry, cls in ((encoders, module.BerrutEncoder), (decoders, module.BerrutDecoder)):
        if "berrut" not in registry.names():  # discovered before the install: add it by hand
            registry.register("berrut", cls)
    yield module
    for registry, entries, conflicts, discovered in saved:
        registry._entries, registry._conflicts, registry._discovered = entries, conflicts, discovered
    sys.path.remove(str(site))


def test_plugin_is_a_separate_distribution_found_through_entry_points(berrut: ModuleType,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    fresh = Registry("parm.encoders", "encoder", Encoder)
    assert {"berrut", "sum"} <= set(fresh.names())
    assert fresh.get("berrut") is berrut.BerrutEncoder
    dist = distribution("parm-berrut")
    assert dist.version == "0.1.0"
    assert {ep.name for ep in dist.entry_points} == {"berrut"}


def _numpy_berrut(x: float, nodes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Textbook Berrut interpolant through (nodes, values) at x; nodes sorted ascending."""
    if np.any(np.isclose(x, nodes, atol=1e-14, rtol=0)):
        return values[np.argmin(np.abs(nodes - x))]
    terms = np.array([(-1.0) ** i / (x - z) for i, z in enumerate(nodes)])
    return terms @ values / terms.sum()


def test_basis_matches_numpy_reference_with_erasures(berrut: ModuleType) -> None:
    rng = np.random.default_rng(0)
    nodes = np.sort(rng.uniform(-1, 1, 9))
    values = rng.normal(size=(9, 3))
    targets = np.concatenate([rng.uniform(-1, 1, 5), nodes[:2]])
    available = torch.from_numpy(rng.random((4, 9)) > 0.3)
    available[:, 0] = True
    weights = berrut.berrut_basis(torch.from_numpy(targets), torch.from_numpy(nodes), available)
    for b in range(4):
        keep = available[b].numpy()
        for t, x in enumerate(targets):
            expected = _numpy_berrut(x, nodes[keep], values[keep])
            np.testing.assert_allclose(weights[b, t].numpy() @ values, expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(weights.sum(-1), torch.ones(()).double())
    assert bool((weights[~available[:, None, :].expand_as(weights)] == 0).all()), "erased nodes get no weight"


def test_chebyshev_points(berrut: ModuleType) -> None:
    first, second = berrut.chebyshev_first_kind(4), berrut.chebyshev_second_kind(5)
    assert torch.allclose(first, torch.tensor([math.cos((2 * i + 1) * math.pi / 8) for i in range(4)][::-1]).double())
    assert second[0] == -1 and second[-1] == 1 and bool((second.diff() > 0).all())
    d, p = berrut.systematic_nodes(12, 3)
    assert d.numel() == 12 and p.numel() == 3 and not set(d.tolist()) & set(p.tolist())


@pytest.mark.parametrize("k,r", [(2, 1), (8, 1), (10, 2), (12, 3)])
def test_systematic_returns_available_outputs_untouched(berrut: ModuleType, k: int, r: int) -> None:
    code = build_code("berrut", "berrut", CodeSpec(k, r), (1, 28, 28), (10,))
    outputs, parities = torch.randn(6, k, 10), torch.randn(6, r, 10)
    for pattern in erasure_patterns(code.spec, max_patterns=20):
        available = pattern[None].expand(6, -1)
        decoded = code.decode(outputs, parities, available)
        assert torch.equal(decoded[:, pattern[:k]], outputs[:, pattern[:k]]), "F(X_i) must come back bit for bit"
        assert torch.isfinite(decoded).all()


@pytest.mark.parametrize("k,r", [(2, 1), (8, 1), (12, 1), (12, 3)])
def test_systematic_with_subtraction_is_exact_for_affine_f(berrut: ModuleType, k: int, r: int) -> None:
    """Rows of the Berrut coefficients sum to 1, so F(P_j) = sum_i A[j, i] F(X_i) for affine F."""
    torch.manual_seed(0)
    code = build_code("berrut", "subtraction", CodeSpec(k, r), (20,), (7,)).double()
    f = nn.Linear(20, 7).double()
    x = torch.randn(5, k, 20, dtype=torch.float64)
    with torch.no_grad():
        outputs, parity_out = f(x), f(code.encode(x))
        for pattern in erasure_patterns(code.spec, max_patterns=30):
            decoded = code.decode(outputs, parity_out, pattern[None].expand(5, -1))
            torch.testing.assert_close(decoded, outputs, rtol=1e-8, atol=1e-8)


def test_berrut_decoders_are_exact_on_constant_groups_for_any_f(berrut: ModuleType) -> None:
    """Berrut reproduces constants: a group of identical queries is decoded exactly, F nonlinear."""
    torch.manual_seed(1)
    f = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.randn(3, 1, 12, dtype=torch.float64).expand(3, 8, 12)
    with torch.no_grad():
        code = build_code("berrut", "berrut", CodeSpec(8, 2), (12,), (4,)).double()
        outputs, parity_out = f(x), f(code.encode(x))
        for pattern in erasure_patterns(code.spec):
            torch.testing.assert_close(code.decode(outputs, parity_out, pattern[None].expand(3, -1)), outputs)
        approx = berrut.ApproxIFERCode(8, 2)
        answers = f(approx.encode(x))
        available = torch.ones(3, approx.n, dtype=torch.bool)
        available[:, [0, 5]] = False
        torch.testing.assert_close(approx.decode(answers, available), outputs)


def _smooth_group(nodes: torch.Tensor) -> torch.Tensor:
    """Queries that vary smoothly with their node: ``(1, K, 3)``."""
    return torch.stack([torch.sin(2 * nodes), torch.cos(nodes), nodes**2], dim=-1)[None]


def test_berrut_is_not_exact_but_converges_for_linear_f_on_smooth_inputs(berrut: ModuleType) -> None:
    """For linear F the decoded values interpolate F(u(z)), a Berrut rational function on *another*
    node set, which Berrut does not reproduce: the error is O(1/K) on smooth inputs, not zero."""
    torch.manual_seed(0)
    weight = torch.randn(5, 3, dtype=torch.float64)
    errors = {}
    for k in (4, 8, 16):
        code = berrut.ApproxIFERCode(k, 1)
        x = _smooth_group(code.data_nodes)
        answers, truth = code.encode(x) @ weight.T, x @ weight.T
        worst = 0.0
        for lost in range(code.n):
            available = torch.ones(1, code.n, dtype=torch.bool)
            available[0, lost] = False
            worst = max(worst, float((code.decode(answers, available) - truth).abs().max()))
        errors[k] = worst
    assert errors[4] > 1e-3, "Berrut is not exact for linear F in general"
    assert errors[4] > errors[8] > errors[16]
    assert errors[16] < errors[4] / 3


@pytest.mark.parametrize("k,s", [(2, 1), (8, 1), (12, 2)])
def test_approxifer_decodes_from_any_k_of_n(berrut: ModuleType, k: int, s: int) -> None:
    code = berrut.ApproxIFERCode(k, s)
    assert code.n == k + s
    x = torch.randn(4, k, 1, 6, 6)
    coded = code.encode(x)
    assert coded.shape == (4, k + s, 1, 6, 6)
    answers = torch.randn(4, k + s, 10)
    for lost in range(code.n):
        available = torch.ones(4, code.n, dtype=torch.bool)
        available[:, lost] = False
        answers_nan = answers.clone()
        answers_nan[:, lost] = float("nan")  # a missing answer is never read
        decoded = code.decode(answers_nan, available)
        assert decoded.shape == (4, k, 10) and torch.isfinite(decoded).all()
    with pytest.raises(ValueError, match=f"tolerates S={s}"):
        code.decode(answers, torch.zeros(4, code.n, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True))


def test_byzantine_decoder_excludes_a_wrong_answer(berrut: ModuleType) -> None:
    torch.manual_seed(0)
    weight = torch.randn(5, 3, dtype=torch.float64)
    robust = berrut.ApproxIFERCode(8, 1, byzantine=1)
    assert robust.n == 8 + 1 + 2
    x = _smooth_group(robust.data_nodes).expand(2, -1, -1)
    answers = robust.encode(x) @ weight.T
    clean = robust.decode(answers, torch.ones(2, robust.n, dtype=torch.bool))
    corrupted = answers.clone()
    corrupted[0, 4] += 100.0
    corrupted[1, 9] -= 100.0
    available = torch.ones(2, robust.n, dtype=torch.bool)
    available[:, 0] = False
    located = robust.locate_errors(corrupted, available)
    assert located.tolist()[0] == [False, True, True, True, False] + [True] * 6
    assert not located[1, 9] and int(located.sum()) == 2 * (robust.n - 2)
    robust_estimate = robust.decode(corrupted, available)
    assert float((robust_estimate - clean).abs().max()) < 1.0
    naive = berrut.berrut_basis(robust.data_nodes, robust.worker_nodes, available) @ corrupted
    assert float((naive - clean).abs().max()) > 5.0, "without locating it, the wrong answer spoils the estimate"


def test_berrut_decoder_refuses_other_encoders(berrut: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"pairs only with encoders that have traits \['berrut'\]"):
        build_code("sum", "berrut", CodeSpec(4, 1), (3,), (2,))


def test_approxifer_rejects_bad_arguments(berrut: ModuleType) -> None:
    with pytest.raises(ValueError, match="stragglers must be an int >= 0"):
        berrut.ApproxIFERCode(4, -1)
    with pytest.raises(ValueError, match=r"expects \(B, K=4, ...\) queries"):
        berrut.ApproxIFERCode(4, 1).encode(torch.randn(2, 3, 5))


@pytest.mark.slow
def test_train_cli_uses_the_installed_plugin(berrut: ModuleType, tmp_path: Path, tiny_data_dir: Path) -> None:
    """`python train.py encoder=berrut decoder=subtraction` from a separately installed distribution."""
    from helpers import TINY

    site = Path(berrut.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "train.py"), "encoder=berrut", "decoder=subtraction", "k=4",
           f"data_dir={tiny_data_dir}", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}", *TINY]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "berrut/subtraction" in done.stdout
