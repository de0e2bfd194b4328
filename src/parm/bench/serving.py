"""What the serving benchmarks need from training and data: F and F_P through the pipeline, test queries.

``scripts/bench_latency.py`` and ``scripts/policy_map.py`` train their checkpoints with the same
:func:`parm.pipeline.run` as ``train.py`` (F cached once and shared by every k), read a train.py run
directory, and take their test images from :mod:`parm.data`, normalised as F was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def from_run(run: Path) -> tuple[str, str]:
    """``base.pt`` and ``parity.pt`` of a train.py run directory (via its summary.json)."""
    summary = run / "summary.json"
    if not summary.is_file():
        raise FileNotFoundError(f"{summary} not found: a run directory must be a train.py output directory "
                                f"(stage=parity).")
    artifacts = json.loads(summary.read_text()).get("artifacts") or {}
    base, parity = artifacts.get("base"), artifacts.get("parity") or str(run / "parity.pt")
    if not base or not Path(base).is_file() or not Path(parity).is_file():
        raise FileNotFoundError(f"{summary} names base={base!r}, parity={parity!r}; both must exist. "
                                f"Re-run train.py into {run}.")
    return str(base), str(parity)


def train_pair(out: Path, k: int, r: int = 1, seed: int = 0, epochs: int = 5, base_epochs: int = 3,
               overrides: tuple[str, ...] = ()) -> tuple[str, str]:
    """F and its sum/subtraction parity model for (k, r) as ``train.py`` trains them (MNIST MLP by default).

    The run lands in ``out/run_k{k}_r{r}`` and is reused when its summary exists; F comes from the
    pipeline's cache, so every k shares one F.

    Returns:
        ``(base.pt, parity.pt)`` paths.
    """
    from parm.pipeline import compose, run

    run_dir = out / f"run_k{k}_r{r}"
    if (run_dir / "summary.json").is_file():
        return from_run(run_dir)
    cfg = compose([f"output_dir={run_dir}", f"k={k}", f"r={r}", f"seed={seed}", f"trainer.max_epochs={epochs}",
                   f"base.epochs={base_epochs}", "trainer.enable_progress_bar=false", "logger=none", *overrides])
    run(cfg)
    return from_run(run_dir)


def serving_queries(base: str, count: int, seed: int, data: str = "mnist",
                 data_dir: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """``(count, *input_shape)`` test inputs normalised as F was trained, and their ``(count,)`` labels.

    The normalisation is the mean/std ``train.py`` stored in base.pt (``meta["normalization"]``), else
    the training split's own; the order is the data module's seeded shuffle of the test split.
    """
    from parm.data import build_datamodule
    from parm.data.transforms import normalize
    from parm.models.checkpoint import load_model

    _, header = load_model(base)
    stats = (header.get("meta") or {}).get("normalization")
    dm = build_datamodule(data, group_size=1, seed=seed, data_dir=data_dir, val_size=0.1)  # only test is read
    x, y = dm.split("test")
    if count > len(x):
        raise ValueError(f"{count} queries asked for, but the {data} test split holds {len(x)}; ask for fewer.")
    mean, std = (torch.tensor(stats["mean"]), torch.tensor(stats["std"])) if stats else (dm.mean, dm.std)
    return normalize(x[:count], mean, std), y[:count].numpy()
