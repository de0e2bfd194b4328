"""Stage ``base``: train F, save it as a parm model file; and F for stage ``parity``: given, cached or trained."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from parm.data.base import TensorDataModule
from parm.lit import BaseModule, ThroughputMonitor
from parm.models.checkpoint import build_from_spec, load_model, save_model
from parm.pipeline.config import resolve_task
from parm.pipeline.store import base_cache_path, file_lock
from parm.pipeline.trainer import close_runs, fit_and_test, make_trainer, throughput_monitor
from parm.tasks import Task


def base_datamodule(cfg: DictConfig) -> TensorDataModule:
    """The configured data served one sample per group, ``base.batch_size`` per batch, as F trains on it."""
    return instantiate(cfg.data, group_size=1, groups_per_batch=cfg.base.batch_size)


def train_base(cfg: DictConfig, model_spec: dict[str, Any], out_dir: Path, save_to: Path | None = None,
               datamodule: TensorDataModule | None = None) -> tuple[Path, dict[str, float], ThroughputMonitor]:
    """Train F with its task's loss (cross-entropy, or MSE for boxes) and save it as a parm model file.

    Args:
        cfg: the composed train config.
        model_spec: F's spec (:func:`parm.pipeline.model_spec`).
        out_dir: the run folder (logs, checkpoints; ``base.pt`` unless ``save_to``).
        save_to: where to write F instead of ``out_dir/base.pt``.
        datamodule: :func:`base_datamodule`'s, when the caller built it already.

    Returns:
        F's path, its test metrics (``test/...``) and the fit's throughput monitor.
    """
    datamodule = datamodule or base_datamodule(cfg)
    task = resolve_task(cfg, datamodule)
    model = build_from_spec(model_spec)
    scheduler = instantiate(cfg.base.scheduler) if cfg.base.scheduler else None
    module = BaseModule(model, instantiate(cfg.base.optimizer), scheduler, task=task)
    trainer = make_trainer(cfg, out_dir, monitor=f"val/{task.base_metric}", max_epochs=cfg.base.epochs)
    metrics = fit_and_test(trainer, module, datamodule)
    path = save_to or out_dir / "base.pt"
    if trainer.is_global_zero:
        # The input normalisation travels with F so a server feeds it what it was trained on.
        normalization = {"mean": datamodule.mean.tolist(), "std": datamodule.std.tolist()}
        save_model(path, module.model, model_spec, meta={"test_acc": metrics.get("test/acc"), "task": task.name,
                                                         "test": base_test(task, metrics),
                                                         "data": cfg.data._target_, "normalization": normalization})
    trainer.strategy.barrier()  # other ranks load F from this file next
    close_runs(trainer)
    return path, metrics, throughput_monitor(trainer)


def base_test(task: Task, metrics: dict[str, float]) -> dict[str, float | None]:
    """F's test metrics under their summary names (``available_acc``; ``available_iou``, ``available_miou``)."""
    return {name: metrics.get(f"test/{key}") for key, name in task.summary_keys.items()}


def base_summary(cfg: DictConfig, task: Task, path: Path, metrics: dict[str, float],
                 monitor: ThroughputMonitor) -> dict[str, Any]:
    """Stage ``base``'s summary (``summary.json``), before the run adds task, timing total and config."""
    return {"stage": "base", "title": f"{cfg.data._target_.rsplit('.', 1)[-1]} {cfg.model._target_.rsplit('.', 1)[-1]}",
            "test": base_test(task, metrics), "overall": {},
            "timing": {"train_seconds": monitor.seconds, "samples_per_second": monitor.samples_per_second},
            "artifacts": {"base": str(path)}}


def load_or_train_base(cfg: DictConfig, model_spec: dict[str, Any], out_dir: Path) -> tuple[torch.nn.Module, Path]:
    """F from ``base.ckpt``, else from the F store (:func:`base_cache_path`), else trained now and stored."""
    if cfg.base.ckpt:
        path = Path(cfg.base.ckpt)
    else:
        path = base_cache_path(cfg, model_spec)
        # A multi-device run is one job (its ranks train F together), so it takes no lock.
        single_device = cfg.trainer.get("devices", 1) in (1, "1")
        with file_lock(path.with_suffix(".lock")) if single_device else contextlib.nullcontext():
            if not path.exists():
                print(f"[parm] no base model configured or cached: training F first ({path})")
                train_base(cfg, model_spec, out_dir / "base", save_to=path)
    model, _ = load_model(path, expected_spec=model_spec)
    return model, path
