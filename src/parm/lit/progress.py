"""Training-loss display without a host synchronisation per step.

Lightning turns every value logged with ``prog_bar=True`` into a Python number on every training step,
whether or not a bar is drawn (``.item()`` in its logger connector): on a GPU that is a full device
synchronisation per step, which stalls the kernel queue. parm's modules therefore log their loss with
``prog_bar=False`` and, on logging steps only (every ``trainer.log_every_n_steps``), copy it to the host
into :attr:`LogSteps.progress_values`, which :class:`HostProgressBar` shows.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar


class LogSteps:
    """Mixin for a LightningModule: which steps log, and host copies of values for the progress bar."""

    progress_values: dict[str, float]
    _trainer: Any

    def _is_log_step(self) -> bool:
        every = getattr(self._trainer, "log_every_n_steps", 1) if self._trainer is not None else 1
        return self.global_step % max(int(every), 1) == 0  # type: ignore[attr-defined]

    def _note_loss(self, loss: torch.Tensor, what: str) -> None:
        """On a logging step: read the loss on the host (the one sync), refuse NaN/inf, show it."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{what} loss became {value} at epoch {self.current_epoch}, step {self.global_step}. "  # type: ignore[attr-defined]
                f"Lower the learning rate (optimizer.lr=...), or check the inputs and F for NaN/inf."
            )
        if not hasattr(self, "progress_values"):
            self.progress_values = {}
        self.progress_values["loss"] = value


class HostProgressBar(TQDMProgressBar):
    """Lightning's bar plus the module's host-side :attr:`LogSteps.progress_values`."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.update({key: f"{value:.4g}" for key, value in getattr(pl_module, "progress_values", {}).items()})
        return items
