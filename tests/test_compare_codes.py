"""parm.evaluation (every method scored on the same F, samples and groups) and the compare_codes script."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from parm.coding import CodeSpec, build_code
from parm.evaluation import (
    MethodResult,
    evaluate_coded_computation,
    evaluate_default,
    evaluate_parity_models,
    group,
    straggler_patterns,
)
from parm.models.checkpoint import save_model
from parm.models.mlp import MLP

ROOT = Path(__file__).resolve().parents[1]


class LinearF(nn.Module):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes, bias=False)  # linear, not affine: sum parities are exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def _data(n: int = 90, features: int = 6, classes: int = 4) -> tuple[LinearF, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    f = LinearF(features, classes).double()
    x = torch.randn(n, features, dtype=torch.float64)
    with torch.no_grad():
        y = f(x).argmax(dim=1)
    y[::3] = (y[::3] + 1) % classes  # F is right on two thirds
    return f, x, y


@pytest.mark.parametrize("k,r", [(2, 1), (4, 2), (12, 1)])
def test_parity_models_exact_for_linear_f(k: int, r: int) -> None:
    f, x, y = _data()
    code = build_code("sum", "subtraction", CodeSpec(k, r), (6,), (4,)).double()
    result = evaluate_parity_models("sum", f, [f] * r, code, x, y, max_patterns=20)
    groups = x.shape[0] // k
    assert result.patterns == min(20, math.comb(k, r))
    assert result.scored == groups * result.patterns * r
    assert result.agreement == 1.0, "a linear F answers its own sum parity exactly"
    f_acc = float((f(x[: groups * k]).argmax(1) == y[: groups * k]).double().mean())
    assert result.available_acc == pytest.approx(f_acc)
    assert result.degraded_acc == pytest.approx(f_acc, abs=0.2)


def test_approxifer_scores_every_prediction(berrut_site: Path) -> None:
    from parm_berrut import ApproxIFERCode

    f, x, y = _data()
    result = evaluate_coded_computation("approxifer", f, ApproxIFERCode(4, 1), x, y, max_patterns=None)
    assert result.approximates_all and result.patterns == 5
    assert result.scored == (90 // 4) * 4 * 5
    assert result.full_acc is not None and 0.0 <= result.degraded_acc <= 1.0
    assert set(result.overall((0.0, 0.5)).values()) == {result.degraded_acc}, "flat: nothing is exact"


def test_overall_curve_and_default() -> None:
    result = MethodResult("m", 2, 1, available_acc=0.9, degraded_acc=0.5, degraded_top5=0.8, agreement=0.6,
                          scored=10, patterns=2)
    assert result.overall((0.0, 0.5, 1.0)) == pytest.approx({0.0: 0.9, 0.5: 0.7, 1.0: 0.5})
    f, x, y = _data()
    default = evaluate_default(f, x, y, k=4, default_answer=2)
    assert default.degraded_acc == pytest.approx(float((y[:88] == 2).double().mean()))
    assert json.dumps(default.as_dict()), "results serialise to strict JSON"


def test_box_outputs_are_scored_by_iou_through_the_task() -> None:
    """A linear "F" giving boxes: sum parities decode it exactly, so every reconstruction matches F's box."""
    torch.manual_seed(0)
    f = LinearF(6, 4).double()
    x = torch.randn(80, 6, dtype=torch.float64)
    with torch.no_grad():
        boxes = f(x)
    truth = boxes + 0.05 * torch.randn_like(boxes)
    code = build_code("sum", "subtraction", CodeSpec(4, 1), (6,), (4,)).double()
    result = evaluate_parity_models("sum", f, [f], code, x, truth, task="regression")
    assert result.agreement == 1.0 and result.degraded_top5 is None
    assert result.degraded_acc == pytest.approx(result.available_acc)
    assert 0.0 <= result.metrics["degraded_miou"] <= 1.0 and result.metrics["degraded_mse"] < 1e-12
    default = evaluate_default(f, x, truth, k=4, default_answer=truth.mean(0).tolist(), task="regression")
    assert default.degraded_acc == pytest.approx(default.metrics["default"]) and default.agreement is None


def test_straggler_patterns_and_grouping() -> None:
    all_pairs = straggler_patterns(6, 2, max_patterns=None)
    assert all_pairs.shape == (15, 6) and bool(((~all_pairs).sum(1) == 2).all())
    sampled = straggler_patterns(13, 3, max_patterns=64, seed=1)
    assert sampled.shape == (64, 13) and torch.unique(sampled, dim=0).shape[0] == 64
    assert torch.equal(sampled, straggler_patterns(13, 3, max_patterns=64, seed=1))
    assert group(torch.arange(10), 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="fill no coding group of k=12"):
        group(torch.arange(5), 12)


