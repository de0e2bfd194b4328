"""The HTTP API: validation (4xx), metrics, and a real server on loopback with worker processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from serving_fakes import FakeInstance, write_checkpoints

from parm.coding import CodeSpec, build_code
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.http import PredictionService
from parm.serving.instance import InstancePool

SHAPE = (1, 4, 4)
ROOT = Path(__file__).resolve().parents[2]


def _service(linear_f) -> PredictionService:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), SHAPE, (5,))
    insts = [FakeInstance(f"model-{i}", "model", linear_f, lambda n: 0.001) for i in range(2)]
    insts.append(FakeInstance("parity-0", "parity", linear_f, lambda n: 0.001, parity_index=0))
    return PredictionService(Frontend(InstancePool(insts), code, FrontendConfig(group_timeout_s=0.002)), max_batch=4)


async def _with_client(service: PredictionService, body):
    async with TestClient(TestServer(service.app())) as client:
        return await body(client)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize(("payload", "ctype", "status", "message"), [
    (b"", "application/json", 400, "empty body"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (json.dumps({"x": 1}).encode(), "application/json", 400, "'inputs' key"),
    (json.dumps([[1, 2], [3]]).encode(), "application/json", 400, "rectangular"),
    (json.dumps(np.zeros((3, 3)).tolist()).encode(), "application/json", 400, r"expected shape \(1, 4, 4\)"),
    (json.dumps(np.zeros((5, *SHAPE)).tolist()).encode(), "application/json", 413, "1 to 4 queries"),
    (json.dumps([[[float("nan")] * 4] * 4]).encode(), "application/json", 400, "NaN"),
    (_npy(np.zeros(SHAPE, np.int64)), "application/x-npy", 400, "dtype int64 is not accepted"),
    (_npy(np.array([{"a": 1}], dtype=object)), "application/x-npy", 400, "not a valid .npy"),
    (b"\x93NUMPY garbage", "application/x-npy", 400, "not a valid .npy"),
    (b"hello", "text/plain", 415, "unsupported Content-Type"),
])
def test_malformed_requests_get_4xx(linear_f, payload: bytes, ctype: str, status: int, message: str) -> None:
    service = _service(linear_f)

    async def body(client):
        resp = await client.post("/predict", data=payload, headers={"Content-Type": ctype})
        return resp.status, await resp.json()

    got_status, got = asyncio.run(_with_client(service, body))
    assert got_status == status
    assert __import__("re").search(message, got["error"]), got["error"]


def test_predict_json_npy_batch_and_metrics(linear_f) -> None:
    service = _service(linear_f)
    xs = torch.randn(3, *SHAPE)

    async def body(client):
        one = await (await client.post("/predict", json=xs[0].tolist())).json()
        batch = await (await client.post("/predict", data=_npy(xs.numpy()),
                                         headers={"Content-Type": "application/x-npy"})).json()
        health = await client.get("/healthz")
        metrics = await (await client.get("/metrics")).text()
        return one, batch, health.status, metrics

    one, batch, health, metrics = asyncio.run(_with_client(service, body))
    with torch.no_grad():
        want = linear_f(xs)
    np.testing.assert_allclose(one["logits"], want[0].numpy(), rtol=1e-4, atol=1e-4)
    assert one["prediction"] == int(want[0].argmax()) and one["degraded"] in (False, True)
    assert [p["prediction"] for p in batch["predictions"]] == want.argmax(1).tolist()
    assert health == 200
    assert "parm_requests_total 4" in metrics and "parm_degraded_answers_total" in metrics
    assert 'parm_request_latency_seconds_bucket{le="+Inf"} 4' in metrics and "parm_queue_depth 0" in metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_serve_py_binds_loopback_and_answers(tmp_path) -> None:
    base, parity = write_checkpoints(tmp_path)
    port = _free_port()
    cmd = [sys.executable, str(ROOT / "serve.py"), f"serve.base={base}", f"serve.parity={parity}",
           f"serve.port={port}", "serve.model_instances=2", "serve.parity_instances=1",
           f"hydra.run.dir={tmp_path / 'run'}"]
    # The log goes to a file: an undrained pipe fills up and blocks the server mid-request.
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed in finally, after the process
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)  # after a 503 too: polling must not starve the starting server of CPU
        else:
            pytest.fail(f"serve.py did not become healthy: {(tmp_path / 'serve.log').read_text()[-3000:]}")
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        local = [line.split()[3] for line in listening.splitlines()]
        assert local == [f"127.0.0.1:{port}"], listening
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST",
                                     data=json.dumps(np.zeros((2, 1, 28, 28)).tolist()).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            answers = json.loads(resp.read())["predictions"]
        assert len(answers) == 2 and len(answers[0]["logits"]) == 10
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST", data=b"[1, 2]",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=10)
        assert err.value.code == 400
        assert b"parm_requests_total 2" in _get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()


def test_unknown_backend_is_refused() -> None:
    from parm.serving.server import build_app

    with pytest.raises(ValueError, match="serve.backend must be 'local' or 'ray', got 'k8s'"):
        build_app("base.pt", None, 1, 0, frontend={"policy": "plain"}, backend="k8s")
