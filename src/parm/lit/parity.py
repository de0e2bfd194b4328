"""LightningModule that trains parity models F_P against a frozen deployed model F."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from parm.coding import Code, erasure_patterns, sample_erasures
from parm.evaluation import score_erasures
from parm.lit.coder_schedule import CoderSchedule, param_groups, scale_coder_lr, set_hand_made
from parm.lit.progress import LogSteps
from parm.lit.speed import CompiledCalls, FastPath, TargetCache
from parm.tasks import StageMetrics, Task, get_task


class ParityModule(LogSteps, pl.LightningModule):
    """Coding groups -> encode -> F_P -> decode, trained on the reconstructions of erased slots.

    Each step erases r random data slots per group and scores their reconstructions against F's
    outputs. With the subtraction decoder on a plain-sum parity (r = 1) every slot's reconstruction
    error is the same, so the MSE is computed directly as the reference objective
    ``MSE(F_P(P), sum_i F(X_i))`` (:attr:`residual_loss`); with learned coders it trains encoder, F_P
    and decoder jointly.

    Args:
        base_model: F, frozen, ``(N, *input_shape) -> (N, C)`` (logits, or boxes with C = 4).
        parity_models: r networks; model j answers parity query j.
        code: encoder/decoder pair from :func:`parm.coding.build_code`.
        optimizer: partial ``params -> Optimizer``.
        scheduler: optional partial ``optimizer -> LRScheduler`` (per epoch).
        loss: ``"mse"`` on F's outputs (reference) or, for classification only, ``"kl"`` from F's softmax
            to the reconstruction's.
        task: what F predicts (:mod:`parm.tasks`): decides the allowed losses and the metrics
            (accuracies for ``classification``, IoU for ``regression``).
        default_answer: the default-answer baseline's answer (:meth:`parm.tasks.Task.default_answer`):
            the most frequent training class (None: class 0), or the mean training box (None: no baseline).
        fractions: f_u values of the overall-accuracy table.
        max_eval_patterns: cap on erasure patterns scored per group (a seeded sample when C(k, r)
            is larger); None scores all.
        fast: how F and F_P run (:class:`~parm.lit.speed.FastPath`: compile, channels-last, target
            cache); default: eager, cached targets. None of it changes what is computed.
        coder: how a trainable code trains (:class:`~parm.lit.coder_schedule.CoderSchedule`): a warm-up
            share of the epochs frozen at its hand-made start, then its own lr scale; default: joint
            training from the first step at the optimizer's lr.

    Speed: the training step makes no host synchronisation once targets are cached, and the loss is
    logged (and checked for NaN/inf) every ``trainer.log_every_n_steps`` steps rather than every step.
    Evaluation scores through :func:`parm.evaluation.score_erasures`, the protocol every script uses.
    """

    val_metrics: StageMetrics
    test_metrics: StageMetrics

    eval_patterns: torch.Tensor

    def __init__(self, base_model: nn.Module, parity_models: Sequence[nn.Module], code: Code,
                 optimizer: Callable[..., torch.optim.Optimizer], scheduler: Callable[..., Any] | None = None,
                 loss: str = "mse", task: str | Task = "classification", default_answer: Any = None,
                 fractions: Sequence[float] = (0.01, 0.05, 0.1, 0.2, 0.5), max_eval_patterns: int | None = 64,
                 fast: FastPath | None = None, coder: CoderSchedule | None = None) -> None:
        super().__init__()
        self.task = get_task(task)
        self.task.check_parity_loss(loss)
        if len(parity_models) != code.spec.r:
            raise ValueError(f"need one parity model per parity (r={code.spec.r}), got {len(parity_models)}.")
        self.base_model = base_model.requires_grad_(False).eval()
        self.parity_models = nn.ModuleList(parity_models)
        self.code = code
        self.spec = code.spec
        self.coder = coder or CoderSchedule()
        self.coder_params = [p for p in code.parameters() if p.requires_grad]  # the code's own param group
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.loss_name = loss
        # Every erased slot's MSE equals the parity residual's for this code (see training_step): no erasures
        # to draw, nothing to decode. Other losses (KL) and codes score the decoded slot itself.
        self.residual_loss = loss == "mse" and bool(getattr(code.decoder, "unit_sum", False))
        self.fast = fast or FastPath()
        self.calls = CompiledCalls(self.base_model, self.parity_models, self.fast)
        self.targets = TargetCache(code.decoder.output_dim, self.base_forward) if self.fast.cache_targets else None
        self.register_buffer("eval_patterns", erasure_patterns(code.spec, max_eval_patterns), persistent=False)
        self.run_identity: dict[str, Any] | None = None  # set by the pipeline; saved in checkpoints
        self.val_metrics = self.task.parity_metrics(code.decoder.output_dim, default_answer, fractions)
        self.test_metrics = self.task.parity_metrics(code.decoder.output_dim, default_answer, fractions)

    @property
    def compile_mode(self) -> str | None:
        return self.calls.mode

    @property
    def cache_targets(self) -> bool:
        return self.targets is not None

    @property
    def target_seconds(self) -> float:
        """Time spent precomputing F's training outputs."""
        return self.targets.seconds if self.targets is not None else 0.0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which run this is (code, F, parity model), so a resume with other settings is refused."""
        if self.run_identity is not None:
            checkpoint["parm_run"] = dict(self.run_identity)

    def train(self, mode: bool = True) -> ParityModule:
        super().train(mode)
        self.base_model.eval()  # F is deployed as is: its BatchNorm statistics never move.
        return self

    def on_train_epoch_start(self) -> None:
        """Freeze the coder at its hand-made start during the warm-up epochs, train it afterwards."""
        warmup = self.current_epoch < self.coder.warmup_epochs(self.trainer.max_epochs)
        for p in self.coder_params:
            p.requires_grad_(not warmup)
        set_hand_made(self.code, warmup)

    def on_train_end(self) -> None:
        set_hand_made(self.code, False)  # evaluation, export and serving run the whole learned code

    # --- forward pieces -------------------------------------------------------------------
    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """F's outputs ``(N, C)`` in float32 for inputs ``(N, *S)``, without gradients."""
        return self.calls.base_outputs(x)

    def parity_forward(self, groups: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, k, *S)`` groups and answer each parity: ``(B, r, C)``."""
        return self.calls.parity_outputs(self.code.encode(groups))

    def on_train_start(self) -> None:
        """Fill the target cache from the whole training split at once when the datamodule allows it."""
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if self.targets is not None and self.fast.precompute_targets and hasattr(datamodule, "split") \
                and hasattr(datamodule, "normalize"):
            self.targets.precompute(datamodule, self.device)

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
        self.calls.step_begin()
        outputs = self.targets(x, index) if self.targets is not None else self.base_forward(x)
        targets = self._group(outputs)  # (B, k, C)
        groups = self._group(x)
        parities = self.parity_forward(groups)  # (B, r, C)
        if self.residual_loss:
            # Plain-sum parity, subtraction decoder: whichever slot j is erased, its reconstruction error is
            # F_P(P) - sum_i F(X_i), so the MSE on it is the reference's MSE(F_P(P), sum_i F(X_i)) exactly.
            estimate, target = parities[:, 0].float(), targets.sum(dim=1)
        else:
            available, erased = sample_erasures(self.spec, groups.shape[0], device=x.device)
            estimate, target = self._erased_pairs(targets, parities, available, erased)
        loss = self._loss(estimate, target)
        # Checking and showing the loss read it on the host (a sync on GPUs): only on logging steps. The
        # logged tensor stays off the progress bar, which Lightning would read every step (parm.lit.progress).
        if self._is_log_step():
            self._note_loss(loss, "parity")
            self.log("train/loss", loss)
        return loss

    def _erased_pairs(self, targets: torch.Tensor, parities: torch.Tensor, available: torch.Tensor,
                      erased: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded and true outputs of the erased slots, ``(B * r, C)`` each, without host syncs.

        ``code.decode`` validates the mask (a sync) and boolean indexing needs ``nonzero`` (another):
        the mask is ours, with the ``(B, r)`` ascending ``erased`` slots, so decode directly and gather
        them in the order boolean indexing would list them.
        """
        k, r = self.spec.k, self.spec.r
        batch, dim = targets.shape[0], self.code.decoder.output_dim
        targets = targets.reshape(batch, k, dim)
        outputs = targets.masked_fill(~available[:, :k, None], 0.0)
        estimate = self.code.decoder.decode(outputs, parities.reshape(batch, r, dim).float(), available)
        index = erased[..., None].expand(-1, -1, dim)
        return estimate.gather(1, index).reshape(-1, dim), targets.gather(1, index).reshape(-1, dim)

    def _shared_eval(self, batch: tuple[torch.Tensor, ...], stage: str) -> None:
        """A_a on every sample; A_d and agreement by :func:`parm.evaluation.score_erasures`."""
        x, y = batch[0], batch[1]
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        outputs = self.base_forward(x)
        metrics.update_available(outputs, y)
        groups = self._group(x)
        if groups.shape[0] > 0:
            score_erasures(metrics, self.code, self._group(outputs), self.parity_forward(groups).float(),
                           self._group(y), self.eval_patterns)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._shared_eval(batch, "test")

    def _log_metrics(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        values = metrics.compute()
        self.log_dict({f"{stage}/{key}": value for key, value in values.items()},
                      prog_bar=False, sync_dist=False)
        key = self.task.degraded_key
        self.log(f"{stage}/{key}_pb", values[key], prog_bar=True, logger=False)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self) -> Any:
        # Every parameter that may train (the coder's are frozen only while an epoch runs): F_P's first,
        # then the code's in its own group at coder.lr_scale x the optimizer's lr.
        coder_ids = {id(p) for p in self.coder_params}
        trainable = [p for p in self.parameters() if p.requires_grad or id(p) in coder_ids]
        optimizer = self.optimizer_factory(param_groups(trainable, self.coder_params))
        scale_coder_lr(optimizer, self.coder_params, self.coder.lr_scale)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}