@pytest.fixture(scope="module")
def berrut_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """parm-berrut pip-installed (from a copy of its source) into a temp site, on sys.path for this module."""
    from test_berrut import install_plugin

    site = install_plugin(tmp_path_factory.mktemp("berrut"))
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))


@pytest.fixture(scope="module")
def berrut_env(berrut_site: Path) -> dict[str, str]:
    """Environment for subprocesses that need parm-berrut's entry points."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(berrut_site), os.environ.get("PYTHONPATH", "")])}


def _base_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    spec = {"_target_": "parm.models.mlp.MLP", "input_shape": [1, 28, 28], "num_classes": 10, "hidden": [200, 100]}
    model = MLP(input_shape=(1, 28, 28), num_classes=10)
    return save_model(tmp_path / "base.pt", model, spec)


def _run_script(tmp_path: Path, data_dir: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "compare_codes.py"), "--data", "mnist", "--data-dir", str(data_dir),
           "--base", str(_base_file(tmp_path)), "--out", str(tmp_path / "results"),
           "--workdir", str(tmp_path / "work"), "--override", "data.val_size=100", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_script_writes_markdown_json_and_png(tmp_path: Path, tiny_data_dir: Path, berrut_env: dict[str, str]) -> None:
    done = _run_script(tmp_path, tiny_data_dir, berrut_env, "--ks", "2", "4", "--epochs", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "codes_mnist.json").read_text())
    methods = {(r["k"], r["method"]) for r in record["results"]}
    assert methods == {(k, m) for k in (2, 4) for m in ("berrut-systematic", "berrut-linear-solve", "approxifer",
                                                                   "default")}
    assert len({r["available_acc"] for r in record["results"] if r["k"] == 2}) == 1, "same F, samples, groups"
    report = (tmp_path / "results" / "codes.md").read_text()
    assert "| 4 | approxifer |" in report
    for name in ("codes_mnist_ad.png", "codes_mnist_ao.png"):
        assert (tmp_path / "results" / name).stat().st_size > 1000


@pytest.mark.slow
def test_script_trains_parity_models_through_the_pipeline(tmp_path: Path, tiny_data_dir: Path,
                                                          berrut_env: dict[str, str]) -> None:
    done = _run_script(tmp_path, tiny_data_dir, berrut_env, "--ks", "2", "--epochs", "1",
                       "--override", "trainer.limit_train_batches=2",
                       "--override", "data.groups_per_batch=8")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "codes_mnist.json").read_text())
    parm = [r for r in record["results"] if r["method"] == "parm-sum"]
    assert len(parm) == 1 and Path(parm[0]["extra"]["parity"]).exists()


@pytest.mark.slow
def test_script_compares_codes_on_box_outputs(tmp_path: Path, berrut_env: dict[str, str]) -> None:
    """--data localization: F and a parity model trained on generated boxes, every method scored by IoU."""
    cmd = [sys.executable, str(ROOT / "scripts" / "compare_codes.py"), "--data", "localization", "--ks", "2",
           "--epochs", "1", "--out", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"),
           *[arg for o in ("data.num_train=400", "data.num_test=100", "data.val_size=50", "base.epochs=1",
                           "data.groups_per_batch=8", f"cache_dir={tmp_path / 'cache'}")
             for arg in ("--override", o)]]
    done = subprocess.run(cmd, env=berrut_env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "codes_localization.json").read_text())
    assert record["task"] == "regression" and len(record["default_answer"]) == 4
    methods = {r["method"]: r for r in record["results"]}
    assert set(methods) == {"parm-sum", "berrut-systematic", "berrut-linear-solve", "approxifer", "default"}
    assert all("degraded_miou" in r["metrics"] for name, r in methods.items() if name != "default")
    assert "IoU >= 0.75" in (tmp_path / "results" / "codes.md").read_text()


def test_learned_and_lac_methods_select_their_whole_code_config() -> None:
    from parm.bench.codes import code_overrides

    assert code_overrides("learned") == ["code=learned"] and code_overrides("lac") == ["code=lac"]
    assert code_overrides("concat") == ["encoder=concat", "decoder=subtraction"]


def test_records_say_which_settings_a_whole_code_was_trained_with() -> None:
    import argparse

    from parm.bench.codes import code_settings

    args = argparse.Namespace(data="mnist", data_dir="data", override=[])
    assert code_settings(args, "learned") == {"coder_warmup": 0.5, "coder_lr_scale": 0.1,
                                              "parity_model": "parm.models.tiled.TiledParity"}
    assert code_settings(args, "lac")["parity_model"] == "F itself"  # type: ignore[index]
    args.override = ["parity.coder_warmup=0"]
    assert code_settings(args, "learned:mlp")["coder_warmup"] == 0.0  # type: ignore[index]
    assert code_settings(args, "concat:tiled") is None
