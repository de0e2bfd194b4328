"""Sweeps: device per job, launcher/trainer/logger configs, DDP sharding, real multiruns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY
from parm.data.loader import TensorLoader
from parm.devices import job_gpu, place_job
from parm.pipeline import compose

ROOT = Path(__file__).resolve().parents[1]


def test_job_gpu_spreads_jobs_and_shares_gpus() -> None:
    assert [job_gpu(n, visible=2) for n in range(5)] == [0, 1, 0, 1, 0]
    assert [job_gpu(n, visible=2, jobs_per_gpu=2) for n in range(6)] == [0, 0, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="at least one visible GPU"):
        job_gpu(0, visible=0)


def test_place_job_gpu_cpu_and_fallback() -> None:
    assert place_job("auto", 1, job_num=3, visible_gpus=2).trainer_kwargs() == {"accelerator": "gpu",
                                                                                 "devices": [1]}
    cpu = place_job("auto", 1, job_num=1, parallel_jobs=2, visible_gpus=0, cpu_cores=8)
    assert (cpu.accelerator, cpu.threads) == ("cpu", 4)
    assert place_job("auto", 1, job_num=None, visible_gpus=2) is None, "single runs keep the trainer config"
    assert place_job("gpu", 4, job_num=0, visible_gpus=4) is None, "DDP device lists are the user's"
    with pytest.warns(UserWarning, match="no GPU is visible: training on the CPU"):
        assert place_job("gpu", 1, job_num=None, visible_gpus=0).accelerator == "cpu"


@pytest.mark.parametrize("world", [2, 3])
def test_tensor_loader_shards_by_rank(world: int) -> None:
    x, y = torch.arange(50).view(50, 1), torch.arange(50)
    train = [list(TensorLoader(x, y, 4, shuffle=True, drop_last=True, seed=1, rank=r, world_size=world))
             for r in range(world)]
    assert len({len(batches) for batches in train}) == 1, "every rank runs the same number of steps"
    seen = [int(i) for batches in train for _, _, index in batches for i in index]
    assert len(seen) == len(set(seen)), "ranks see disjoint samples"
    evals = [list(TensorLoader(x, y, 8, rank=r, world_size=world)) for r in range(world)]
    covered = sorted(int(i) for batches in evals for _, _, index in batches for i in index)
    assert covered == list(range(50)), "evaluation covers the split once, whole batches per rank"
    with pytest.raises(ValueError, match="rank must be in"):
        TensorLoader(x, y, 4, rank=2, world_size=2)


@pytest.mark.parametrize("overrides", [
    ["hydra/launcher=joblib"], ["hydra/launcher=joblib_gpus"], ["hydra/launcher=slurm"], ["trainer=ddp"],
    ["logger=wandb"], ["trainer=gpu", "parity.compile=true", "parity.channels_last=true"],
])
def test_sweep_configs_compose(overrides: list[str]) -> None:
    cfg = compose(["output_dir=/tmp/x", *overrides], return_hydra_config=True)
    if "hydra/launcher=slurm" in overrides:
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    if "hydra/launcher=joblib_gpus" in overrides:
        assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    if "trainer=ddp" in overrides:
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler is False
    if "logger=wandb" in overrides:
        assert cfg.logger.wandb.offline is True and "k=2" in list(cfg.logger.wandb.tags)


def _train(args: list[str], tmp: Path, data_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    flags = [a for a in args if a.startswith("-")]  # -m goes before the overrides
    command = [sys.executable, str(ROOT / "train.py"), *flags, *TINY, f"data_dir={data_dir}",
               f"cache_dir={tmp / 'cache'}", *(a for a in args if not a.startswith("-"))]
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_multirun_with_joblib_launcher_then_compare(tmp_path: Path, tiny_data_dir: Path) -> None:
    _train(["stage=base"], tmp_path, tiny_data_dir)  # F cached once, so parallel jobs never race to train it
    sweep = tmp_path / "sweep"
    # The TINY overrides would make over-long job folder names: number the jobs instead.
    _train(["-m", "encoder=sum,concat", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"], tmp_path, tiny_data_dir)
    assert sorted(p.parent.name for p in sweep.rglob("summary.json")) == ["0", "1"]
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare_runs

    assert {r["encoder"] for r in compare_runs.main([str(sweep), "--out", str(tmp_path / "cmp"), "--no-plots"])} \
        == {"sum", "concat"}


@pytest.mark.slow
def test_sweep_over_k_and_encoder_with_the_basic_launcher(tmp_path: Path, tiny_data_dir: Path) -> None:
    _train(["-m", "encoder=sum,concat", "k=2,4", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.sweep.subdir=${hydra.job.num}"], tmp_path, tiny_data_dir)
    assert len(list((tmp_path / "sweep").rglob("summary.json"))) == 4


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(tmp_path: Path, tiny_data_dir: Path) -> None:
    _train(["stage=base"], tmp_path, tiny_data_dir)
    out = tmp_path / "ddp"
    _train(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.limit_train_batches=null",
            f"hydra.run.dir={out}"], tmp_path, tiny_data_dir, timeout=600)
    summary = (out / "summary.json").read_text()
    assert '"strategy": "ddp"' in summary and (out / "parity.pt").exists()


@pytest.mark.slow
def test_wandb_logger_runs_offline(tmp_path: Path, tiny_data_dir: Path) -> None:
    out = tmp_path / "wb"
    _train(["logger=wandb", f"hydra.run.dir={out}"], tmp_path, tiny_data_dir)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs, "an offline run to `wandb sync` later"
    tables = list(runs[0].glob("files/media/table/test/overall_acc_table*.table.json"))
    assert tables, "the A_o(f_u) curve is logged as a table"
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["f_u", "overall_acc"]
    assert [row[0] for row in table["data"]] == [0.01, 0.05, 0.1, 0.2, 0.5]
