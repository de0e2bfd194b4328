"""What ``train.py`` runs: stage ``base`` trains F, stage ``parity`` trains F_P for a frozen F.

Kept apart from the thin Hydra entry point so tests and scripts call :func:`run` with a composed
config. Everything is built from the config with ``hydra.utils.instantiate`` except coders, which are
chosen by registered name through :func:`parm.coding.build_code`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from parm.artifacts import base_as_parity, code_record, save_parity, uses_base
from parm.coding import Code, CodeSpec, build_code
from parm.data.base import TensorDataModule
from parm.devices import hydra_job, place_job, sweep_identity
from parm.lit import BaseModule, HostProgressBar, ParityModule, ThroughputMonitor
from parm.lit.parity import compile_mode
from parm.models.checkpoint import build_from_spec, load_model, save_model
from parm.report import format_table, write_summary
from parm.tasks import Task, get_task

# Data settings that shape batches, not the data itself: F does not depend on them.
_BATCHING_KEYS = ("group_size", "groups_per_batch", "eval_groups_per_batch", "group_order")
STAGES = ("base", "parity")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured stage and return its summary (also written to ``summary.json``)."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {cfg.stage!r}. Use stage=base or stage=parity.")
    started = time.perf_counter()
    _silence_false_alarms()
    pl.seed_everything(cfg.seed, workers=True)
    threads = OmegaConf.select(cfg, "threads", default=None)
    if threads:
        torch.set_num_threads(int(threads))
    out_dir = Path(cfg.output_dir)
    datamodule: TensorDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    task = resolve_task(cfg, datamodule)
    model_spec = _model_spec(cfg.model, datamodule.input_shape, num_outputs(datamodule))
    if cfg.stage == "base":
        summary = _base_summary(cfg, task, *train_base(cfg, model_spec, out_dir))
    else:
        summary = train_parity(cfg, datamodule, model_spec, out_dir)
    summary["task"] = task.name
    summary["timing"]["total_seconds"] = time.perf_counter() - started
    summary["config"] = OmegaConf.to_container(cfg, resolve=True)
    if getattr(rank_zero_only, "rank", 0) == 0:  # under DDP every process gets here with the same (synced) results
        print(format_table(summary))
        summary["summary_path"] = str(write_summary(out_dir, summary))
    return summary


def resolve_task(cfg: DictConfig, datamodule: TensorDataModule) -> Task:
    """The task the data's targets make (:mod:`parm.tasks`); a ``task=`` in the config must agree with it."""
    task = get_task(datamodule.task)
    wanted = OmegaConf.select(cfg, "task", default=None)
    if wanted is not None and get_task(wanted) is not task:
        raise ValueError(f"task={wanted} does not fit {type(datamodule).__name__}, whose targets make it a "
                         f"{task.name} task. Drop task= (the data decides it) or choose data of that task "
                         f"(data=localization for regression).")
    return task


def num_outputs(datamodule: TensorDataModule) -> int:
    """F's outputs per sample: the datamodule's ``output_shape`` (``(num_classes,)`` or ``(4,)``), which must be 1-D."""
    shape = tuple(datamodule.output_shape)
    if len(shape) != 1:
        raise ValueError(f"{type(datamodule).__name__} has output_shape {shape}; parm's models and codes need "
                         f"vector outputs (D,). Flatten the targets in the datamodule.")
    return int(shape[0])


def _model_spec(node: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """A model config node with the data's shapes filled in, as plain builtins (``num_classes``: outputs)."""
    node = node.copy()
    with open_dict(node):
        node.input_shape = list(input_shape)
        node.num_classes = int(num_classes)
    spec = OmegaConf.to_container(node, resolve=True)
    assert isinstance(spec, dict)
    return {str(key): value for key, value in spec.items()}


def _silence_false_alarms() -> None:
    """Warnings that say nothing about the user's run, matched by their text so that others still show."""
    # F is frozen in eval mode on purpose (ParityModule.train keeps it there).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Lightning's own use of a torch pytree API that torch 2.13 deprecates; nothing a user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


def make_trainer(cfg: DictConfig, out_dir: Path, monitor: str, **overrides: Any) -> pl.Trainer:
    """The configured Trainer, logging under ``out_dir``, keeping last and best-by-``monitor``."""
    loggers = [instantiate(node, save_dir=str(out_dir), **_run_identity(node))
               for node in (cfg.logger or {}).values()]
    callbacks = [
        ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=monitor, mode="max",
                        save_last=True),
        ThroughputMonitor(),
    ]
    job_num, parallel_jobs = hydra_job()
    placement = place_job(str(cfg.trainer.get("accelerator", "auto")), cfg.trainer.get("devices", 1), job_num,
                          parallel_jobs, jobs_per_gpu=int(OmegaConf.select(cfg, "jobs_per_gpu", default=1)))
    if placement is not None:
        overrides = {**placement.trainer_kwargs(), **overrides}
        if placement.threads:
            torch.set_num_threads(placement.threads)
    if overrides.get("enable_progress_bar", cfg.trainer.get("enable_progress_bar", True)):
        callbacks.append(HostProgressBar())  # shows the loss without a per-step host sync
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(out_dir),
                       **overrides)


