"""Training shows its loss without reading a tensor on the host every step (a GPU sync each time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import TINY, compose_train


@pytest.mark.parametrize("stage", ["parity", "base"])
def test_training_reads_tensors_on_the_host_only_on_logging_steps(tmp_path: Path, tiny_data_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   stage: str) -> None:
    from hydra.utils import instantiate

    from parm import pipeline
    from parm.lit import BaseModule, HostProgressBar
    from parm.models.checkpoint import build_from_spec

    cfg = compose_train(tmp_path, tiny_data_dir, [*TINY, f"stage={stage}", "trainer.limit_train_batches=40",
                                                  "trainer.log_every_n_steps=10", "trainer.limit_val_batches=0",
                                                  "data.groups_per_batch=2", "base.batch_size=4",
                                                  "+base.optimizer.fused=true"])  # no per-step CPU step-count read
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    spec = pipeline.model_spec(cfg.model, datamodule.input_shape, datamodule.num_classes)
    if stage == "parity":
        module = pipeline.build_parity(cfg, datamodule, spec, tmp_path / "run").module
    else:
        module = BaseModule(build_from_spec(spec), instantiate(cfg.base.optimizer))
    trainer = pipeline.make_trainer(cfg, tmp_path / "run", monitor="val/x", max_epochs=1, enable_progress_bar=True)
    assert any(isinstance(cb, HostProgressBar) for cb in trainer.callbacks)
    reads = {"n": 0}
    for name in ("item", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, _original=original) -> object:  # noqa: ANN001
            reads["n"] += 1
            return _original(self)

        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 40
    # 4 logging steps: the loss check plus Lightning writing the logs. Prog-bar tensors would add 40.
    assert reads["n"] <= 4 * 3, f"{reads['n']} host reads in 40 steps"
    assert module.progress_values["loss"] > 0, "the bar has a loss to show"


def test_progress_bar_shows_the_host_loss() -> None:
    from types import SimpleNamespace

    from parm.lit import HostProgressBar

    bar = HostProgressBar()
    module = SimpleNamespace(progress_values={"loss": 0.123456})
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={})
    assert bar.get_metrics(trainer, module)["loss"] == "0.1235"  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cache_targets,augment", [(True, False), (False, True)])
def test_gpu_training_steps_never_synchronise(tmp_path: Path, tiny_data_dir: Path, cache_targets: bool,
                                              augment: bool) -> None:
    """With CUDA's sync debug mode set to raise, training steps between logging steps run through Lightning
    (data on the GPU, augmentation, bf16, channels_last): any host<->GPU synchronisation fails the fit."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from parm import pipeline

    class RaiseOnSync(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                                 batch_idx: int) -> None:
            if batch_idx == 2:  # after first-step allocations and the target precompute
                torch.cuda.set_sync_debug_mode("error")

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            torch.cuda.set_sync_debug_mode("default")

    cfg = compose_train(tmp_path, tiny_data_dir, [
        *TINY, "data=cifar10", "model=resnet18", "model.width=8", "encoder=concat", "trainer=gpu",
        "trainer.limit_train_batches=12", "trainer.log_every_n_steps=1000", "trainer.limit_val_batches=0",
        f"parity.cache_targets={str(cache_targets).lower()}", f"data.augment={str(augment).lower()}",
        "data.device_cache=true", "data.groups_per_batch=2", "data.val_size=40"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    spec = pipeline.model_spec(cfg.model, datamodule.input_shape, datamodule.num_classes)
    module = pipeline.build_parity(cfg, datamodule, spec, tmp_path / "run").module
    trainer = pipeline.make_trainer(cfg, tmp_path / "run", monitor="val/x", max_epochs=1, enable_progress_bar=True)
    trainer.callbacks.append(RaiseOnSync())
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.global_step == 12
