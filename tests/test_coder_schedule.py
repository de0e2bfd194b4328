"""A learned code's training schedule: warm-up frozen at its hand-made start, then its own learning rate."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import TINY, run_train
from parm.artifacts import load_parity
from parm.coding import CodeSpec, build_code
from parm.lit import FastPath, ParityModule
from parm.lit.coder_schedule import CoderSchedule
from parm.pipeline import compose

K, SHAPE, CLASSES = 2, (6,), (3,)


def _module(schedule: CoderSchedule) -> ParityModule:
    torch.manual_seed(0)
    code = build_code("learned", "learned", CodeSpec(K), SHAPE, CLASSES, {"init": "sum"}, {"init": "auto"})
    optimizer = functools.partial(torch.optim.Adam, lr=1e-2)
    return ParityModule(nn.Linear(6, 3), [nn.Linear(6, 3)], code, optimizer=optimizer,
                        fast=FastPath(cache_targets=False), coder=schedule)


class _Snapshots(pl.Callback):
    """The coder's and F_P's weights, and whether the coder ran as its hand-made start, after each epoch."""

    def __init__(self) -> None:
        self.coder: list[list[torch.Tensor]] = []
        self.parity: list[torch.Tensor] = []
        self.hand_made: list[bool] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, ParityModule)
        self.coder.append([p.detach().clone() for p in pl_module.code.parameters()])
        self.parity.append(pl_module.parity_models[0].weight.detach().clone())
        self.hand_made.append(bool(pl_module.code.encoder.hand_made_only and pl_module.code.decoder.hand_made_only))


def _fit(module: ParityModule, epochs: int) -> _Snapshots:
    x = torch.randn(64, 6)
    data = DataLoader(TensorDataset(x, torch.zeros(64, dtype=torch.long), torch.arange(64)), batch_size=16)
    snapshots = _Snapshots()
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[snapshots])
    trainer.fit(module, train_dataloaders=data)
    return snapshots


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_coder_stays_at_its_start_during_warmup_then_trains() -> None:
    module = _module(CoderSchedule(warmup=0.5, lr_scale=0.1))
    start = [p.detach().clone() for p in module.code.parameters()]
    snapshots = _fit(module, epochs=4)
    assert snapshots.hand_made == [True, True, False, False], "warm-up = floor(0.5 x 4) epochs"
    assert _same(snapshots.coder[0], start) and _same(snapshots.coder[1], start), "frozen during warm-up"
    assert not torch.equal(snapshots.parity[0], module.parity_models[0].weight.new_zeros(3, 6)) and \
        not torch.equal(snapshots.parity[0], snapshots.parity[1]), "F_P trains during warm-up"
    assert not _same(snapshots.coder[2], start) and not _same(snapshots.coder[3], snapshots.coder[2]), \
        "the coder trains after warm-up"
    assert not module.code.encoder.hand_made_only, "after training the whole learned code runs"


def test_without_warmup_the_coder_trains_from_the_first_epoch() -> None:
    module = _module(CoderSchedule())
    start = [p.detach().clone() for p in module.code.parameters()]
    snapshots = _fit(module, epochs=1)
    assert snapshots.hand_made == [False] and not _same(snapshots.coder[0], start)


def test_coder_has_its_own_param_group_at_a_scaled_lr() -> None:
    module = _module(CoderSchedule(warmup=0.5, lr_scale=0.1))
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Optimizer)
    (parity_group, coder_group) = optimizer.param_groups
    assert parity_group["lr"] == pytest.approx(1e-2) and coder_group["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in coder_group["params"]} == {id(p) for p in module.code.parameters()}
    assert {id(p) for p in parity_group["params"]} == {id(p) for p in module.parity_models.parameters()}, \
        "F is frozen and in no group"


def test_hand_made_only_skips_the_correction_exactly_at_the_start() -> None:
    module = _module(CoderSchedule())
    code = module.code
    groups = torch.randn(5, K, 6)
    full = code.encode(groups)
    code.encoder.hand_made_only = True
    assert torch.equal(code.encode(groups), code.encoder.base.encode(groups))
    torch.testing.assert_close(code.encode(groups), full)  # the correction is zero at the start
    with torch.no_grad():
        code.encoder.net[-1].bias.fill_(1.0)
    assert torch.equal(code.encode(groups), code.encoder.base.encode(groups)), "the correction is skipped"


def test_bad_schedules_are_refused_with_the_setting_to_fix() -> None:
    with pytest.raises(ValueError, match=r"share of trainer.max_epochs in \[0, 1\], got 2.0.*parity.coder_warmup"):
        CoderSchedule(warmup=2.0)
    with pytest.raises(ValueError, match="coder lr scale must be > 0, got 0.0.*parity.coder_lr_scale"):
        CoderSchedule(lr_scale=0.0)
    with pytest.raises(ValueError, match="max_epochs is -1. Set trainer.max_epochs"):
        CoderSchedule(warmup=0.5).warmup_epochs(-1)
    assert CoderSchedule(warmup=0.5).warmup_epochs(3) == 1 and CoderSchedule().warmup_epochs(None) == 0


def test_code_learned_defaults_to_warmup_slower_coder_and_tiled_parity_model() -> None:
    cfg = compose(["code=learned", "k=8"])
    assert (cfg.parity.coder_warmup, cfg.parity.coder_lr_scale) == (0.5, 0.1)
    assert cfg.parity_model._target_ == "parm.models.tiled.TiledParity" and cfg.parity_model.fit == "exact"
    plain = compose(["encoder=learned", "decoder=learned"])
    assert (plain.parity.coder_warmup, plain.parity.coder_lr_scale) == (0.0, 1.0), "only code=learned opts in"
    assert compose(["code=learned", "parity.coder_warmup=0"]).parity.coder_warmup == 0


@pytest.mark.parametrize(("warmup", "trained"), [("0.5", True), ("1.0", False)])
def test_train_py_code_learned_applies_the_warmup(tmp_path: Path, tiny_data_dir: Path, warmup: str,
                                                  trained: bool) -> None:
    """Through the pipeline: 2 epochs, warm-up 0.5 -> the corrections train in epoch 2; 1.0 -> they never do."""
    summary = run_train(tmp_path, tiny_data_dir, [*TINY, "code=learned", "k=4", "trainer.max_epochs=2",
                                                  f"parity.coder_warmup={warmup}"])
    assert load_parity(summary["artifacts"]["parity"]).code.names == ("learned", "learned")
    # parity.pt holds the best epoch's weights, which may be the warm-up's: read the last epoch's.
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    corrections = [state[f"code.{part}.net.4.weight"] for part in ("encoder", "decoder")]
    assert all(bool(w.abs().sum() > 0) == trained for w in corrections)