def _run_identity(node: DictConfig) -> dict[str, str]:
    """W&B ``group``/``name`` left null in the config: the sweep folder and the job's overrides."""
    if not str(node.get("_target_", "")).endswith("WandbLogger"):
        return {}
    sweep_dir, job_name = sweep_identity()
    filled = {"group": sweep_dir or "single-runs", "name": job_name}
    return {key: value for key, value in filled.items() if node.get(key) is None and value}


def _fit_and_test(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule,
                  ckpt_path: str | None = None) -> dict[str, float]:
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    best = _best_checkpoint(trainer)
    # Testing with ckpt_path="best" also leaves the best weights in the module for export.
    results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    return {key: float(value) for key, value in results[0].items()} if results else {}


def _base_cache_path(cfg: DictConfig, model_spec: dict[str, Any]) -> Path:
    """Cache location of F, keyed by everything that determines its weights."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data, dict)
    for key in (*_BATCHING_KEYS, "data_dir"):
        data.pop(key, None)
    base = OmegaConf.to_container(cfg.base, resolve=True)
    assert isinstance(base, dict)
    base.pop("ckpt", None)
    key = json.dumps({"data": data, "model": model_spec, "base": base, "seed": cfg.seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = str(model_spec["_target_"]).rsplit(".", 1)[-1].lower()
    return Path(cfg.cache_dir) / "base" / f"{name}-{digest}.pt"


def train_base(cfg: DictConfig, model_spec: dict[str, Any], out_dir: Path,
               save_to: Path | None = None) -> tuple[Path, dict[str, float], ThroughputMonitor]:
    """Train F with its task's loss (cross-entropy, or MSE for boxes) and save it as a parm model file
    (``base.pt`` unless ``save_to``)."""
    datamodule = instantiate(cfg.data, group_size=1, groups_per_batch=cfg.base.batch_size)
    task = resolve_task(cfg, datamodule)
    model = build_from_spec(model_spec)
    scheduler = instantiate(cfg.base.scheduler) if cfg.base.scheduler else None
    module = BaseModule(model, instantiate(cfg.base.optimizer), scheduler, task=task)
    trainer = make_trainer(cfg, out_dir, monitor=f"val/{task.base_metric}", max_epochs=cfg.base.epochs)
    metrics = _fit_and_test(trainer, module, datamodule)
    path = save_to or out_dir / "base.pt"
    if trainer.is_global_zero:
        # The input normalisation travels with F so a server feeds it what it was trained on.
        normalization = {"mean": datamodule.mean.tolist(), "std": datamodule.std.tolist()}
        save_model(path, module.model, model_spec, meta={"test_acc": metrics.get("test/acc"), "task": task.name,
                                                         "test": _base_test(task, metrics),
                                                         "data": cfg.data._target_, "normalization": normalization})
    trainer.strategy.barrier()  # other ranks load F from this file next
    _close_runs(trainer)
    return path, metrics, _throughput(trainer)


def _best_checkpoint(trainer: pl.Trainer) -> str:
    """Path of the best checkpoint so far, "" when none was kept (e.g. no validation ran)."""
    callback = trainer.checkpoint_callback
    return callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""


def _log_overall_table(trainer: pl.Trainer, overall: dict[str, float], name: str) -> None:
    """The A_o(f_u) curve as one W&B table (f_u, A_o), beside the scalar ``test/overall_*@f_u`` values."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero and overall:
            import wandb

            rows = [[float(f_u), float(value)] for f_u, value in sorted(overall.items(), key=lambda kv: float(kv[0]))]
            logger.experiment.log({f"test/{name}_table": wandb.Table(columns=["f_u", name], data=rows)})  # type: ignore[attr-defined]


def _close_runs(trainer: pl.Trainer) -> None:
    """End W&B runs: F's and F_P's trainings in one process are two runs, not one."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
            logger.experiment.finish()  # type: ignore[attr-defined]


def _throughput(trainer: pl.Trainer) -> ThroughputMonitor:
    return next(cb for cb in trainer.callbacks if isinstance(cb, ThroughputMonitor))  # type: ignore[attr-defined]


def _base_test(task: Task, metrics: dict[str, float]) -> dict[str, float | None]:
    """F's test metrics under their summary names (``available_acc``; ``available_iou``, ``available_miou``)."""
    return {name: metrics.get(f"test/{key}") for key, name in task.summary_keys.items()}


