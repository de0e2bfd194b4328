"""Architectures, model files and model configs of ``parm.models`` (CPU, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from parm.models import (
    MLP,
    VGG11,
    LeNet5,
    ResNet18,
    build_from_spec,
    load_model,
    load_state_dict_checked,
    save_model,
)
from parm.models.model_files import FORMAT

torch.set_num_threads(1)

CONF = Path(__file__).resolve().parents[1] / "conf"
# Thin variants keep every test fast; the architecture is the same.
ARCHS = {
    "parm.models.mlp.MLP": {},
    "parm.models.lenet.LeNet5": {},
    "parm.models.resnet.ResNet18": {"width": 8},
    "parm.models.vgg.VGG11": {"width_mult": 0.125},
}
IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32)]


def spec_for(target: str, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> dict:
    return {"_target_": target, "input_shape": list(input_shape), "num_classes": num_classes, **ARCHS[target]}


def cases() -> list[tuple[str, tuple[int, ...]]]:
    shapes = [(t, s) for t in ARCHS for s in IMAGE_SHAPES]
    return [*shapes, ("parm.models.vgg.VGG11", (1, 40, 101))]


@pytest.mark.parametrize(("target", "input_shape"), cases())
def test_forward_shape(target: str, input_shape: tuple[int, ...]) -> None:
    model = build_from_spec(spec_for(target, input_shape, num_classes=7))
    out = model(torch.randn(2, *input_shape))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("cls", "input_shape", "kwargs"),
    [(LeNet5, (1, 12, 12), {}), (ResNet18, (3, 8, 8), {"width": 4}), (VGG11, (1, 8, 8), {"width_mult": 0.125})],
)
def test_smallest_supported_input(cls: type[nn.Module], input_shape: tuple[int, ...], kwargs: dict) -> None:
    model = cls(input_shape=input_shape, num_classes=3, **kwargs).eval()
    assert model(torch.randn(1, *input_shape)).shape == (1, 3)


def test_mlp_matches_reference_parameter_count() -> None:
    model = MLP(input_shape=(1, 28, 28), num_classes=10)
    expected = 784 * 200 + 200 + 200 * 100 + 100 + 100 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == expected


def test_resnet18_matches_cifar_reference_parameter_count() -> None:
    model = ResNet18(input_shape=(3, 32, 32), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_lenet5_parameters_do_not_depend_on_image_size() -> None:
    small = LeNet5(input_shape=(1, 28, 28), num_classes=10)
    large = LeNet5(input_shape=(1, 32, 32), num_classes=10)
    assert [p.shape for p in small.parameters()] == [p.shape for p in large.parameters()]


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (LeNet5, {"input_shape": (784,)}, ValueError, r"LeNet5 takes 3-d inputs .* got input_shape=\(784,\)"),
        (ResNet18, {"input_shape": (3, 32)}, ValueError, "ResNet18 takes 3-d inputs"),
        (VGG11, {"input_shape": (1, 40)}, ValueError, "VGG11 takes 3-d inputs"),
        (LeNet5, {"input_shape": (1, 28, 11)}, ValueError, "LeNet5 needs height and width >= 12"),
        (ResNet18, {"input_shape": (3, 4, 4)}, ValueError, "ResNet18 needs height and width >= 8"),
        (VGG11, {"input_shape": (1, 40, 7)}, ValueError, "VGG11 needs height and width >= 8"),
        (MLP, {"input_shape": (0, 28)}, ValueError, "positive sizes"),
        (MLP, {"input_shape": "1x28x28"}, TypeError, "sequence of ints"),
        (MLP, {"input_shape": (1, 28, 28), "num_classes": 0}, ValueError, r"MLP.num_classes must be >= 1"),
        (MLP, {"input_shape": (1, 28, 28), "hidden": (200, 0)}, ValueError, r"MLP.hidden must be >= 1"),
        (ResNet18, {"input_shape": (3, 32, 32), "width": 0}, ValueError, r"ResNet18.width must be >= 1"),
        (VGG11, {"input_shape": (1, 40, 101), "width_mult": 0}, ValueError, r"width_mult must be a number > 0"),
    ],
)
def test_invalid_arguments_are_refused(cls: type[nn.Module], kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cls(**{"num_classes": 10, **kwargs})


# --- model files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", list(ARCHS))
def test_save_load_roundtrip(tmp_path: Path, target: str) -> None:
    spec = spec_for(target, (3, 32, 32))
    model = build_from_spec(spec)
    model(torch.randn(4, 3, 32, 32))  # move BatchNorm running stats away from their initial values
    path = save_model(tmp_path / "f.pt", model, spec, meta={"dataset": "cifar10", "val_acc": 0.5})

    loaded, header = load_model(path, expected_spec=spec)

    assert type(loaded) is type(model)
    assert header == {"format": FORMAT, "spec": spec, "meta": {"dataset": "cifar10", "val_acc": 0.5}}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_model_file_loads_with_plain_torch_weights_only(tmp_path: Path) -> None:
    spec = spec_for("parm.models.mlp.MLP")
    path = save_model(tmp_path / "f.pt", build_from_spec(spec), spec)
    record = torch.load(path, weights_only=True)
    assert set(record) == {"format", "spec", "state_dict", "meta"}
    assert record["format"] == "parm.model/1" and record["spec"] == spec and record["meta"] is None


def test_save_is_atomic_and_overwrites(tmp_path: Path) -> None:
    spec = spec_for("parm.models.mlp.MLP")
    path = tmp_path / "sub" / "f.pt"
    save_model(path, build_from_spec(spec), spec)
    second = build_from_spec(spec)
    save_model(path, second, spec)
    assert [p.name for p in path.parent.iterdir()] == ["f.pt"]  # no temp file left behind
    assert torch.equal(load_model(path)[0].net[1].weight, second.net[1].weight)


def test_save_accepts_omegaconf_spec_and_stores_builtins(tmp_path: Path) -> None:
    node = OmegaConf.create(spec_for("parm.models.lenet.LeNet5"))
    model = build_from_spec(node)
    path = save_model(tmp_path / "f.pt", model, node)
    assert torch.load(path, weights_only=True)["spec"] == spec_for("parm.models.lenet.LeNet5")


def test_save_refuses_spec_of_another_class(tmp_path: Path) -> None:
    model = MLP(input_shape=(1, 28, 28), num_classes=10)
    with pytest.raises(TypeError, match=r"got a MLP but spec\['_target_'\] is 'parm.models.lenet.LeNet5'"):
        save_model(tmp_path / "f.pt", model, spec_for("parm.models.lenet.LeNet5"))


def test_save_refuses_non_builtin_meta(tmp_path: Path) -> None:
    spec = spec_for("parm.models.mlp.MLP")
    with pytest.raises(TypeError, match=r"meta\['when'\] is a object; model files hold only builtins"):
        save_model(tmp_path / "f.pt", build_from_spec(spec), spec, meta={"when": object()})


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ({"input_shape": [1, 28, 28]}, ValueError, "needs '_target_' as a dotted class path"),
        ({"_target_": "parm.models.nope.MLP"}, ValueError, r"cannot be imported .*Built-in: parm.models.mlp.MLP"),
        ({"_target_": "parm.models.mlp.Nope"}, ValueError, "module 'parm.models.mlp' has no attribute 'Nope'"),
        ({"_target_": "collections.OrderedDict"}, TypeError, "not an nn.Module subclass"),
        ({**spec_for("parm.models.mlp.MLP"), "_partial_": True}, ValueError, "'_partial_' is not supported"),
        ({**spec_for("parm.models.mlp.MLP"), "depth": 3}, TypeError, "Cannot build parm.models.mlp.MLP .*depth"),
    ],
)
def test_build_from_spec_errors(spec: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_from_spec(spec)


def test_build_from_spec_needs_no_hydra_but_accepts_its_nodes() -> None:
    model = build_from_spec({**spec_for("parm.models.mlp.MLP"), "_recursive_": False, "hidden": [16]})
    assert isinstance(model, MLP) and model.input_shape == (1, 28, 28) and model.hidden == (16,)


def test_architecture_mismatch_is_refused(tmp_path: Path) -> None:
    spec = spec_for("parm.models.mlp.MLP")
    path = save_model(tmp_path / "f.pt", build_from_spec(spec), spec)
    wanted = spec_for("parm.models.mlp.MLP", (3, 32, 32))
    with pytest.raises(
        ValueError,
        match=r"holds a parm\.models\.mlp\.MLP\(input_shape=\(1, 28, 28\), num_classes=10, hidden=\(200, 100\)\) "
        r"but the config asks for a parm\.models\.mlp\.MLP\(input_shape=\(3, 32, 32\).*differ in input_shape",
    ):
        load_model(path, expected_spec=wanted)
    with pytest.raises(ValueError, match=r"holds a parm\.models\.mlp\.MLP.*asks for a parm\.models\.lenet\.LeNet5"):
        load_model(path, expected_spec=spec_for("parm.models.lenet.LeNet5"))


def test_expected_spec_relying_on_defaults_matches(tmp_path: Path) -> None:
    spec = {**spec_for("parm.models.mlp.MLP"), "hidden": [200, 100]}
    path = save_model(tmp_path / "f.pt", build_from_spec(spec), spec)
    expected = OmegaConf.create({"_target_": "parm.models.MLP", "input_shape": [1, 28, 28], "num_classes": 10})
    model, _ = load_model(path, expected_spec=expected)
    assert model.hidden == (200, 100)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Checkpoint .*nowhere\.pt does not exist"):
        load_model(tmp_path / "nowhere.pt")


def _good_file(tmp_path: Path) -> Path:
    spec = spec_for("parm.models.lenet.LeNet5")
    return save_model(tmp_path / "good.pt", build_from_spec(spec), spec)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"\x00garbage bytes, not a torch file" * 20,
        lambda b: b"hello world",
        lambda b: b"",
        lambda b: b[: len(b) // 2],
        lambda b: b[:4185],
        lambda b: b[:-1],
    ],
    ids=["garbage", "text", "empty", "truncated-half", "truncated-early", "truncated-last-byte"],
)
def test_corrupt_file(tmp_path: Path, damage) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(damage(_good_file(tmp_path).read_bytes()))
    with pytest.raises(ValueError, match=r"Checkpoint .*bad\.pt is corrupted or not a parm model file: \S"):
        load_model(path)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([1, 2, 3], "corrupted or not a parm model file: it holds a list, not a dict"),
        ({"weights": torch.zeros(1)}, r"is a plain state_dict \(1 tensors\).*pass expected_spec.*model._target_="),
        ({"epochs": 3}, r"keys \['epochs'\]: not a parm model file \('format'\), a Lightning checkpoint"),
        ({"format": "parm.model/2", "spec": {}, "state_dict": {}}, "has format 'parm.model/2', but this parm reads"),
        ({"format": FORMAT, "spec": None, "state_dict": {}}, "its 'spec' or 'state_dict' entry is missing"),
    ],
)
def test_foreign_or_future_file(tmp_path: Path, payload: object, match: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_weights_of_another_shape_are_refused_readably(tmp_path: Path) -> None:
    spec = spec_for("parm.models.mlp.MLP")
    other = MLP(input_shape=(1, 28, 28), num_classes=10, hidden=(300, 100))
    path = tmp_path / "lying.pt"
    torch.save({"format": FORMAT, "spec": spec, "state_dict": other.state_dict(), "meta": None}, path)
    with pytest.raises(
        ValueError,
        match=r"lying\.pt does not fit MLP: shape mismatch \[net\.1\.weight: \(300, 784\) in the file vs \(200, 784\)",
    ):
        load_model(path)


def test_load_state_dict_checked_names_missing_and_unexpected_keys() -> None:
    model = MLP(input_shape=(4,), num_classes=2, hidden=(3,))
    state = dict(model.state_dict())
    del state["net.1.bias"]
    state["head.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"source X does not fit MLP: missing keys \[net\.1\.bias\].*unexpected keys \[head\.weight\]"
    ):
        load_state_dict_checked(model, state, source="source X")


# --- Lightning checkpoints -----------------------------------------------------------------------------------


def _lightning_like(tmp_path: Path, model: nn.Module, prefix: str = "model.") -> Path:
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    state["base_model.net.1.weight"] = torch.zeros(2, 2)  # a frozen F kept next to F_P is ignored
    path = tmp_path / "last.ckpt"
    ckpt = {
        "epoch": 3,
        "global_step": 70,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": state,
        "hyper_parameters": {"lr": 0.1},
    }
    torch.save(ckpt, path)
    return path


def test_lightning_style_checkpoint_loads_with_expected_spec(tmp_path: Path) -> None:
    spec = spec_for("parm.models.resnet.ResNet18", (3, 32, 32))
    model = build_from_spec(spec)
    loaded, header = load_model(_lightning_like(tmp_path, model), expected_spec=OmegaConf.create(spec))
    assert header == {
        "format": "lightning",
        "spec": spec,
        "meta": {"epoch": 3, "global_step": 70, "pytorch-lightning_version": "2.6.6"},
    }
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_lightning_checkpoint_needs_expected_spec(tmp_path: Path) -> None:
    path = _lightning_like(tmp_path, MLP(input_shape=(1, 28, 28), num_classes=10))
    with pytest.raises(ValueError, match="is a Lightning checkpoint, which does not record the architecture"):
        load_model(path)


def test_lightning_checkpoint_with_other_prefix(tmp_path: Path) -> None:
    spec = spec_for("parm.models.mlp.MLP")
    path = _lightning_like(tmp_path, build_from_spec(spec), prefix="parity_model.")
    with pytest.raises(ValueError, match=r"none of its state_dict keys start with 'model\.'"):
        load_model(path, expected_spec=spec)
    assert isinstance(load_model(path, expected_spec=spec, state_dict_prefix="parity_model.")[0], MLP)


def test_lightning_checkpoint_for_another_architecture(tmp_path: Path) -> None:
    path = _lightning_like(tmp_path, MLP(input_shape=(1, 28, 28), num_classes=10))
    with pytest.raises(ValueError, match=r"last\.ckpt does not fit MLP: shape mismatch \[net\.1\.weight"):
        load_model(path, expected_spec=spec_for("parm.models.mlp.MLP", (3, 32, 32)))


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
def test_real_lightning_checkpoint(tmp_path: Path) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    from torch.utils.data import DataLoader, TensorDataset

    spec = {"_target_": "parm.models.mlp.MLP", "input_shape": [1, 4, 4], "num_classes": 3, "hidden": [5]}

    class Lit(pl.LightningModule):
        def __init__(self, hparams: object) -> None:
            super().__init__()
            self.save_hyperparameters(hparams)
            self.model = build_from_spec(spec)

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            return nn.functional.cross_entropy(self.model(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,))), batch_size=2)
    lits = {"plain": Lit({"lr": 0.1}), "omegaconf": Lit(OmegaConf.create({"lr": 0.1}))}
    for name, lit in lits.items():
        trainer = pl.Trainer(
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            default_root_dir=tmp_path,
        )
        trainer.fit(lit, data)
        trainer.save_checkpoint(tmp_path / f"{name}.ckpt")
    model, header = load_model(tmp_path / "plain.ckpt", expected_spec=spec)
    assert header["meta"]["global_step"] == 1
    assert torch.equal(model.net[1].weight, lits["plain"].model.net[1].weight)
    with pytest.raises(ValueError, match=r"holds Python objects \(omegaconf\.dictconfig\.DictConfig\) that .*refuses"):
        load_model(tmp_path / "omegaconf.ckpt", expected_spec=spec)


# --- configs -------------------------------------------------------------------------------------------------

THIN = {"resnet18": {"width": 8}, "vgg11": {"width_mult": 0.125}, "tiled": {"tiles": 4, "fit": "exact"}}


CONFIGS = sorted((CONF / "model").glob("*.yaml")) + sorted((CONF / "parity_model").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_model_configs_build_with_and_without_hydra(path: Path) -> None:
    from hydra.utils import instantiate

    node = OmegaConf.load(path)
    if path.stem == "same":
        assert node == {}  # "copy the model node"
        return
    if path.stem == "base":  # the Learning-a-Code mode: F answers the parity queries, no network to build
        from parm.artifacts import uses_base

        assert uses_base(node)
        return
    from parm.pipeline import model_spec

    shape = {"vgg11": [1, 40, 101], "reference_mlp": [1, 28, 28]}.get(path.stem, [3, 32, 32])
    if path.stem != "reference_mlp":  # its constructor takes its own arguments, not parm's shapes
        assert OmegaConf.is_missing(node, "input_shape") and OmegaConf.is_missing(node, "num_classes")
    node.merge_with(THIN.get(path.stem, {}))
    spec = model_spec(node, shape, 5)  # fills input_shape/num_classes where the constructor takes them
    x = torch.randn(2, *shape)
    by_hydra = instantiate(OmegaConf.create(spec))
    by_spec = build_from_spec(spec)
    assert type(by_hydra) is type(by_spec)
    assert by_hydra(x).shape == by_spec(x).shape == (2, 5)
