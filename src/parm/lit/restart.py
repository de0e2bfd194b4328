"""Restart a parity training that never left chance: fresh weights for what trains, F untouched.

Joint training of a learned code from a random start can sit at chance for a whole run (the Learning-a-Code
paper reports it for MNIST k = 5; parm's own learned code at k = 8 did the same). The paper's remedy is to
restart early, which is what this callback does, from the config (``code=lac`` adds it).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn


def reset_trainable(module: nn.Module) -> int:
    """Re-initialise every trainable part of ``module`` with its own ``reset_parameters``; returns how many.

    A module that defines ``reset_parameters`` resets as a whole (a learned coder re-applies its zero-started
    correction there); frozen modules (F) are left alone.
    """
    if not any(p.requires_grad for p in module.parameters()):
        return 0
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return 1
    return sum(reset_trainable(child) for child in module.children())


class RestartIfStuck(pl.Callback):
    """After each of the first ``within_epochs`` epochs, restart if validation ``monitor`` < ``threshold``.

    A restart re-initialises the code and the parity models (not F) from seed ``seed + restart`` and clears
    the optimizer's moments; the epoch count goes on. Only acts on modules that have a ``code`` (parity
    training), so the same callbacks group can serve F's training.

    Args:
        monitor: a logged validation metric, e.g. ``val/agreement``.
        threshold: below it the run counts as stuck (chance is 1 / classes for agreement).
        within_epochs: epochs in which a restart may happen; later, training is left to run its course.
        max_restarts: most restarts per run.
        seed: base seed of the fresh weights.
    """

    def __init__(self, monitor: str = "val/agreement", threshold: float = 0.3, within_epochs: int = 2,
                 max_restarts: int = 2, seed: int = 0) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"RestartIfStuck threshold must be in (0, 1], got {threshold}.")
        self.monitor, self.threshold = monitor, threshold
        self.within_epochs, self.max_restarts, self.seed = within_epochs, max_restarts, seed
        self.restarts = 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after the epoch's validation, so the monitored value is this epoch's.
        value = trainer.callback_metrics.get(self.monitor)
        if (not hasattr(pl_module, "code") or value is None or trainer.current_epoch >= self.within_epochs
                or self.restarts >= self.max_restarts or float(value) >= self.threshold):
            return
        self.restarts += 1
        torch.manual_seed(self.seed + self.restarts)
        code: nn.Module = getattr(pl_module, "code")  # noqa: B009 -- a ParityModule attribute, checked above
        parity_models: list[nn.Module] = list(getattr(pl_module, "parity_models", []))
        reset = reset_trainable(code) + sum(reset_trainable(m) for m in parity_models)
        for optimizer in trainer.optimizers:
            optimizer.state.clear()
        print(f"[parm] {self.monitor} = {float(value):.3f} < {self.threshold} after epoch {trainer.current_epoch}: "
              f"restart {self.restarts} of {self.max_restarts} ({reset} modules re-initialised)")