def _base_summary(cfg: DictConfig, task: Task, path: Path, metrics: dict[str, float],
                  monitor: ThroughputMonitor) -> dict[str, Any]:
    return {"stage": "base", "title": f"{cfg.data._target_.rsplit('.', 1)[-1]} {cfg.model._target_.rsplit('.', 1)[-1]}",
            "test": _base_test(task, metrics), "overall": {},
            "timing": {"train_seconds": monitor.seconds, "samples_per_second": monitor.samples_per_second},
            "artifacts": {"base": str(path)}}


def load_or_train_base(cfg: DictConfig, model_spec: dict[str, Any], out_dir: Path) -> tuple[torch.nn.Module, Path]:
    """F from ``base.ckpt``, else from the cache, else trained now and cached."""
    if cfg.base.ckpt:
        path = Path(cfg.base.ckpt)
    else:
        path = _base_cache_path(cfg, model_spec)
        # Parallel sweep jobs needing the same F: one trains it, the others wait and load it. A
        # multi-device run is one job (its ranks train F together), so it takes no lock.
        single_device = cfg.trainer.get("devices", 1) in (1, "1")
        with _file_lock(path.with_suffix(".lock")) if single_device else contextlib.nullcontext():
            if not path.exists():
                print(f"[parm] no base model configured or cached: training F first ({path})")
                train_base(cfg, model_spec, out_dir / "base", save_to=path)
    model, _ = load_model(path, expected_spec=model_spec)
    return model, path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock) held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class ParityParts:
    """Everything :func:`train_parity` builds before fitting (also used by ``scripts/bench_train.py``)."""

    module: ParityModule
    base_path: Path
    parity_models: list[torch.nn.Module]
    parity_spec: dict[str, Any]
    code: Code
    code_kwargs: tuple[dict[str, Any], dict[str, Any]]


def build_parity(cfg: DictConfig, datamodule: TensorDataModule, model_spec: dict[str, Any],
                 out_dir: Path) -> ParityParts:
    """F (loaded or trained first), the code, F_P and the :class:`ParityModule`, as configured."""
    compile_mode(OmegaConf.select(cfg, "parity.compile", default=False))  # settings first, before F is trained
    task = resolve_task(cfg, datamodule)
    task.check_parity_loss(cfg.parity.loss)
    base_model, base_path = load_or_train_base(cfg, model_spec, out_dir)
    # Training F (on a cache miss) draws random numbers that loading it does not: re-seed, so F_P's
    # initialisation, erasures and shuffles are the same whether F was just trained or read from the cache.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    code_cfg = cfg.code
    spec = CodeSpec(int(code_cfg.k), int(code_cfg.r))
    output_shape = (num_outputs(datamodule),)
    encoder_kwargs = OmegaConf.to_container(code_cfg.encoder_kwargs, resolve=True) or {}
    decoder_kwargs = OmegaConf.to_container(code_cfg.decoder_kwargs, resolve=True) or {}
    code = build_code(code_cfg.encoder, code_cfg.decoder, spec, datamodule.input_shape, output_shape,
                      encoder_kwargs, decoder_kwargs)  # type: ignore[arg-type]
    if uses_base(cfg.parity_model):  # Learning-a-Code mode: the frozen F answers the parity queries
        parity_spec, parity_models = base_as_parity(code, datamodule.input_shape, base_model)
    else:
        parity_spec = (_model_spec(cfg.parity_model, code.encoder.parity_shape, output_shape[0])
                       if cfg.parity_model else {**model_spec, "input_shape": list(code.encoder.parity_shape)})
        parity_models = [build_from_spec(parity_spec) for _ in range(spec.r)]
    layouts = {getattr(code.encoder, "grid", None), getattr(parity_models[0], "grid", None)} - {None}
    if len(layouts) > 1:  # a tile-wise parity model must read the tiles where the encoder put them
        raise ValueError(f"the parity model's tile grid {parity_models[0].grid} differs from the encoder's "
                         f"{code.encoder.grid}; set the same fit (code.encoder_kwargs.fit / parity_model.fit).")
    if cfg.parity.init_from_base:
        for model in parity_models:
            model.load_state_dict(base_model.state_dict())
    fast = fast_path_options(cfg, base_model)
    if fast["channels_last"]:
        for model in (base_model, *parity_models):
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    cache = cfg.parity.cache_targets
    module = ParityModule(
        base_model, parity_models, code, optimizer=instantiate(cfg.optimizer, lr=scaled_lr(cfg)),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None, loss=cfg.parity.loss, task=task,
        default_answer=task.default_answer(datamodule.split("train")[1]),
        cache_targets=(not datamodule.augment) if cache == "auto" else bool(cache),
        fractions=tuple(cfg.parity.fractions), max_eval_patterns=cfg.parity.max_eval_patterns, **fast,
    )
    return ParityParts(module, base_path, parity_models, parity_spec, code,  # type: ignore[arg-type]
                       (encoder_kwargs, decoder_kwargs))  # type: ignore[arg-type]


