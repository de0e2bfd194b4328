""":func:`run`: one stage, from a composed config to ``summary.json``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from parm.data.base import TensorDataModule
from parm.pipeline.base import base_datamodule, base_summary, train_base
from parm.pipeline.config import STAGES, model_spec, num_outputs, resolve_task
from parm.pipeline.parity import train_parity
from parm.pipeline.trainer import silence_false_alarms
from parm.report import format_table, write_summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured stage and return its summary (also written to ``output_dir/summary.json``)."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {cfg.stage!r}. Use stage=base or stage=parity.")
    started = time.perf_counter()
    silence_false_alarms()
    pl.seed_everything(cfg.seed, workers=True)
    threads = OmegaConf.select(cfg, "threads", default=None)
    if threads:
        torch.set_num_threads(int(threads))
    out_dir = Path(cfg.output_dir)
    # Stage base reads the data as F trains on it (one sample per group): one datamodule, built once.
    datamodule: TensorDataModule = base_datamodule(cfg) if cfg.stage == "base" else instantiate(cfg.data)
    datamodule.setup("fit")
    task = resolve_task(cfg, datamodule)
    spec = model_spec(cfg.model, datamodule.input_shape, num_outputs(datamodule))
    if cfg.stage == "base":
        summary = base_summary(cfg, task, *train_base(cfg, spec, out_dir, datamodule=datamodule))
    else:
        summary = train_parity(cfg, datamodule, spec, out_dir)
    summary["task"] = task.name
    summary["timing"]["total_seconds"] = time.perf_counter() - started
    summary["config"] = OmegaConf.to_container(cfg, resolve=True)
    if getattr(rank_zero_only, "rank", 0) == 0:  # under DDP every process gets here with the same (synced) results
        print(format_table(summary))
        summary["summary_path"] = str(write_summary(out_dir, summary))
    return summary
