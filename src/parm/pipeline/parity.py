"""Stage ``parity``: build F, the code, F_P and the :class:`ParityModule`; train, test and export F_P."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from parm import base_model as base_model_lib
from parm.artifacts import base_as_parity, code_record, save_parity, uses_base
from parm.coding import Code, CodeSpec, build_code
from parm.data.base import TensorDataModule
from parm.lit import ParityModule
from parm.lit.coder_schedule import CoderSchedule
from parm.lit.speed import FastPath, compile_mode
from parm.models.checkpoint import build_from_spec
from parm.models.model_files import read_checkpoint
from parm.pipeline.base import load_or_train_base
from parm.pipeline.checks import check_resume, run_identity
from parm.pipeline.config import num_outputs, resolve_task, scaled_lr
from parm.pipeline.trainer import (
    best_checkpoint,
    close_runs,
    fit_and_test,
    log_overall_table,
    make_trainer,
    throughput_monitor,
)


@dataclass
class ParityParts:
    """Everything :func:`train_parity` builds before fitting (benchmarks fit it with their own clocks)."""

    module: ParityModule
    base_path: Path
    parity_models: list[torch.nn.Module]
    parity_spec: dict[str, Any]
    code: Code
    code_kwargs: tuple[dict[str, Any], dict[str, Any]]
    base_source: str = ""  # the file F was read from (base.ckpt or the F store); base_path is the run's copy


def build_parity(cfg: DictConfig, datamodule: TensorDataModule, model_spec: dict[str, Any],
                 out_dir: Path) -> ParityParts:
    """F (loaded or trained first), the code, F_P and the :class:`ParityModule`, as configured."""
    compile_mode(OmegaConf.select(cfg, "parity.compile", default=False))  # refused before F is trained
    task = resolve_task(cfg, datamodule)
    task.check_parity_loss(cfg.parity.loss)
    base_model, base_path = load_or_train_base(cfg, model_spec, out_dir, datamodule)
    # Training F (on a cache miss) draws random numbers that loading it does not: re-seed, so F_P's
    # initialisation, erasures and shuffles are the same whether F was just trained or read from the cache.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    code, code_kwargs = _build_code(cfg, datamodule)
    base_meta = _base_meta(base_path)
    if uses_base(cfg.parity_model):  # Learning-a-Code mode: the frozen F answers the parity queries
        parity_spec, parity_models = base_as_parity(code, datamodule.input_shape, base_model)
    else:
        # F_P: the parity_model group's network, or (parity_model=same) F's own architecture where it can be rebuilt.
        parity_spec = base_model_lib.parity_spec(cfg.parity_model, base_meta.get("net_spec"), datamodule.input_shape,
                                                 code.encoder.parity_shape, num_outputs(datamodule))
        parity_models = [build_from_spec(parity_spec) for _ in range(code.spec.r)]
    layouts = {getattr(code.encoder, "grid", None), getattr(parity_models[0], "grid", None)} - {None}
    if len(layouts) > 1:  # a tile-wise parity model must read the tiles where the encoder put them
        raise ValueError(f"the parity model's tile grid {parity_models[0].grid} differs from the encoder's "
                         f"{code.encoder.grid}; set the same fit (code.encoder_kwargs.fit / parity_model.fit).")
    if cfg.parity.init_from_base and not uses_base(parity_spec):  # F_P = F already in the Learning-a-Code mode
        for model in parity_models:
            model.load_state_dict(base_model_lib.network(base_model).state_dict())
    fast = fast_path(cfg, base_model, augment=datamodule.augment)
    if fast.channels_last:
        for model in (base_model, *parity_models):
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    module = ParityModule(
        base_model, parity_models, code, optimizer=instantiate(cfg.optimizer, lr=scaled_lr(cfg)),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None, loss=cfg.parity.loss, task=task,
        default_answer=task.default_answer(datamodule.split("train")[1]),
        fractions=tuple(cfg.parity.fractions), max_eval_patterns=cfg.parity.max_eval_patterns, fast=fast,
        coder=CoderSchedule(warmup=float(OmegaConf.select(cfg, "parity.coder_warmup", default=0.0)),
                            lr_scale=float(OmegaConf.select(cfg, "parity.coder_lr_scale", default=1.0))),
    )
    module.run_identity = run_identity(code.names, code.spec, base_model, parity_spec)
    return ParityParts(module, base_path, parity_models, parity_spec, code, code_kwargs,
                       str(base_meta.get("source", base_path)))


def _base_meta(base_path: Path) -> dict[str, Any]:
    """The run's ``base.pt`` record: ``net_spec`` (F's own network; None for a compiled program) and
    ``source`` (the file F was read from)."""
    meta = read_checkpoint(base_path, "cpu").get("meta")
    return dict(meta) if isinstance(meta, dict) else {}


def _build_code(cfg: DictConfig, datamodule: TensorDataModule) -> tuple[Code, tuple[dict[str, Any], dict[str, Any]]]:
    """The configured encoder/decoder pair for the data's shapes, and the keyword arguments it was built with."""
    code_cfg = cfg.code
    encoder_kwargs = OmegaConf.to_container(code_cfg.encoder_kwargs, resolve=True) or {}
    decoder_kwargs = OmegaConf.to_container(code_cfg.decoder_kwargs, resolve=True) or {}
    if not isinstance(encoder_kwargs, dict) or not isinstance(decoder_kwargs, dict):
        raise TypeError(f"code.encoder_kwargs and code.decoder_kwargs must be mappings, got "
                        f"{type(encoder_kwargs).__name__} and {type(decoder_kwargs).__name__}.")
    kwargs = ({str(key): value for key, value in encoder_kwargs.items()},
              {str(key): value for key, value in decoder_kwargs.items()})
    code = build_code(code_cfg.encoder, code_cfg.decoder, CodeSpec(int(code_cfg.k), int(code_cfg.r)),
                      datamodule.input_shape, (num_outputs(datamodule),), *kwargs)
    return code, kwargs


