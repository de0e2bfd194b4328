"""F as any deployed model: own classes, plain state dicts, TorchScript, torch.export, its own input."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from helpers import TINY, run_train
from parm.api import parity_module
from parm.base_model import check_accuracy, load_base, model_spec, parity_spec, recorded_accuracy, validation_accuracy
from parm.data import build_datamodule
from parm.models.checkpoint import load_model, save_model
from parm.models.deployed import DeployedModel, SerializedModel, check_transform
from parm.models.mlp import ReferenceMLP
from parm.serving.worker import WorkerSpec, load_instance_model

MEAN, STD = torch.tensor([0.13]), torch.tensor([0.31])

USER_MODEL = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 28 * 28, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))

def halve(x, scale=0.5):
    return x * scale
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A user's own model file, importable as ``user_model`` (as from the working directory)."""
    (tmp_path / "user_model.py").write_text(textwrap.dedent(USER_MODEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_model

    yield user_model
    sys.modules.pop("user_model", None)


def _standardized(n: int = 6) -> torch.Tensor:
    return (torch.rand(n, 1, 28, 28) - MEAN) / STD


def test_own_class_with_own_arguments_from_a_plain_state_dict(user_module, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = user_module.Net(width=8)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    node = {"_target_": "user_model.Net", "width": 8, "hidden": [200, 100], "input_shape": "???"}
    with pytest.warns(UserWarning, match=r"takes no hidden; ignored .*\+model.NAME=VALUE"):
        spec = model_spec(node, (1, 28, 28), 10)
    assert spec == {"_target_": "user_model.Net", "width": 8}  # no input_shape/num_classes forced on it
    f, header = load_base(tmp_path / "net.pt", spec, "standardized", MEAN, STD)
    x = _standardized()
    torch.testing.assert_close(f(x), net(x))
    assert header["format"] == "state_dict" and header["net_spec"] == spec


def test_plain_state_dict_without_a_spec_says_what_to_pass(tmp_path: Path) -> None:
    torch.save(ReferenceMLP().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match=r"plain state_dict .*model._target_=your_pkg.YourNet"):
        load_model(tmp_path / "sd.pt")


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_compiled_programs_load_save_and_serve(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ReferenceMLP().eval()
    path = tmp_path / f"f.{kind}"
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(net), path)
    else:
        torch.export.save(torch.export.export(net, (torch.rand(2, 1, 28, 28),),
                                              dynamic_shapes=({0: torch.export.Dim("batch")},)), path)
    f, header = load_base(path, None, "none", MEAN, STD)
    x = _standardized()
    with torch.no_grad():
        torch.testing.assert_close(f(x), net(x * STD + MEAN))  # raw [0, 1] pixels reach the program
    assert header["format"] == kind and header["net_spec"] is None
    base = save_model(tmp_path / "base.pt", f, header["spec"])  # base.pt of the run folder
    served = load_instance_model(WorkerSpec("model-0", str(base)))  # what a serving worker loads
    assert isinstance(served, DeployedModel) and isinstance(served.net, SerializedModel)
    with torch.no_grad():
        torch.testing.assert_close(served(x), net(x * STD + MEAN))
    with pytest.raises(ValueError, match=r"compiled program .*parity_model=mlp\|lenet5"):
        parity_spec(None, header["net_spec"], (1, 28, 28), (1, 28, 28), 10)


@pytest.mark.parametrize(
    ("transform", "expect"),
    [
        ("none", lambda p: p),
        ({"mean": [0.5], "std": [0.25]}, lambda p: (p - 0.5) / 0.25),
        ({"_target_": "user_model.halve", "scale": 0.25}, lambda p: p * 0.25),
        ("standardized", lambda p: (p - MEAN) / STD),
    ],
    ids=["none", "mean-std", "callable", "standardized"],
)
def test_input_transform_reaches_f_and_travels_in_base_pt(user_module, tmp_path: Path, transform, expect) -> None:
    seen: list[torch.Tensor] = []
    net = ReferenceMLP()
    net.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    spec = {"_target_": "parm.models.mlp.ReferenceMLP"}
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    f, header = load_base(tmp_path / "sd.pt", spec, transform, MEAN, STD)
    f.net.register_forward_pre_hook(lambda _, args: seen.append(args[0])) if isinstance(f, DeployedModel) else \
        f.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    pixels = torch.rand(4, 1, 28, 28)
    f((pixels - MEAN) / STD)
    torch.testing.assert_close(seen[-1], expect(pixels))
    path = save_model(tmp_path / "base.pt", f, header["spec"])
    again, _ = load_model(path)  # serving workers and evaluation read F back with its transform
    torch.testing.assert_close(again((pixels - MEAN) / STD), f((pixels - MEAN) / STD))


def test_a_different_transform_than_the_file_records_is_refused(tmp_path: Path) -> None:
    spec = {"_target_": "parm.models.mlp.ReferenceMLP"}
    torch.save(ReferenceMLP().state_dict(), tmp_path / "sd.pt")
    f, header = load_base(tmp_path / "sd.pt", spec, "none", MEAN, STD)
    path = save_model(tmp_path / "base.pt", f, header["spec"])
    assert load_base(path, spec, "standardized", MEAN, STD)[1]["spec"]["input_transform"] == "none"
    with pytest.raises(ValueError, match=r"records F's input transform none .*base.input_transform=mean="):
        load_base(path, spec, {"mean": [0.5], "std": [0.5]}, MEAN, STD)


def test_bad_transform_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"base.input_transform must be 'standardized' .*got 'raw'"):
        check_transform("raw")
    with pytest.raises(ValueError, match="std > 0"):
        check_transform({"mean": [0.5], "std": [0.0]})


def test_parity_spec_defaults_to_fs_architecture_or_names_the_choices() -> None:
    mlp = {"_target_": "parm.models.mlp.MLP", "input_shape": [1, 28, 28], "num_classes": 10}
    assert parity_spec({}, mlp, (1, 28, 28), (1, 56, 28), 10)["input_shape"] == [1, 56, 28]
    ref = {"_target_": "parm.models.mlp.ReferenceMLP"}
    assert parity_spec(None, ref, (1, 28, 28), (1, 28, 28), 10) == ref
    with pytest.raises(ValueError, match=r"shape \(1, 56, 28\).*takes no input_shape.*parity_model=mlp"):
        parity_spec(None, ref, (1, 28, 28), (1, 56, 28), 10)
    node = {"_target_": "parm.models.mlp.MLP", "input_shape": "???", "num_classes": "???"}
    assert parity_spec(node, ref, (1, 28, 28), (1, 56, 28), 10)["input_shape"] == [1, 56, 28]


def test_accuracy_check_reports_chance_and_drops() -> None:
    assert check_accuracy(0.97, 10, 0.979, "none") is None
    assert "near chance" in check_accuracy(0.11, 10, None, "standardized")  # type: ignore[operator]
    drop = check_accuracy(0.61, 10, 0.8947, "standardized")
    assert drop is not None and "0.285 below the 0.8947" in drop and "base.input_transform=standardized" in drop
    assert recorded_accuracy({"test": {"available_acc": 0.9}}) == 0.9 and recorded_accuracy(None) is None


def test_validation_accuracy_counts_correct_top1() -> None:
    x = torch.zeros(5, 1, 2, 2, dtype=torch.uint8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    y = torch.tensor([1, 1, 0, 1, 2])
    assert validation_accuracy(model, x, y, lambda t: t.float(), chunk=2) == 0.6


def test_python_api_trains_parity_models_for_any_module(tiny_data_dir: Path, user_module) -> None:
    dm = build_datamodule("mnist", data_dir=str(tiny_data_dir), download=False, group_size=2, groups_per_batch=8,
                          eval_groups_per_batch=16, val_size=50)
    torch.manual_seed(0)
    f = user_module.Net(width=8)
    module = parity_module(f, dm, input_transform="none", lr=1e-3)
    assert isinstance(module.base_model, DeployedModel) and type(module.parity_models[0]) is type(f)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    before = module.parity_models[0].conv.weight.detach().clone()
    trainer.fit(module, datamodule=dm)
    (results,) = trainer.test(module, datamodule=dm, verbose=False)
    assert "test/degraded_acc" in results and "test/available_acc" in results
    assert not torch.equal(before, module.parity_models[0].conv.weight)


def test_train_py_with_a_users_own_model_as_plain_state_dict(user_module, tmp_path: Path,
                                                              tiny_data_dir: Path) -> None:
    """`model._target_=user_model.Net +model.width=8 base.ckpt=net.pt`: no adapter code."""
    torch.manual_seed(0)
    torch.save(user_module.Net(width=8).state_dict(), tmp_path / "net.pt")
    overrides = [*TINY, "model._target_=user_model.Net", "+model.width=8", f"base.ckpt={tmp_path / 'net.pt'}"]
    with pytest.warns(UserWarning, match=r"near chance"):  # an untrained F: reported loudly before training
        summary = run_train(tmp_path, tiny_data_dir, overrides)
    assert 0.0 <= summary["test"]["degraded_acc"] <= 1.0
    base, header = load_model(tmp_path / "run" / "base.pt")  # the run folder holds F for serving
    assert header["spec"] == {"_target_": "user_model.Net", "width": 8}
    parity = torch.load(tmp_path / "run" / "parity.pt", weights_only=True)
    assert parity["meta"]["model_spec"] == header["spec"]  # F_P: F's own architecture
    from parm.serving.server import _read_model_files

    for policy, parity_path in (("plain", None), ("parm", str(tmp_path / "run" / "parity.pt"))):
        code, shape, normalization, task = _read_model_files(str(tmp_path / "run" / "base.pt"), parity_path, policy)
        assert shape == (1, 28, 28) and len(normalization["mean"]) == 1 and task == "classification"


def test_train_py_with_a_torchscript_f_and_its_raw_pixel_input(tmp_path: Path, tiny_data_dir: Path) -> None:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(ReferenceMLP().eval()), tmp_path / "f.pt")
    given = [*TINY, f"base.ckpt={tmp_path / 'f.pt'}", "base.input_transform=none", "base.check_accuracy=false"]
    with pytest.raises(ValueError, match=r"compiled program .*choose one: parity_model=mlp\|lenet5"):
        run_train(tmp_path, tiny_data_dir, given)
    summary = run_train(tmp_path, tiny_data_dir, [*given, "parity_model=mlp"], "run2")
    assert 0.0 <= summary["test"]["degraded_acc"] <= 1.0
    served = load_instance_model(WorkerSpec("model-0", summary["artifacts"]["base"]))
    assert isinstance(served, DeployedModel) and served.transform_spec == "none"


def test_an_input_transform_for_an_f_parm_trains_is_refused(tmp_path: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"base.input_transform=none .*describes a given F \(base.ckpt=...\)"):
        run_train(tmp_path, tiny_data_dir, [*TINY, "base.input_transform=none"])
