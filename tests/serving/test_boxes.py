"""Serving is generic over tasks: a box (regression) model answers its vector, scored as boxes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from serving_fakes import FakeInstance

from parm.coding import CodeSpec, build_code
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.instance import InstancePool
from parm.serving.loadgen import run_poisson

SHAPE = (1, 8, 8)


def _box_files(directory: Path) -> tuple[str, str, torch.nn.Module]:
    """An MLP with 4 outputs saved as a regression F (``meta.task``), and a sum-code parity artifact."""
    from parm.artifacts import code_record, save_parity
    from parm.models.checkpoint import save_model
    from parm.models.mlp import MLP

    torch.manual_seed(0)
    spec = {"_target_": "parm.models.mlp.MLP", "input_shape": list(SHAPE), "num_classes": 4}
    model = MLP(input_shape=SHAPE, num_classes=4)
    base = save_model(directory / "base.pt", model, spec, meta={"task": "regression"})
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (4,))
    parity = save_parity(directory / "parity.pt", [MLP(input_shape=SHAPE, num_classes=4)], spec, code,
                         code_record(code, {}, {}), SHAPE, (4,))
    return str(base), str(parity), model.eval()


def test_a_served_box_model_answers_its_vectors(tmp_path: Path) -> None:
    """Real worker processes behind the HTTP API: each answer is F's box, no class, no logits."""
    from parm.serving.server import build_app

    base, parity, model = _box_files(tmp_path)
    app = build_app(base, parity, 2, 1, frontend={"policy": "parm", "decode_grace_s": 5.0})
    xs = torch.randn(4, *SHAPE)

    async def body() -> list[dict]:
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/predict", json=xs.tolist())
            assert response.status == 200, await response.text()
            return (await response.json())["predictions"]

    answers = asyncio.run(body())
    with torch.no_grad():
        want = model(xs)
    assert all(set(a) == {"prediction", "degraded", "latency_ms"} for a in answers), answers[0]
    for answer, box in zip(answers, want, strict=True):
        assert not answer["degraded"], "with a long decode grace every original answer arrives"
        np.testing.assert_allclose(answer["prediction"], box.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shift,accuracy", [(0.0, 1.0), (0.5, 0.0)])
def test_load_generator_scores_boxes_by_iou(shift: float, accuracy: float) -> None:
    boxes = torch.nn.Linear(int(np.prod(SHAPE)), 4)
    model = torch.nn.Sequential(torch.nn.Flatten(), boxes, torch.nn.Sigmoid())
    insts = [FakeInstance(f"model-{i}", "model", model, lambda n: 0.001) for i in range(2)]
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (4,))
    frontend = Frontend(InstancePool(insts), code, FrontendConfig(policy="plain"))
    queries = torch.randn(12, *SHAPE)
    with torch.no_grad():
        truth = model(queries).numpy() + shift  # F's own boxes (IoU 1), or boxes moved off them

    async def body():  # noqa: ANN202
        try:
            return await run_poisson(frontend, queries, rate_hz=2000, seed=0)
        finally:
            await frontend.close()

    result = asyncio.run(body())
    assert result.outputs.shape == (12, 4)
    summary = result.summary(truth, task="regression")
    assert summary["lost"] == 0 and summary["accuracy"] == accuracy
