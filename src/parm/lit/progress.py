"""Training-loss display without a host synchronisation per step.

Lightning turns every value logged with ``prog_bar=True`` into a Python number on every training step,
whether or not a bar is drawn (``.item()`` in its logger connector): on a GPU that is a full device
synchronisation per step, which stalls the kernel queue. parm's modules therefore log their loss with
``prog_bar=False`` and, on logging steps only (every ``trainer.log_every_n_steps``), copy it to the host
into :attr:`LogSteps.progress_values`, which :class:`HostProgressBar` shows.
"""

from __future__ import annotations

import math
import sys
import time
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
    """Lightning's bar plus the module's host-side :attr:`LogSteps.progress_values`.

    Non-interactive (output to a file or a pipe, as in a batch job's log) the bar is not drawn: its
    carriage-return updates would fill the log. One line per epoch is printed instead.

    Args:
        interactive: draw the bar; None (default): when standard error is a terminal.
        **kwargs: as :class:`~pytorch_lightning.callbacks.TQDMProgressBar`.
    """

    def __init__(self, interactive: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._epoch_started = 0.0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.interactive:
            self.disable()

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.update({key: f"{value:.4g}" for key, value in getattr(pl_module, "progress_values", {}).items()})
        return items

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.interactive and trainer.is_global_zero:
            print(epoch_line(trainer, getattr(pl_module, "progress_values", {}),
                             time.perf_counter() - self._epoch_started), flush=True)


def epoch_line(trainer: pl.Trainer, progress: dict[str, float], seconds: float) -> str:
    """``epoch 3/20  loss 0.0123  val/agreement 0.9100  ...  4.2 s``: one epoch of a non-interactive run."""
    values = {"loss": progress["loss"]} if "loss" in progress else {}
    values.update({key: float(value) for key, value in trainer.callback_metrics.items()
                   if key.startswith("val/") and "@" not in key and value.numel() == 1})
    shown = "  ".join(f"{key} {value:.4f}" for key, value in values.items())
    total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
    return f"epoch {trainer.current_epoch + 1}/{total}  {shown}  {seconds:.1f} s"
