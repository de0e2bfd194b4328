"""Parity models for your own ``nn.Module``, for people who drive Lightning themselves.

```python
import pytorch_lightning as pl
from parm.api import parity_module
from parm.data.vision import MNISTDataModule

dm = MNISTDataModule(data_dir="data", group_size=2)          # k = 2 queries per coding group
module = parity_module(my_net, dm, input_transform="none")   # my_net reads raw [0, 1] pixels
trainer = pl.Trainer(max_epochs=5)
trainer.fit(module, datamodule=dm)
print(trainer.test(module, datamodule=dm))                   # test/available_acc, test/degraded_acc, ...
```
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from parm.base_model import network
from parm.coding import CodeSpec, build_code
from parm.data.base import TensorDataModule
from parm.lit import ParityModule
from parm.models.deployed import STANDARDIZED, DeployedModel, check_transform
from parm.tasks import get_task

ParityFactory = Callable[[tuple[int, ...], int], nn.Module]


def parity_module(f: nn.Module, datamodule: TensorDataModule, *, encoder: str = "sum",
                  decoder: str = "subtraction", r: int = 1, parity_model: ParityFactory | None = None,
                  input_transform: Any = STANDARDIZED, lr: float = 1e-3, **module_kwargs: Any) -> ParityModule:
    """A :class:`~parm.lit.ParityModule` that trains parity models for the frozen, deployed ``f``.

    Args:
        f: F, any module mapping ``(N, *input_shape)`` to ``(N, D)``; only its forward is used.
        datamodule: the data; its ``group_size`` is k. It is set up here (loaded) if it was not.
        encoder, decoder: registered coder names (:func:`parm.coding.build_code`).
        r: parity queries per group.
        parity_model: ``(parity_shape, D) -> nn.Module`` building each F_P; None: a fresh copy of F's
            own network (re-initialised), which needs the parity query to have F's input shape.
        input_transform: what F reads (``"standardized"``, ``"none"`` for raw [0, 1] pixels,
            ``{"mean": [...], "std": [...]}`` or ``{"_target_": ...}``); F_P always reads parm's
            standardised input.
        lr: Adam's learning rate.
        **module_kwargs: further :class:`~parm.lit.ParityModule` arguments (``loss``, ``cache_targets``...).

    Raises:
        ValueError: F's architecture cannot serve as F_P for this code (pass ``parity_model``).
    """
    datamodule.setup("fit")
    task = get_task(datamodule.task)
    transform = check_transform(input_transform)
    if transform != STANDARDIZED:
        f = DeployedModel(f, transform, datamodule.mean.tolist(), datamodule.std.tolist())
    input_shape = tuple(datamodule.input_shape)
    with torch.no_grad():
        outputs = int(f.eval()(datamodule.normalize(datamodule.split("train")[0][:2])).shape[-1])
    code = build_code(encoder, decoder, CodeSpec(datamodule.group_size, r), input_shape, (outputs,))
    parity_shape = tuple(code.encoder.parity_shape)
    if parity_model is None:
        if parity_shape != input_shape:
            raise ValueError(f"the {encoder} encoder makes parity queries of shape {parity_shape}, not F's "
                             f"{input_shape}; pass parity_model=lambda shape, outputs: YourNet(...).")
        parity_model = functools.partial(_fresh_copy, network(f))
    return ParityModule(f, [parity_model(parity_shape, outputs) for _ in range(r)], code,
                        optimizer=functools.partial(torch.optim.Adam, lr=lr), task=task,
                        default_answer=task.default_answer(datamodule.split("train")[1]), **module_kwargs)


def _fresh_copy(net: nn.Module, shape: tuple[int, ...], outputs: int) -> nn.Module:
    """F's architecture with fresh weights: a deep copy whose layers are re-initialised."""
    clone = copy.deepcopy(net).train()
    clone.requires_grad_(True)
    for layer in clone.modules():
        reset = getattr(layer, "reset_parameters", None)
        if callable(reset):
            reset()
    if not any(True for _ in clone.parameters()):
        raise ValueError(f"F ({type(net).__name__}) has no parameters to train as a parity model (a compiled "
                         f"program?); pass parity_model=lambda shape, outputs: YourNet(...).")
    return clone
