"""End-to-end training through the composed Hydra config, on tiny data and on real MNIST."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import TINY, compose_train, run_train
from parm.artifacts import load_parity
from parm.models.checkpoint import load_model

SHARED = Path(os.environ.get("PARM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def test_parity_run_writes_summary_artifacts_and_beats_chance(tmp_path: Path, tiny_data_dir: Path) -> None:
    summary = run_train(tmp_path, tiny_data_dir, [*TINY, "trainer.max_epochs=3", "base.epochs=3",
                                                  "trainer.limit_train_batches=null"])
    test = summary["test"]
    assert test["available_acc"] > 0.5
    assert test["degraded_acc"] > 0.2, "sum code on learnable data must beat 10-class chance"
    assert set(summary["overall"]) == {"0.01", "0.05", "0.1", "0.2", "0.5"}
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["test"]["degraded_acc"] == test["degraded_acc"]
    assert on_disk["config"]["k"] == 2 and on_disk["timing"]["samples_per_second"] > 0
    artifact = load_parity(summary["artifacts"]["parity"])
    assert artifact.spec.k == 2 and len(artifact.parity_models) == 1
    base, header = load_model(summary["artifacts"]["base"])
    assert header["spec"]["_target_"] == "parm.models.mlp.MLP"
    assert len(header["meta"]["normalization"]["mean"]) == 1, "a server needs F's input normalisation"
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "run" / "csv" / "metrics.csv").exists()


def test_base_is_cached_and_reused(tmp_path: Path, tiny_data_dir: Path) -> None:
    first = run_train(tmp_path, tiny_data_dir, TINY)
    second = run_train(tmp_path, tiny_data_dir, [*TINY, "k=3", "encoder=concat"])
    assert first["artifacts"]["base_source"] == second["artifacts"]["base_source"], "F must not depend on the code"
    assert Path(first["artifacts"]["base_source"]).is_relative_to(tmp_path / "cache")
    assert first["artifacts"]["base"] == str(tmp_path / "run" / "base.pt")  # the run folder holds F too


def test_stage_base_trains_and_saves_f(tmp_path: Path, tiny_data_dir: Path) -> None:
    summary = run_train(tmp_path, tiny_data_dir, [*TINY, "stage=base", "model=lenet5"])
    model, header = load_model(tmp_path / "run" / "base.pt")
    assert header["spec"]["_target_"] == "parm.models.lenet.LeNet5"
    assert summary["test"]["available_acc"] is not None


@pytest.mark.parametrize("overrides", [
    ["encoder=concat", "k=4"], ["r=2", "k=3"], ["code=learned"], ["parity.loss=kl"], ["logger=tensorboard"],
])
def test_variants_run(tmp_path: Path, tiny_data_dir: Path, overrides: list[str]) -> None:
    summary = run_train(tmp_path, tiny_data_dir, [*TINY, *overrides])
    assert 0.0 <= summary["test"]["degraded_acc"] <= 1.0


def test_last_checkpoint_is_the_last_epoch_and_resuming_continues(tmp_path: Path, tiny_data_dir: Path) -> None:
    # Validation (so best.ckpt) only after epoch 1 of 0-2: last.ckpt must not follow best.
    first = [*TINY, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"]
    run_train(tmp_path, tiny_data_dir, first)
    checkpoints = tmp_path / "run" / "checkpoints"
    last = checkpoints / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 2, "last.ckpt holds the last epoch (0-2)"
    assert torch.load(checkpoints / "best.ckpt", weights_only=False)["epoch"] == 1
    resumed = run_train(tmp_path, tiny_data_dir, [*first, "trainer.max_epochs=4", f"ckpt_path={last}"], "again")
    state = torch.load(tmp_path / "again" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 3 and state["global_step"] == 4 * 2, "resuming continued with epoch 3, no repeat"
    assert resumed["stage"] == "parity"


def test_base_checkpoint_of_other_architecture_is_refused(tmp_path: Path, tiny_data_dir: Path) -> None:
    run_train(tmp_path, tiny_data_dir, [*TINY, "stage=base", "model=lenet5"], "lenet")
    with pytest.raises(ValueError, match="LeNet5"):
        run_train(tmp_path, tiny_data_dir, [*TINY, f"base.ckpt={tmp_path / 'lenet' / 'base.pt'}"])


def test_bad_stage_and_wrong_pair_fail_before_training(tmp_path: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(ValueError, match="stage must be one of"):
        run_train(tmp_path, tiny_data_dir, [*TINY, "stage=nope"])
    with pytest.raises(ValueError, match="pairs only with encoders"):
        run_train(tmp_path, tiny_data_dir, [*TINY, "encoder=learned"])
    with pytest.raises(ValueError, match="r < k"):
        run_train(tmp_path, tiny_data_dir, [*TINY, "r=2"])


def test_shorthands_reach_the_code_node(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, tmp_path, ["encoder=concat", "k=4", "r=2", "decoder=learned"])
    assert (cfg.code.encoder, cfg.code.decoder, cfg.code.k, cfg.code.r) == ("concat", "learned", 4, 2)
    assert cfg.data.group_size == 4


@pytest.mark.skipif(not (SHARED / "mnist.npz").exists(), reason="real MNIST not found (set PARM_SHARED_DATA)")
def test_end_to_end_real_mnist_beats_chance(tmp_path: Path) -> None:
    summary = run_train(tmp_path, SHARED, ["trainer.max_epochs=1", "base.epochs=1", "trainer.accelerator=cpu",
                                           "trainer.enable_progress_bar=false"])
    assert summary["test"]["available_acc"] > 0.9
    assert summary["test"]["degraded_acc"] > 0.5, "one epoch of parity training is far above 10% chance"


@pytest.mark.slow
def test_parallel_jobs_train_f_once(tmp_path: Path, tiny_data_dir: Path) -> None:
    """Two jobs of a parallel sweep that need the same F: one trains it, the other waits and loads it."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    common = [sys.executable, str(root / "train.py"), f"data_dir={tiny_data_dir}", f"cache_dir={tmp_path / 'cache'}",
              *TINY]
    jobs = [subprocess.Popen([*common, f"hydra.run.dir={tmp_path / f'run{i}'}", f"k={2 + i}"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
            for i in range(2)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert all(job.returncode == 0 for job in jobs), outputs
    assert sum("training F first" in out for out in outputs) == 1
    assert len(list((tmp_path / "cache" / "base").glob("*.pt"))) == 1


def test_the_same_seed_gives_the_same_run(tmp_path: Path, tiny_data_dir: Path) -> None:
    """Sweeps compare runs that differ in one setting: everything else, erasures and shuffles included,
    must come from the seed. Two runs with one seed (and one cached F) agree exactly on CPU; another seed
    trains a different F_P."""
    from parm.artifacts import load_parity

    runs = [run_train(tmp_path, tiny_data_dir, [*TINY, "trainer.limit_train_batches=6", f"seed={seed}"], name)
            for seed, name in ((3, "a"), (3, "b"), (4, "c"))]
    assert runs[0]["test"] == runs[1]["test"]
    weights = [load_parity(run["artifacts"]["parity"]).parity_models[0].state_dict() for run in runs]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert not all(torch.equal(weights[0][key], weights[2][key]) for key in weights[0])