def fast_path(cfg: DictConfig, base_model: torch.nn.Module, augment: bool) -> FastPath:
    """The ``parity.*`` speed settings for :class:`ParityModule`, with ``auto`` values decided.

    ``parity.cache_targets: auto`` caches F's outputs unless training inputs are augmented (``augment``);
    ``parity.channels_last: auto`` turns it on for convolutional networks trained on CUDA, where
    tensor-core convolutions want NHWC; on CPU it only costs layout conversions.
    """
    channels_last = OmegaConf.select(cfg, "parity.channels_last", default="auto")
    cache = OmegaConf.select(cfg, "parity.cache_targets", default="auto")
    return FastPath(compile=compile_mode(OmegaConf.select(cfg, "parity.compile", default=False)) or False,
                    channels_last=(_wants_channels_last(cfg, base_model) if channels_last == "auto"
                                   else bool(channels_last)),
                    cache_targets=(not augment) if cache == "auto" else bool(cache),
                    precompute_targets=bool(OmegaConf.select(cfg, "parity.precompute_targets", default=True)))


def _wants_channels_last(cfg: DictConfig, base_model: torch.nn.Module) -> bool:
    on_cuda = str(cfg.trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return on_cuda and any(isinstance(m, torch.nn.Conv2d) for m in base_model.modules())


def train_parity(cfg: DictConfig, datamodule: TensorDataModule, model_spec: dict[str, Any],
                 out_dir: Path) -> dict[str, Any]:
    """Train F_P for a frozen F, test the best checkpoint, export ``parity.pt``; the stage's summary."""
    parts = build_parity(cfg, datamodule, model_spec, out_dir)
    code, spec = parts.code, parts.code.spec
    if cfg.ckpt_path:
        check_resume(cfg.ckpt_path, parts.module.run_identity or {})
    trainer = make_trainer(cfg, out_dir, monitor=f"val/{parts.module.task.parity_monitor}")
    metrics = fit_and_test(trainer, parts.module, datamodule, ckpt_path=cfg.ckpt_path)
    parity_path = out_dir / "parity.pt"
    if trainer.is_global_zero:
        save_parity(parity_path, parts.parity_models, parts.parity_spec, code, code_record(code, *parts.code_kwargs),
                    datamodule.input_shape, (num_outputs(datamodule),),
                    meta={"base": str(parts.base_path), "test": metrics})
    test = {key.removeprefix("test/"): value for key, value in metrics.items() if key.startswith("test/")}
    # A_o(f_u): overall_acc@{f_u}, or overall_iou@{f_u} for boxes.
    overall = {key.split("@", 1)[1]: test.pop(key) for key in list(test) if key.startswith("overall_") and "@" in key}
    monitor = throughput_monitor(trainer)
    for logger in trainer.loggers:  # throughput next to the test metrics (W&B run summary, CSV, ...)
        logger.log_metrics({"train/samples_per_second": monitor.samples_per_second,
                            "train/seconds": monitor.seconds}, step=trainer.global_step)
        logger.save()
    log_overall_table(trainer, overall, parts.module.task.degraded_key.replace("degraded", "overall"))
    close_runs(trainer)
    return {
        "stage": "parity",
        "title": f"{type(datamodule).__name__} k={spec.k} r={spec.r} {code.names[0]}/{code.names[1]}",
        "test": test, "overall": overall,
        "timing": {"train_seconds": monitor.seconds, "samples_per_second": monitor.samples_per_second,
                   "groups_per_second": monitor.samples_per_second / spec.k,
                   "target_precompute_seconds": parts.module.target_seconds},
        "artifacts": {"base": str(parts.base_path), "base_source": parts.base_source, "parity": str(parity_path),
                      "best_ckpt": best_checkpoint(trainer)},
    }
