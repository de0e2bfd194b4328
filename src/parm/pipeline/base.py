"""Stage ``base``: train F, save it as a parm model file; and F for stage ``parity``: given, cached or trained."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from parm.base_model import check_accuracy, load_base, recorded_accuracy, validation_accuracy
from parm.data.base import TensorDataModule
from parm.lit import BaseModule, ThroughputMonitor
from parm.models.checkpoint import build_from_spec, save_model
from parm.models.deployed import STANDARDIZED, check_transform, describe_transform
from parm.pipeline.config import resolve_task
from parm.pipeline.store import base_cache_path, file_lock
from parm.pipeline.trainer import close_runs, fit_and_test, make_trainer, throughput_monitor
from parm.tasks import Task


def base_datamodule(cfg: DictConfig) -> TensorDataModule:
    """The configured data served one sample per group, ``base.batch_size`` per batch, as F trains on it."""
    datamodule = instantiate(cfg.data, group_size=1, groups_per_batch=cfg.base.batch_size)
    try:
        datamodule.setup("fit")
    except ValueError as e:
        if "fewer than one batch" not in str(e):
            raise
        # The datamodule speaks of its own groups_per_batch; for F that is base.batch_size.
        raise ValueError(f"{e} For F the batch is base.batch_size={cfg.base.batch_size} samples: lower "
                         f"base.batch_size.".replace(" Lower groups_per_batch.", "")) from e
    return datamodule


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


def load_or_train_base(cfg: DictConfig, model_spec: dict[str, Any], out_dir: Path,
                       datamodule: TensorDataModule | None = None) -> tuple[torch.nn.Module, Path]:
    """F from ``base.ckpt`` (any file F comes in), else from the F store, else trained now and stored.

    F is put behind its input transform (``base.input_transform``), its validation accuracy is checked
    (loudly reported when near chance or far below what its file records), and it is written to the run
    folder as ``out_dir/base.pt``, the file serving reads.

    Returns:
        ``(F, out_dir/base.pt)``; F reads parm's standardised input.
    """
    transform = OmegaConf.select(cfg, "base.input_transform", default=STANDARDIZED)
    if cfg.base.ckpt:
        path = Path(cfg.base.ckpt)
    else:
        if check_transform(transform) != STANDARDIZED:
            raise ValueError(f"base.input_transform={describe_transform(check_transform(transform))} describes a "
                             f"given F (base.ckpt=...); an F that parm trains reads parm's standardised input. "
                             f"Drop base.input_transform or set base.ckpt.")
        path = base_cache_path(cfg, model_spec)
        # A multi-device run is one job (its ranks train F together), so it takes no lock.
        single_device = cfg.trainer.get("devices", 1) in (1, "1")
        with file_lock(path.with_suffix(".lock")) if single_device else contextlib.nullcontext():
            if not path.exists():
                print(f"[parm] no base model configured or cached: training F first ({path})")
                train_base(cfg, model_spec, out_dir / "base", save_to=path)
    datamodule = datamodule or instantiate(cfg.data)
    datamodule.setup("fit")
    model, header = load_base(path, model_spec, transform, datamodule.mean, datamodule.std)
    stored = header.get("meta")
    meta: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    if datamodule.task == "classification" and OmegaConf.select(cfg, "base.check_accuracy", default=True):
        _report_accuracy(model, datamodule, meta, transform)
    run_copy = out_dir / "base.pt"
    # The run folder holds every artifact serving reads: F (with its input transform) beside parity.pt.
    # Every DDP rank writes the same bytes atomically (temp file, rename), so none reads a partial file.
    save_model(run_copy, model, header["spec"], meta={**meta, "source": str(path), "normalization": {
        "mean": datamodule.mean.tolist(), "std": datamodule.std.tolist()}, "net_spec": header["net_spec"],
        "input_shape": list(datamodule.input_shape), "task": datamodule.task})
    return model, run_copy


def _report_accuracy(model: torch.nn.Module, datamodule: TensorDataModule, meta: dict[str, Any],
                     transform: Any) -> None:
    """F's validation accuracy, printed; a loud warning when it is near chance or far below its record."""
    x, y = datamodule.split("val")
    accuracy = validation_accuracy(model, x, y, datamodule.normalize)
    recorded = recorded_accuracy(meta)
    print(f"[parm] F's validation accuracy: {accuracy:.4f}" + (f" (its file records {recorded:.4f} on test)"
                                                              if recorded is not None else ""))
    problem = check_accuracy(accuracy, datamodule.num_classes, recorded, check_transform(transform))
    if problem:
        banner = "!" * 100
        print(f"{banner}\n[parm] WARNING: {problem}\n{banner}", flush=True)
        warnings.warn(problem, stacklevel=2)
