"""Every config option composes; every experiment file runs one batch on tiny data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import TINY, compose_train, run_train
from parm.pipeline import conf_dir

GROUPS = ("data", "model", "parity_model", "code", "optimizer", "scheduler", "trainer", "logger", "callbacks",
          "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in _options(g)])
def test_every_option_composes(tmp_path: Path, override: str) -> None:
    cfg = compose_train(tmp_path, tmp_path, [override])
    # Everything but the fields the pipeline fills from the data resolves.
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert container["code"]["k"] == cfg.k


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_runs_one_batch(tmp_path: Path, tiny_data_dir: Path, experiment: str) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data_dir)  # the image-folder module writes its cache next to the data
    summary = run_train(tmp_path, data_dir, [f"experiment={experiment}", *TINY, "trainer.limit_train_batches=1",
                                             "data.eval_groups_per_batch=4"])
    assert summary["stage"] == "parity"
    assert 0.0 <= summary["test"]["degraded_acc"] <= 1.0
