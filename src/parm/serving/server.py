"""Assemble a server from plain settings: local workers, a frontend, the HTTP API."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from parm.coding import Code
from parm.serving.frontend import Frontend, FrontendConfig
from parm.serving.http import PredictionService
from parm.serving.instance import InstancePool
from parm.serving.local import LocalBackend

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


def build_app(base: str, parity: str | None, model_instances: int, parity_instances: int,
              frontend: Mapping[str, Any] | None = None, worker: Mapping[str, Any] | None = None,
              capacity: int = 64, max_batch: int = 64, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, backend: str = "local",
              ray_address: str | None = None, ray: Mapping[str, Any] | None = None) -> web.Application:
    """The aiohttp application; workers start with the app and stop with it.

    Args:
        base: F's model file (``base.pt``).
        parity: the parity artifact (``parity.pt``); its code sets k, r and the input shape. Needed
            for ``policy=parm``.
        model_instances, parity_instances: instance counts.
        frontend: :class:`FrontendConfig` fields.
        worker: :class:`~parm.serving.worker.WorkerSpec` fields (``max_batch``, ``service_time_s``).
        capacity: outstanding requests per instance before dispatch waits.
        max_batch: most queries per HTTP request.
        mean, std: normalisation of ``uint8`` inputs; by default the one stored with F by train.py.
        backend: ``"local"`` (worker processes on this machine) or ``"ray"`` (Ray Serve deployments,
            ``pip install 'parity-models[ray]'``).
        ray_address: ``backend="ray"``: a running cluster to join; None starts one on 127.0.0.1.
        ray: ``backend="ray"``: :class:`~parm.serving.rayserve.RaySettings` fields (``actor_options``
            with ``num_cpus``/``num_gpus``/``resources``, ``spread``, health-check periods, ``loopback``).
            Each instance is one replica, so ``model_instances``/``parity_instances`` are the replica counts.

    Raises:
        ValueError: unknown backend, or ``policy=parm`` without a parity artifact.
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"serve.backend must be 'local' or 'ray', got {backend!r}.")
    config = FrontendConfig(**dict(frontend or {}))
    code, input_shape, stored, task = _read_model_files(base, parity, config.policy)
    mean = stored.get("mean") if mean is None else mean
    std = stored.get("std") if std is None else std
    if config.policy != "parm":
        parity_instances = 0
    r = code.spec.r if code is not None else 1
    instances = _instances(backend, base, parity, model_instances, parity_instances, r, ray_address, worker, ray)
    pool = InstancePool(instances.instances, capacity)
    if backend == "ray":
        instances.on_change.append(pool.notify)  # a replica back up wakes dispatchers waiting for one
    service = PredictionService(Frontend(pool, code, config), input_shape, max_batch=max_batch, mean=mean, std=std,
                                task=task)
    app = service.app()

    async def lifecycle(app: web.Application):  # noqa: ANN202 - aiohttp cleanup context
        log.info("starting %d %s instances", len(instances.instances), backend)
        await instances.start()
        yield
        await service.frontend.close()
        await instances.stop()

    app.cleanup_ctx.append(lifecycle)
    app["service"] = service
    return app


def _read_model_files(base: str, parity: str | None,
                      policy: str) -> tuple[Code | None, tuple[int, ...], dict[str, Any], str]:
    """The code (from parity.pt), the query shape, F's stored input normalisation and its task."""
    from parm.models.checkpoint import load_model

    _, header = load_model(base)
    meta = header.get("meta") or {}
    # train.py records the query shape in base.pt's meta; parm's own architectures also take it as an argument.
    shape = meta.get("input_shape") or header["spec"].get("input_shape")
    if shape is None and parity is None:
        raise ValueError(f"{base} records no input shape (F's constructor takes none); serve the base.pt of a "
                         f"train.py run, which records it, or pass serve.parity=<run>/parity.pt.")
    input_shape = tuple(shape or ())
    normalization = dict(meta.get("normalization") or {})
    task = str(meta.get("task") or "classification")  # F's files from before tasks existed are classifiers
    if parity is None:
        if policy == "parm":
            raise ValueError("policy 'parm' needs serve.parity=<path to parity.pt>.")
        return None, input_shape, normalization, task
    from parm.artifacts import load_parity

    artifact = load_parity(parity, base=base)  # a Learning-a-Code artifact's parity instances run this F
    return artifact.code, artifact.input_shape, normalization, task


def _instances(backend: str, base: str, parity: str | None, model_instances: int, parity_instances: int, r: int,
               ray_address: str | None, worker: Mapping[str, Any] | None, ray: Mapping[str, Any] | None) -> Any:
    """Model and parity instances as local worker processes or Ray Serve deployments."""
    if backend == "ray":
        from parm.serving.rayserve import RayBackend, RaySettings

        return RayBackend.for_code(base, parity, model_instances, parity_instances, r=r, address=ray_address,
                                   settings=RaySettings(**dict(ray or {})), **dict(worker or {}))
    return LocalBackend.for_code(base, parity, model_instances, parity_instances, r=r, **dict(worker or {}))


def serve(host: str = LOOPBACK, port: int = 8080, **kwargs: Any) -> None:
    """Build the app and serve it until interrupted. Binds loopback unless ``host`` says otherwise."""
    if host != LOOPBACK:
        log.warning("binding %s: the API is reachable beyond this machine", host)
    web.run_app(build_app(**kwargs), host=host, port=port, print=log.info)
