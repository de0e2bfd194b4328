"""Which device a sweep job trains on: one GPU per job from the job number, or the CPU.

With ``python train.py -m ... hydra/launcher=joblib`` several jobs run at once in one machine. Job
``n`` takes GPU ``(n // jobs_per_gpu) % visible`` so that consecutive jobs spread over the GPUs and
``jobs_per_gpu`` of them may share one large GPU; with no GPU visible, jobs fall back to the CPU and
split its cores between the jobs that run at the same time.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

GPU_ACCELERATORS = ("gpu", "cuda")


@dataclass(frozen=True)
class Placement:
    """Trainer arguments for one job: ``accelerator``, ``devices`` and the CPU threads it may use."""

    accelerator: str
    devices: list[int] | int
    threads: int | None = None

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"accelerator": self.accelerator, "devices": self.devices}


def job_gpu(job_num: int, visible: int, jobs_per_gpu: int = 1) -> int:
    """GPU index of sweep job ``job_num`` among ``visible`` GPUs, ``jobs_per_gpu`` jobs sharing each."""
    if visible < 1:
        raise ValueError(f"need at least one visible GPU, got {visible}.")
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be >= 1, got {jobs_per_gpu}.")
    return (job_num // jobs_per_gpu) % visible


def place_job(accelerator: str, devices: Any, job_num: int | None, parallel_jobs: int = 1, jobs_per_gpu: int = 1,
              visible_gpus: int | None = None, cpu_cores: int | None = None) -> Placement | None:
    """Where a job should run; None leaves the trainer config as it is.

    Only single-device jobs of a multirun are placed (``job_num`` not None, ``devices`` 1): a DDP run
    (``trainer=ddp``) or an explicit device list is the user's choice.

    Args:
        accelerator: the trainer's ``accelerator`` (``auto``, ``gpu``, ``cuda``, ``cpu``).
        devices: the trainer's ``devices``.
        job_num: Hydra's ``hydra.job.num`` in a multirun, None for a single run.
        parallel_jobs: jobs running at once (joblib ``n_jobs``), to split CPU cores between them.
        jobs_per_gpu: jobs sharing one GPU.
        visible_gpus: GPUs visible to this process (default ``torch.cuda.device_count()``).
        cpu_cores: cores of the machine (default ``os.cpu_count()``).
    """
    visible = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    fallback = accelerator in GPU_ACCELERATORS and visible == 0
    if fallback:
        warnings.warn(f"trainer.accelerator={accelerator} but no GPU is visible: training on the CPU.",
                      stacklevel=2)
        accelerator = "cpu"
    if job_num is None or devices not in (1, "1"):
        return Placement("cpu", devices) if fallback else None
    if accelerator in (*GPU_ACCELERATORS, "auto") and visible > 0:
        return Placement("gpu", [job_gpu(job_num, visible, jobs_per_gpu)])
    cores = cpu_cores or os.cpu_count() or 1
    return Placement("cpu", 1, threads=max(1, cores // max(1, parallel_jobs)))


def hydra_job() -> tuple[int | None, int]:
    """``(job number, parallel jobs)`` of the running Hydra multirun job, ``(None, 1)`` otherwise."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except (ImportError, ValueError):
        return None, 1
    if hydra.mode != RunMode.MULTIRUN:
        return None, 1
    launcher = getattr(hydra, "launcher", None)
    n_jobs = launcher.get("n_jobs", 1) if launcher is not None else 1
    cores = os.cpu_count() or 1
    return int(hydra.job.num), cores if n_jobs in (None, -1) else max(1, int(n_jobs))


def sweep_identity() -> tuple[str | None, str | None]:
    """``(sweep folder, job overrides)`` of a Hydra multirun job; ``(None, None)`` otherwise."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None
    if hydra.mode != RunMode.MULTIRUN:
        return None, None
    return str(hydra.sweep.dir), str(hydra.job.override_dirname) or None
