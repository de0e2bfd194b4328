"""HTTP API (aiohttp): ``POST /predict``, ``GET /healthz``, ``GET /metrics``.

``/predict`` takes one query ``(*input_shape)`` or a batch ``(n, *input_shape)``, as a JSON list
(or ``{"inputs": [...]}``) or as raw ``.npy`` bytes (``Content-Type: application/x-npy``; never
unpickled). Floats are used as given (the model's normalised input space); ``uint8`` pixels are
scaled to [0, 1] and normalised with ``mean``/``std`` when those are set.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence

import numpy as np
import torch
from aiohttp import web

from parm.serving.frontend import Frontend
from parm.serving.instance import InstanceError
from parm.serving.metrics import LatencyHistogram, render
from parm.tasks import Task, get_task

NPY_TYPES = ("application/x-npy", "application/octet-stream")
FLOAT_DTYPES = ("float16", "float32", "float64")


class BadRequest(ValueError):
    """A request the client must fix; answered 4xx with the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class PredictionService:
    """Binds a :class:`Frontend` to HTTP.

    Args:
        frontend: the frontend (its code fixes the input shape, or pass ``input_shape``).
        input_shape: shape of one query.
        max_batch: most queries per request.
        mean, std: per-channel normalisation applied to ``uint8`` inputs (after scaling to [0, 1]).
        max_body_bytes: request size limit (413 beyond).
        task: what F predicts (:mod:`parm.tasks`); it shapes each answer: the class and the logits for
            ``classification``, the output vector (a box) for ``regression``.
    """

    def __init__(self, frontend: Frontend, input_shape: Sequence[int] | None = None, max_batch: int = 64,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 max_body_bytes: int = 16 * 1024 * 1024, task: str | Task = "classification") -> None:
        shape = input_shape if input_shape is not None else frontend.input_shape
        if shape is None:
            raise ValueError("pass input_shape: the frontend has no code that fixes it.")
        self.frontend = frontend
        self.input_shape = tuple(int(d) for d in shape)
        self.max_batch = max_batch
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1, *[1] * (len(shape) - 1))
        self.std = None if std is None else np.asarray(std, np.float32).reshape(-1, *[1] * (len(shape) - 1))
        self.max_body_bytes = max_body_bytes
        self.task = get_task(task)
        self.latency = LatencyHistogram()
        self.client_errors = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._count_errors])
        app.add_routes([web.post("/predict", self.predict), web.get("/healthz", self.healthz),
                        web.get("/metrics", self.metrics)])
        return app

    @web.middleware
    async def _count_errors(self, request: web.Request, handler):  # noqa: ANN001, ANN202 - aiohttp's signature
        try:
            response = await handler(request)
        except web.HTTPClientError:
            self.client_errors += 1
            raise
        if 400 <= response.status < 500:
            self.client_errors += 1
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        alive = {i.name: i.alive for i in self.frontend.pool.instances}
        ok = any(a for n, a in alive.items() if n in {i.name for i in self.frontend.pool.members("model")})
        return web.json_response({"status": "ok" if ok else "unavailable", "instances": alive},
                                 status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = render(self.frontend, self.latency, self.client_errors)
        return web.Response(text=body, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type": "version=0.0.4"})

    async def predict(self, request: web.Request) -> web.Response:
        try:
            batch, single = self._parse(await request.read(), request.content_type)
        except BadRequest as e:
            return web.json_response({"error": str(e)}, status=e.status)
        if self.frontend.pending + len(batch) > self.frontend.config.max_pending:
            return web.json_response({"error": "the server is at capacity; retry later."}, status=503,
                                     headers={"Retry-After": "1"})
        try:
            answers = await asyncio.gather(*(self.frontend.predict(x) for x in batch))
        except InstanceError as e:
            return web.json_response({"error": f"no instance could answer: {e}"}, status=503)
        out = []
        for a in answers:
            self.latency.observe(a.latency_s)
            out.append({**self.task.answer(a.output), "degraded": a.degraded,
                        "latency_ms": round(a.latency_s * 1e3, 3)})
        return web.json_response(out[0] if single else {"predictions": out})

    def _parse(self, body: bytes, content_type: str) -> tuple[torch.Tensor, bool]:
        """Validate a body into ``(n, *input_shape)`` float32 and whether it was one query."""
        if not body:
            raise BadRequest("empty body; send a JSON list or .npy bytes of shape "
                             f"{self.input_shape} or (n, {', '.join(map(str, self.input_shape))}).")
        if content_type in NPY_TYPES:
            try:
                array = np.load(io.BytesIO(body), allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise BadRequest(f"body is not a valid .npy array (pickled arrays are refused): {e}") from e
        elif content_type == "application/json":
            array = self._from_json(body)
        else:
            raise BadRequest(f"unsupported Content-Type {content_type!r}; use application/json or "
                             f"application/x-npy.", status=415)
        return self._check(array)

    def _from_json(self, body: bytes) -> np.ndarray:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadRequest(f"body is not valid JSON: {e}") from e
        if isinstance(data, dict):
            if "inputs" not in data:
                raise BadRequest(f"a JSON object needs an 'inputs' key; got keys {sorted(data)[:5]}.")
            data = data["inputs"]
        if not isinstance(data, list):
            raise BadRequest(f"inputs must be a (nested) JSON list of numbers, got {type(data).__name__}.")
        try:
            array = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise BadRequest(f"inputs must be a rectangular nested list of numbers: {e}") from e
        return array

    def _check(self, array: np.ndarray) -> tuple[torch.Tensor, bool]:
        shape, n_dims = tuple(array.shape), len(self.input_shape)
        single = shape == self.input_shape
        if not single and not (len(shape) == n_dims + 1 and shape[1:] == self.input_shape):
            raise BadRequest(f"expected shape {self.input_shape} or (n, {', '.join(map(str, self.input_shape))}), "
                             f"got {shape}.")
        if not single and not 1 <= shape[0] <= self.max_batch:
            raise BadRequest(f"a request holds 1 to {self.max_batch} queries, got {shape[0]}.", status=413)
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
            if self.mean is not None and self.std is not None:
                array = (array - self.mean) / self.std
        elif array.dtype.name not in FLOAT_DTYPES:
            raise BadRequest(f"dtype {array.dtype.name} is not accepted; send float32 (normalised) or uint8 pixels.")
        array = np.asarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise BadRequest("inputs contain NaN or infinity.")
        batch = torch.from_numpy(np.ascontiguousarray(array))
        return (batch[None] if single else batch), single
