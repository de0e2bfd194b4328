"""The composed config and what is derived from it: the task, F's output size, model specs, the lr."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from parm.data.base import TensorDataModule
from parm.tasks import Task, get_task

STAGES = ("base", "parity")
LR_SCALINGS = ("none", "linear", "sqrt")


def conf_dir() -> Path:
    """The Hydra config folder: ``$PARM_CONF_DIR``, else the repository's ``conf/``."""
    found = Path(os.environ.get("PARM_CONF_DIR") or Path(__file__).resolve().parents[3] / "conf")
    if not (found / "train.yaml").is_file():
        raise FileNotFoundError(f"no train.yaml in {found}. parm composes its config from the repository's "
                                f"conf/ folder: install parm from a checkout (pip install -e .) or set "
                                f"PARM_CONF_DIR to a folder holding train.yaml.")
    return found


def compose(overrides: Sequence[str] = (), config_name: str = "train",
            return_hydra_config: bool = False) -> DictConfig:
    """The config ``python train.py <overrides>`` runs with (``output_dir`` must be among the overrides
    unless ``return_hydra_config``, as Hydra's run folder is not set outside ``train.py``)."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


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


def model_spec(node: DictConfig, input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """A model config node with the data's shapes filled in, as plain builtins (``num_classes``: outputs)."""
    node = node.copy()
    with open_dict(node):
        node.input_shape = list(input_shape)
        node.num_classes = int(num_classes)
    spec = OmegaConf.to_container(node, resolve=True)
    if not isinstance(spec, dict):
        raise TypeError(f"a model config must be a mapping with a _target_, got {type(spec).__name__}.")
    return {str(key): value for key, value in spec.items()}


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
