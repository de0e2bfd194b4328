"""The serving benchmarks' checkpoints come from the pipeline and their queries from parm.data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import TINY
from parm.bench.serving import from_run, serving_queries, train_pair
from parm.models.checkpoint import load_model


def test_train_pair_runs_the_pipeline_once_per_k_and_shares_f(tmp_path: Path, tiny_data_dir: Path) -> None:
    own = ("trainer.max_epochs", "base.epochs", "trainer.enable_progress_bar", "logger")
    tiny = tuple(o for o in TINY if o.split("=")[0] not in own)
    overrides = (f"data_dir={tiny_data_dir}", f"cache_dir={tmp_path / 'cache'}", *tiny)
    base2, parity2 = train_pair(tmp_path, 2, epochs=1, base_epochs=1, overrides=overrides)
    base4, parity4 = train_pair(tmp_path, 4, epochs=1, base_epochs=1, overrides=overrides)
    assert parity2 != parity4
    # One cached F serves every k: each run folder holds its own copy of the same weights.
    f2, f4 = load_model(base2)[0].state_dict(), load_model(base4)[0].state_dict()
    assert f2.keys() == f4.keys() and all(torch.equal(f2[key], f4[key]) for key in f2)
    assert (base2, parity2) == train_pair(tmp_path, 2, overrides=overrides)  # reused, not retrained
    assert from_run(tmp_path / "run_k4_r1") == (base4, parity4)
    x, y = serving_queries(base2, 16, seed=0, data_dir=str(tiny_data_dir))
    _, header = load_model(base2)
    mean = header["meta"]["normalization"]["mean"][0]
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (16,)
    assert abs(float(x.mean()) + mean / header["meta"]["normalization"]["std"][0]) < 3  # normalised, not raw pixels
    with pytest.raises(ValueError, match="test split holds .*; ask for fewer"):
        serving_queries(base2, 10**6, seed=0, data_dir=str(tiny_data_dir))


def test_a_directory_that_is_no_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="must be a train.py output directory"):
        from_run(tmp_path)
