"""Box regression end to end: LocalizationDataModule, the regression task, and `train.py data=localization`."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import TINY, run_train
from parm.coding import CodeSpec, build_code
from parm.data import LocalizationDataModule, TensorLoader
from parm.lit import BaseModule, ParityModule
from parm.metrics import LocalizationMetrics, ParityMetrics, box_iou
from parm.tasks import TASKS, get_task

# Small enough to train F and F_P in a few seconds, large enough that both learn to localise.
LOCALIZATION = ["data=localization", "data.num_train=1200", "data.num_test=256", "data.image_size=16",
                "data.val_size=128", "data.groups_per_batch=16", "data.eval_groups_per_batch=64",
                "base.batch_size=32", "optimizer.lr=3e-3", "base.optimizer.lr=3e-3"]
IOU_KEYS = {"available_iou", "available_miou", "degraded_iou", "degraded_miou", "agreement_iou", "degraded_mse",
            "default_iou"}


def _datamodule(**kwargs: object) -> LocalizationDataModule:
    args = {"group_size": 2, "groups_per_batch": 4, "num_train": 64, "num_test": 32, "image_size": 16,
            "val_size": 16, **kwargs}
    return LocalizationDataModule(**args)  # type: ignore[arg-type]


def test_datamodule_serves_float_boxes_in_whole_groups() -> None:
    dm = _datamodule()
    dm.setup("fit")
    assert dm.task == "regression" and dm.output_shape == (4,) and dm.input_shape == (1, 16, 16)
    assert [len(dm.split(s)[0]) for s in ("train", "val", "test")] == [48, 16, 32]
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 16, 16) and y.shape == (8, 4) and y.dtype == torch.float32
    assert torch.equal(dm.split("train")[1][index], y)
    assert bool(((y >= 0) & (y <= 1)).all()) and bool((y[:, 2:] > y[:, :2]).all())
    xn, yn, _ = dm.on_after_batch_transfer((x, y, index), 0)
    assert xn.dtype == torch.float32 and torch.equal(yn, y)
    again = _datamodule(seed=5)  # another training seed: the same images, split differently
    assert torch.equal(again.split("test")[1].sort(dim=0).values, dm.split("test")[1].sort(dim=0).values)
    assert not torch.equal(_datamodule(generator_seed=1).split("test")[1], dm.split("test")[1])


def test_tensor_loader_accepts_float_targets() -> None:
    x, y = torch.randn(10, 3), torch.rand(10, 4)
    batches = list(TensorLoader(x, y, batch_size=4, shuffle=True, seed=1))
    assert [b[1].shape for b in batches] == [(4, 4), (4, 4), (2, 4)]
    assert torch.equal(torch.cat([b[1] for b in batches]).sort(dim=0).values, y.sort(dim=0).values)


def test_datamodule_refuses_augmentation_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="does not support augment=True.*data.augment=false"):
        _datamodule(augment=True)
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        _datamodule(image_size=4)
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        _datamodule(noise=-1.0)


def test_tasks_choose_loss_metrics_and_default_answer() -> None:
    classification, regression = get_task("classification"), get_task("regression")
    assert set(TASKS) == {"classification", "regression"} and get_task(regression) is regression
    assert classification.default_answer(torch.tensor([2, 1, 2, 0])) == 2
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    assert regression.default_answer(boxes) == [0.25, 0.25, 0.75, 0.75]
    assert isinstance(classification.parity_metrics(3, 1, (0.1,)), ParityMetrics)
    assert isinstance(regression.parity_metrics(4, None, (0.1,)), LocalizationMetrics)
    torch.testing.assert_close(regression.base_loss(boxes, boxes.flip(0)), torch.tensor(0.25))
    with pytest.raises(ValueError, match="Unknown task 'detection'; available"):
        get_task("detection")
    with pytest.raises(ValueError, match=r"needs 4 outputs per sample, got 10"):
        regression.parity_metrics(10, None, (0.1,))


def test_parity_module_refuses_kl_for_boxes() -> None:
    code = build_code("sum", "subtraction", CodeSpec(2, 1), (6,), (4,))
    with pytest.raises(ValueError, match=r"loss must be one of \('mse',\) for task=regression.*parity.loss=mse"):
        ParityModule(nn.Linear(6, 4), [nn.Linear(6, 4)], code, optimizer=functools.partial(torch.optim.Adam),
                     loss="kl", task="regression")


def test_modules_score_boxes_by_iou() -> None:
    torch.manual_seed(0)
    base = BaseModule(nn.Linear(6, 4), functools.partial(torch.optim.Adam), task="regression")
    x, boxes = torch.randn(8, 6), torch.rand(8, 4)
    loss = base.training_step((x, boxes, torch.arange(8)), 0)
    torch.testing.assert_close(loss, nn.functional.mse_loss(base.model(x), boxes))
    code = build_code("sum", "subtraction", CodeSpec(2, 1), (6,), (4,))
    module = ParityModule(nn.Linear(6, 4), [nn.Linear(6, 4)], code, optimizer=functools.partial(torch.optim.Adam),
                          task="regression", default_answer=[0.2, 0.2, 0.6, 0.6])
    module.test_step((x, boxes, torch.arange(8)), 0)
    values = module.test_metrics.compute()
    assert set(values) >= IOU_KEYS and "overall_iou@0.5" in values
    with torch.no_grad():
        expected = float(box_iou(module.base_model(x), boxes).mean())
    assert values["available_miou"] == pytest.approx(expected, rel=1e-5)


def test_train_localization_end_to_end_beats_default_box(tmp_path: Path) -> None:
    """`train.py data=localization`: F and F_P train by MSE, are tested by IoU, beat the mean training box."""
    summary = run_train(tmp_path, tmp_path / "data", [*TINY, *LOCALIZATION, "task=regression", "base.epochs=8",
                                                      "trainer.max_epochs=10", "trainer.limit_train_batches=null",
                                                      "trainer.limit_val_batches=null",
                                                      "trainer.limit_test_batches=null"])
    test = summary["test"]
    assert summary["task"] == "regression" and set(test) >= IOU_KEYS
    assert "degraded_acc" not in test and set(summary["overall"]) == {"0.01", "0.05", "0.1", "0.2", "0.5"}
    assert test["available_iou"] > 0.3 and test["available_miou"] > 0.6
    assert test["degraded_iou"] > test["default_iou"]
    # The mean training box as every missing answer: F_P's decoded boxes must overlap the truth far better.
    dm = _datamodule(num_train=1200, num_test=256, val_size=128)
    default = torch.tensor(get_task("regression").default_answer(dm.split("train")[1]))
    truth = dm.split("test")[1]
    default_miou = float(box_iou(default.expand_as(truth), truth).mean())
    assert test["degraded_miou"] > default_miou + 0.1, (test, default_miou)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["test"] == test and on_disk["task"] == "regression"
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    monitors = [s.get("monitor") for k, s in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert monitors == ["val/agreement_iou", None]  # best by IoU agreement; last.ckpt every epoch


def test_stage_base_reports_iou(tmp_path: Path) -> None:
    summary = run_train(tmp_path, tmp_path, [*TINY, *LOCALIZATION, "stage=base"])
    assert set(summary["test"]) == {"available_iou", "available_miou"} and summary["task"] == "regression"
    assert 0.0 <= summary["test"]["available_miou"] <= 1.0


def test_kl_and_mismatched_task_are_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"for task=regression.*means nothing for boxes.*parity.loss=mse"):
        run_train(tmp_path, tmp_path, [*TINY, *LOCALIZATION, "parity.loss=kl"])
    assert not (tmp_path / "cache").exists(), "the refusal must come before F is trained"
    with pytest.raises(ValueError, match="task=classification does not fit LocalizationDataModule.*Drop task="):
        run_train(tmp_path, tmp_path, [*TINY, *LOCALIZATION, "task=classification"])