def fast_path_options(cfg: DictConfig, base_model: torch.nn.Module) -> dict[str, Any]:
    """``compile``, ``channels_last`` and ``precompute_targets`` for :class:`ParityModule`.

    ``parity.channels_last: auto`` turns it on for convolutional networks trained on CUDA, where
    tensor-core convolutions want NHWC; on CPU it only costs layout conversions.
    """
    channels_last = OmegaConf.select(cfg, "parity.channels_last", default="auto")
    if channels_last == "auto":
        on_cuda = str(cfg.trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
        channels_last = on_cuda and any(isinstance(m, torch.nn.Conv2d) for m in base_model.modules())
    return {"compile": compile_mode(OmegaConf.select(cfg, "parity.compile", default=False)) or False,
            "channels_last": bool(channels_last),
            "precompute_targets": bool(OmegaConf.select(cfg, "parity.precompute_targets", default=True))}


LR_SCALINGS = ("none", "linear", "sqrt")


def scaled_lr(cfg: DictConfig) -> float:
    """The optimizer's lr under ``parity.lr_scaling`` for ``data.groups_per_batch`` groups per batch.

    ``linear`` (Goyal et al.) or ``sqrt`` scaling from ``parity.lr_base_batch`` groups (the reference's
    64), so a large GPU batch keeps the reference's per-sample step size; ``none`` keeps ``optimizer.lr``.
    """
    rule = OmegaConf.select(cfg, "parity.lr_scaling", default="none")
    if rule not in LR_SCALINGS:
        raise ValueError(f"parity.lr_scaling must be one of {LR_SCALINGS}, got {rule!r}.")
    lr = float(cfg.optimizer.lr)
    ratio = int(cfg.data.groups_per_batch) / int(OmegaConf.select(cfg, "parity.lr_base_batch", default=64))
    return lr * {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[rule]


def train_parity(cfg: DictConfig, datamodule: TensorDataModule, model_spec: dict[str, Any],
                 out_dir: Path) -> dict[str, Any]:
    """Train F_P for a frozen F, test the best checkpoint, export ``parity.pt``."""
    parts = build_parity(cfg, datamodule, model_spec, out_dir)
    code, spec = parts.code, parts.code.spec
    trainer = make_trainer(cfg, out_dir, monitor=f"val/{parts.module.task.parity_monitor}")
    metrics = _fit_and_test(trainer, parts.module, datamodule, ckpt_path=cfg.ckpt_path)
    parity_path = out_dir / "parity.pt"
    if trainer.is_global_zero:
        save_parity(parity_path, parts.parity_models, parts.parity_spec, code, code_record(code, *parts.code_kwargs),
                    datamodule.input_shape, (num_outputs(datamodule),),
                    meta={"base": str(parts.base_path), "test": metrics})
    test = {key.removeprefix("test/"): value for key, value in metrics.items() if key.startswith("test/")}
    # A_o(f_u): overall_acc@{f_u}, or overall_iou@{f_u} for boxes.
    overall = {key.split("@", 1)[1]: test.pop(key) for key in list(test) if key.startswith("overall_") and "@" in key}
    monitor = _throughput(trainer)
    for logger in trainer.loggers:  # throughput next to the test metrics (W&B run summary, CSV, ...)
        logger.log_metrics({"train/samples_per_second": monitor.samples_per_second,
                            "train/seconds": monitor.seconds}, step=trainer.global_step)
        logger.save()
    _log_overall_table(trainer, overall, parts.module.task.degraded_key.replace("degraded", "overall"))
    _close_runs(trainer)
    return {
        "stage": "parity",
        "title": f"{type(datamodule).__name__} k={spec.k} r={spec.r} {code.names[0]}/{code.names[1]}",
        "test": test, "overall": overall,
        "timing": {"train_seconds": monitor.seconds, "samples_per_second": monitor.samples_per_second,
                   "groups_per_second": monitor.samples_per_second / spec.k,
                   "target_precompute_seconds": parts.module.target_seconds},
        "artifacts": {"base": str(parts.base_path), "parity": str(parity_path),
                      "best_ckpt": _best_checkpoint(trainer)},
    }
