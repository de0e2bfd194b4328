"""LightningModule that trains parity models F_P against a frozen deployed model F."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from parm.coding import Code, erasure_patterns, random_erasures
from parm.metrics import ParityMetrics

LOSSES = ("mse", "kl")


class ParityModule(pl.LightningModule):
    """Coding groups -> encode -> F_P -> decode, trained on the reconstructions of erased slots.

    Each step erases r random data slots per group and scores their reconstructions against F's
    outputs. With the subtraction decoder and r = 1 this is exactly the reference objective
    ``MSE(F_P(P), sum_i F(X_i))``; with learned coders it trains encoder, F_P and decoder jointly.

    Args:
        base_model: F, frozen, ``(N, *input_shape) -> (N, C)``.
        parity_models: r networks; model j answers parity query j.
        code: encoder/decoder pair from :func:`parm.coding.build_code`.
        optimizer: partial ``params -> Optimizer``.
        scheduler: optional partial ``optimizer -> LRScheduler`` (per epoch).
        loss: ``"mse"`` on logits (reference) or ``"kl"`` from F's softmax to the reconstruction's.
        default_class: answer of the default-answer baseline (most frequent training class).
        cache_targets: keep F's outputs on the training set after first computing them. Only valid
            when training inputs are not augmented (the datamodule's ``augment``).
        fractions: f_u values of the overall-accuracy table.
        max_eval_patterns: cap on erasure patterns scored per group (a seeded sample when C(k, r)
            is larger); None scores all.
    """

    def __init__(self, base_model: nn.Module, parity_models: Sequence[nn.Module], code: Code,
                 optimizer: Callable[..., torch.optim.Optimizer], scheduler: Callable[..., Any] | None = None,
                 loss: str = "mse", default_class: int = 0, cache_targets: bool = True,
                 fractions: Sequence[float] = (0.01, 0.05, 0.1, 0.2, 0.5),
                 max_eval_patterns: int | None = 64) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
        if len(parity_models) != code.spec.r:
            raise ValueError(f"need one parity model per parity (r={code.spec.r}), got {len(parity_models)}.")
        self.base_model = base_model.requires_grad_(False).eval()
        self.parity_models = nn.ModuleList(parity_models)
        self.code = code
        self.spec = code.spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.loss_name = loss
        self.cache_targets = cache_targets
        self.register_buffer("eval_patterns", erasure_patterns(code.spec, max_eval_patterns), persistent=False)
        self._target_cache: torch.Tensor | None = None
        self._target_known: torch.Tensor | None = None
        metrics_args = {"num_classes": code.decoder.output_dim, "default_class": default_class,
                        "fractions": tuple(fractions)}
        self.val_metrics = ParityMetrics(**metrics_args)
        self.test_metrics = ParityMetrics(**metrics_args)

    def train(self, mode: bool = True) -> ParityModule:
        super().train(mode)
        self.base_model.eval()  # F is deployed as is: its BatchNorm statistics never move.
        return self

    # --- forward pieces -------------------------------------------------------------------
    def parity_forward(self, groups: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, k, *S)`` groups and answer each parity: ``(B, r, C)``."""
        queries = self.code.encode(groups)
        return torch.stack([model(queries[:, j]) for j, model in enumerate(self.parity_models)], dim=1)

    def _targets(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """F's outputs ``(N, C)``, served from the cache once every index has been seen."""
        if not self.cache_targets:
            with torch.no_grad():
                return self.base_model(x).float()
        needed = int(index.max()) + 1
        if self._target_cache is None or self._target_known is None or self._target_cache.device != x.device \
                or self._target_cache.shape[0] < needed:
            self._grow_cache(needed, x.device)
        assert self._target_cache is not None and self._target_known is not None
        if bool(self._target_known[index].all()):
            return self._target_cache[index]
        with torch.no_grad():
            out = self.base_model(x).float()
        self._target_cache[index] = out
        self._target_known[index] = True
        return out

    def _grow_cache(self, size: int, device: torch.device) -> None:
        """(Re)allocate the target cache for ``size`` training samples, keeping what it holds."""
        cache = torch.zeros(size, self.code.decoder.output_dim, device=device)
        known = torch.zeros(size, dtype=torch.bool, device=device)
        if self._target_cache is not None and self._target_known is not None:
            old = min(size, self._target_cache.shape[0])
            cache[:old] = self._target_cache[:old].to(device)
            known[:old] = self._target_known[:old].to(device)
        self._target_cache, self._target_known = cache, known

    def _group(self, t: torch.Tensor) -> torch.Tensor:
        """``(N, ...)`` -> ``(N // k, k, ...)``, dropping trailing samples that fill no group."""
        k = self.spec.k
        groups = t.shape[0] // k
        return t[: groups * k].reshape(groups, k, *t.shape[1:])

    def _loss(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "mse":
            return F.mse_loss(estimate.float(), target)
        return F.kl_div(F.log_softmax(estimate.float(), -1), F.log_softmax(target, -1), log_target=True,
                        reduction="batchmean")

    # --- steps ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, index = batch[0], batch[2]
        targets = self._group(self._targets(x, index))  # (B, k, C)
        groups = self._group(x)
        parities = self.parity_forward(groups)  # (B, r, C)
        available = random_erasures(self.spec, groups.shape[0], device=x.device)
        estimate = self.code.decode(targets, parities, available)
        erased = ~available[:, : self.spec.k]
        loss = self._loss(estimate[erased], targets[erased])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"parity loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}. "
                f"Lower the learning rate (optimizer.lr=...), or check the inputs and F for NaN/inf."
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _shared_eval(self, batch: tuple[torch.Tensor, ...], stage: str) -> None:
        x, y = batch[0], batch[1]
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        outputs = self.base_model(x).float()
        metrics.update_available(outputs, y)
        groups = self._group(x)
        if groups.shape[0] == 0:
            return
        base_groups, labels = self._group(outputs), self._group(y)
        parities = self.parity_forward(groups).float()
        # Every erasure pattern of every group at once: (P * B, ...).
        n_patterns = self.eval_patterns.shape[0]
        available = self.eval_patterns.repeat_interleave(groups.shape[0], dim=0)
        estimate = self.code.decode(base_groups.repeat(n_patterns, 1, 1), parities.repeat(n_patterns, 1, 1),
                                    available)
        erased = ~available[:, : self.spec.k]
        metrics.update_degraded(estimate[erased], base_groups.repeat(n_patterns, 1, 1)[erased],
                                labels.repeat(n_patterns, 1)[erased])

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "test")

    def _log_metrics(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = metrics.compute()
        self.log_dict({f"{stage}/{key}": value for key, value in values.items()},
                      prog_bar=False, sync_dist=False)
        self.log(f"{stage}/degraded_acc_pb", values["degraded_acc"], prog_bar=True, logger=False)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
