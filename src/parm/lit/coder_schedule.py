"""How a learned code trains beside its parity model: a warm-up on the hand-made start, then a slower coder.

A learned code (``code=learned``) starts *as* a hand-made code plus corrections that are zero at step 0.
Trained jointly from the first step at F_P's learning rate, the corrections move while F_P is still
near random, and at k = 8 on MNIST the code ended far below the hand-made code it started from
(docs/results/learned_codes.md). So, as one fine-tunes a pretrained part:

- **warm-up**: for the first ``warmup`` share of the epochs the coder is frozen and runs as its hand-made
  code alone (the zero corrections are skipped, which also makes those epochs as fast as the hand-made
  code's); only F_P trains, so the run tracks the hand-made code;
- **joint training** afterwards, with the coder in its own optimizer param group at ``lr_scale`` x F_P's
  learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class CoderSchedule:
    """Warm-up share and learning-rate scale of a trainable code's parameters.

    Args:
        warmup: share of ``trainer.max_epochs`` (in ``[0, 1]``) during which the coder stays frozen at its
            hand-made start; 0: joint training from the first step.
        lr_scale: the coder's learning rate as a multiple of the optimizer's (F_P's), ``> 0``.
    """

    warmup: float = 0.0
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"coder warm-up is a share of trainer.max_epochs in [0, 1], got {self.warmup}. "
                             f"Set parity.coder_warmup, e.g. 0.5 for half the epochs, 0 for none.")
        if not self.lr_scale > 0.0:
            raise ValueError(f"coder lr scale must be > 0, got {self.lr_scale}. Set parity.coder_lr_scale, "
                             f"e.g. 0.1 for a coder learning rate of a tenth of F_P's.")

    def warmup_epochs(self, max_epochs: int | None) -> int:
        """Epochs of warm-up in a run of ``max_epochs`` (floor, so some joint training is left when warmup < 1)."""
        if self.warmup == 0.0:
            return 0
        if max_epochs is None or max_epochs < 1:
            raise ValueError(f"parity.coder_warmup={self.warmup} is a share of trainer.max_epochs, but "
                             f"max_epochs is {max_epochs}. Set trainer.max_epochs, or parity.coder_warmup=0.")
        return math.floor(self.warmup * max_epochs)


def param_groups(trainable: list[nn.Parameter], coder: list[nn.Parameter]) -> list[dict[str, Any]]:
    """Optimizer param groups: every trainable parameter not in ``coder`` first, then the coder's (if any)."""
    coder_ids = {id(p) for p in coder}
    rest = [p for p in trainable if id(p) not in coder_ids]
    return [{"params": params} for params in (rest, coder) if params]


def scale_coder_lr(optimizer: torch.optim.Optimizer, coder: list[nn.Parameter], lr_scale: float) -> None:
    """Multiply the lr of the param group holding ``coder`` by ``lr_scale`` (before any scheduler reads it)."""
    coder_ids = {id(p) for p in coder}
    for group in optimizer.param_groups:
        if coder_ids and all(id(p) in coder_ids for p in group["params"]):
            group["lr"] = group["lr"] * lr_scale


def set_hand_made(code: nn.Module, on: bool) -> None:
    """Run every learned coder of ``code`` as its hand-made start alone (``on``) or with its correction."""
    for module in code.modules():
        if hasattr(module, "hand_made_only"):
            setattr(module, "hand_made_only", on)  # noqa: B010 -- a plain attribute of the learned coders
