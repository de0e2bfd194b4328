"""The Trainer every stage fits with: loggers and callbacks from their config groups, device placement."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar

from parm.devices import hydra_job, place_job, sweep_identity
from parm.lit import ThroughputMonitor


def make_trainer(cfg: DictConfig, out_dir: Path, monitor: str, **overrides: Any) -> pl.Trainer:
    """The configured Trainer, logging under ``out_dir``, with the ``callbacks`` group's callbacks.

    Args:
        cfg: the composed train config.
        out_dir: the stage's run folder (logs; checkpoints under ``out_dir/checkpoints``).
        monitor: the validation metric a ModelCheckpoint with ``monitor: null`` keeps the best of.
        **overrides: Trainer arguments that win over ``cfg.trainer`` (and over the job's device placement).
    """
    loggers = [instantiate(node, save_dir=str(out_dir), **_run_identity(node))
               for node in (cfg.logger or {}).values()]
    job_num, parallel_jobs = hydra_job()
    placement = place_job(str(cfg.trainer.get("accelerator", "auto")), cfg.trainer.get("devices", 1), job_num,
                          parallel_jobs, jobs_per_gpu=int(OmegaConf.select(cfg, "jobs_per_gpu", default=1)))
    if placement is not None:
        overrides = {**placement.trainer_kwargs(), **overrides}
        if placement.threads:
            torch.set_num_threads(placement.threads)
    progress = bool(overrides.get("enable_progress_bar", cfg.trainer.get("enable_progress_bar", True)))
    callbacks = build_callbacks(cfg, out_dir, monitor, progress=progress)
    if not any(isinstance(callback, ModelCheckpoint) for callback in callbacks):
        # Checkpoints are the callbacks group's to choose: without one, Lightning would add its own.
        overrides.setdefault("enable_checkpointing", False)
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(out_dir),
                       **overrides)


def build_callbacks(cfg: DictConfig, out_dir: Path, monitor: str, progress: bool = True) -> list[pl.Callback]:
    """The ``callbacks`` config group's callbacks, in config order.

    A ModelCheckpoint's null ``dirpath``/``monitor`` become ``out_dir/checkpoints`` and ``monitor``;
    progress bars are left out when ``progress`` is false (Lightning refuses a bar it was told not to draw).
    """
    callbacks: list[pl.Callback] = []
    for name, node in (OmegaConf.select(cfg, "callbacks", default=None) or {}).items():
        if node is None:  # `~callbacks.progress` or `callbacks.progress=null` removes one
            continue
        target = get_class(str(node.get("_target_", "")))
        if not issubclass(target, pl.Callback):
            raise TypeError(f"callbacks.{name} builds {target.__name__}, which is not a Lightning Callback. "
                            f"Give it a pytorch_lightning.Callback _target_ or remove it (~callbacks.{name}).")
        if issubclass(target, ProgressBar) and not progress:
            continue
        filled = {}
        if issubclass(target, ModelCheckpoint):
            filled = {key: value for key, value in (("dirpath", str(out_dir / "checkpoints")), ("monitor", monitor))
                      if node.get(key) is None}
        callbacks.append(instantiate(node, **filled))
    return callbacks


def throughput_monitor(trainer: pl.Trainer) -> ThroughputMonitor:
    """The trainer's :class:`ThroughputMonitor` (the summary's train seconds and samples/s)."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, ThroughputMonitor):
            return callback
    raise ValueError("the Trainer has no parm.lit.ThroughputMonitor callback, which the run summary reads. "
                     "Keep callbacks.throughput in the callbacks config (callbacks=default or callbacks=bench).")


def best_checkpoint(trainer: pl.Trainer) -> str:
    """Path of the best checkpoint so far, "" when none was kept (no ModelCheckpoint, or no validation ran)."""
    callback = trainer.checkpoint_callback
    return callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""


def fit_and_test(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule,
                 ckpt_path: str | None = None) -> dict[str, float]:
    """Fit, then test the best checkpoint (the last weights when none was kept); the test metrics."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    best = best_checkpoint(trainer)
    # Testing with ckpt_path="best" also leaves the best weights in the module for export.
    results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    return {key: float(value) for key, value in results[0].items()} if results else {}


def close_runs(trainer: pl.Trainer) -> None:
    """End W&B runs: F's and F_P's trainings in one process are two runs, not one."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
            logger.experiment.finish()  # type: ignore[attr-defined]


def log_overall_table(trainer: pl.Trainer, overall: dict[str, float], name: str) -> None:
    """The A_o(f_u) curve as one W&B table (f_u, A_o), beside the scalar ``test/overall_*@f_u`` values."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero and overall:
            import wandb

            rows = [[float(f_u), float(value)] for f_u, value in sorted(overall.items(), key=lambda kv: float(kv[0]))]
            logger.experiment.log({f"test/{name}_table": wandb.Table(columns=["f_u", name], data=rows)})  # type: ignore[attr-defined]


def silence_false_alarms() -> None:
    """Warnings that say nothing about the user's run, matched by their text so that others still show."""
    # F is frozen in eval mode on purpose (ParityModule.train keeps it there).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Lightning's own use of a torch pytree API that torch 2.13 deprecates; nothing a user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def _run_identity(node: DictConfig) -> dict[str, str]:
    """W&B ``group``/``name`` left null in the config: the sweep folder and the job's overrides."""
    if not str(node.get("_target_", "")).endswith("WandbLogger"):
        return {}
    sweep_dir, job_name = sweep_identity()
    filled = {"group": sweep_dir or "single-runs", "name": job_name}
    return {key: value for key, value in filled.items() if node.get(key) is None and value}
