"""Composing the training config in tests, as `python train.py ...` would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from parm.pipeline import compose

# One batch of everything: configs run in seconds on tiny data.
TINY = [
    "trainer.max_epochs=1", "base.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
    "data.eval_groups_per_batch=8", "data.val_size=20", "data.groups_per_batch=4", "base.batch_size=16",
    "logger=csv",
]


def compose_train(tmp: Path, data_dir: Path, overrides: list[str] | tuple[str, ...] = (),
                  run_name: str = "run") -> DictConfig:
    """The train config with the run folder ``tmp/run_name`` and the F cache ``tmp/cache``."""
    return compose([f"output_dir={tmp / run_name}", f"data_dir={data_dir}", f"cache_dir={tmp / 'cache'}", *overrides])


def run_train(tmp: Path, data_dir: Path, overrides: list[str] | tuple[str, ...] = (),
              run_name: str = "run") -> dict[str, Any]:
    from parm.pipeline import run

    return run(compose_train(tmp, data_dir, overrides, run_name))
