"""Datamodules on tiny fake files in the real layouts (and the real MNIST when present)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from parm.data import DATASETS, TensorDataModule, build_datamodule, log_mel_spectrogram, mel_filterbank, transforms
from parm.data.loader import TensorLoader

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"
SMALL = {"group_size": 2, "groups_per_batch": 4, "eval_groups_per_batch": 8, "val_size": 10}
# name -> (input_shape, num_classes, stored dtype)
EXPECTED = {
    "mnist": ((1, 28, 28), 10, torch.uint8),
    "fashion_mnist": ((1, 28, 28), 10, torch.uint8),
    "cifar10": ((3, 32, 32), 10, torch.uint8),
    "cifar100": ((3, 32, 32), 100, torch.uint8),
    "speech_commands": ((1, 40, 101), 10, torch.float32),
    "image_folder": ((3, 64, 64), 2, torch.uint8),
}


def mnist(data_dir: Path, **kwargs: object) -> TensorDataModule:
    return build_datamodule("mnist", data_dir=str(data_dir), download=False, **{**SMALL, **kwargs})


def fresh_copy(tiny_data_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))


# ---- shapes, dtypes, properties --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shapes_dtypes_and_properties(name: str, tiny_data_dir: Path) -> None:
    shape, num_classes, dtype = EXPECTED[name]
    dm = build_datamodule(name, data_dir=str(tiny_data_dir), **SMALL)
    dm.setup("fit")
    assert dm.input_shape == shape
    assert dm.num_classes == num_classes == len(dm.class_names)
    assert dm.mean.shape == dm.std.shape == (shape[0],)
    assert dm.train_label_counts.sum() == len(dm.split("train")[0])
    for stage, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()),
                          ("test", dm.test_dataloader())):
        x, y, index = next(iter(loader))
        assert x.shape[1:] == shape and x.dtype == dtype, stage
        assert y.dtype == index.dtype == torch.int64
        assert torch.equal(dm.split(stage)[0][index], x) and torch.equal(dm.split(stage)[1][index], y)
        assert int(y.max()) < num_classes
        xn, yn, _ = dm.on_after_batch_transfer((x, y, index), 0)
        assert xn.dtype == torch.float32 and xn.shape == x.shape and torch.equal(yn, y)


def test_normalisation_statistics(tiny_data_dir: Path) -> None:
    dm = build_datamodule("cifar10", data_dir=str(tiny_data_dir), **SMALL)
    x = dm.normalize(dm.split("train")[0])
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    ref = dm.split("train")[0].double().div(255).numpy()
    np.testing.assert_allclose(dm.mean.numpy(), ref.mean(axis=(0, 2, 3)), atol=1e-6)


def test_speech_uses_its_own_split_and_rejects_augment(tiny_data_dir: Path) -> None:
    dm = build_datamodule("speech_commands", data_dir=str(tiny_data_dir), **SMALL)
    assert [len(dm.split(s)[0]) for s in ("train", "val", "test")] == [20, 10, 10]
    with pytest.raises(ValueError, match="augment=True is not supported for speech_commands"):
        build_datamodule("speech_commands", data_dir=str(tiny_data_dir), **SMALL, augment=True)


def test_spectrogram_shape_and_filterbank() -> None:
    fb = mel_filterbank()
    assert fb.shape == (40, 257) and (fb >= 0).all() and (fb.sum(dim=1) > 0).all()
    t = torch.arange(16000) / 16000
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (300.0, 1000.0, 4000.0)])
    spec = log_mel_spectrogram((tones * 20000).to(torch.int16))
    assert spec.shape == (3, 1, 40, 101) and spec.dtype == torch.float32
    peaks = spec[:, 0].mean(dim=-1).argmax(dim=-1)
    assert peaks[0] < peaks[1] < peaks[2]


# ---- splits, batches and coding groups -------------------------------------------------------------


def test_seeded_split_is_reproducible_and_disjoint(tiny_data_dir: Path) -> None:
    a, b, c = mnist(tiny_data_dir, seed=1), mnist(tiny_data_dir, seed=1), mnist(tiny_data_dir, seed=2)
    assert torch.equal(a.source_index("val").sort().values, b.source_index("val").sort().values)
    assert not torch.equal(a.source_index("val").sort().values, c.source_index("val").sort().values)
    both = torch.cat([a.source_index("train"), a.source_index("val")])
    assert torch.equal(both.sort().values, torch.arange(600))
    assert len(a.split("val")[0]) == 10
    assert len(mnist(tiny_data_dir, val_size=0.25).split("val")[0]) == 150


def test_train_batches_hold_whole_groups_and_reshuffle(tiny_data_dir: Path) -> None:
    dm = mnist(tiny_data_dir, group_size=3, groups_per_batch=7)
    loader = dm.train_dataloader()
    n = len(dm.split("train")[0])
    assert len(loader) == n // 21
    epoch0 = [index for _, _, index in loader]
    epoch1 = [index for _, _, index in loader]
    assert all(len(index) == 21 for index in epoch0 + epoch1)
    assert len(torch.cat(epoch0).unique()) == len(loader) * 21
    assert not torch.equal(torch.cat(epoch0), torch.cat(epoch1))
    again = dm.train_dataloader()
    again.sampler.set_epoch(1)
    assert torch.equal(torch.cat([index for _, _, index in again]), torch.cat(epoch1))


def test_eval_batches_fixed_order_last_partial(tiny_data_dir: Path) -> None:
    dm = mnist(tiny_data_dir, group_size=3, eval_groups_per_batch=16)
    batches = list(dm.test_dataloader())
    assert [len(i) for _, _, i in batches] == [48, 48, 48, 48, 8]
    assert torch.equal(torch.cat([i for _, _, i in batches]), torch.arange(200))
    assert torch.equal(torch.cat([i for _, _, i in dm.test_dataloader()]), torch.arange(200))


def test_group_order(tiny_data_dir: Path) -> None:
    consecutive = mnist(tiny_data_dir, group_order="consecutive")
    shuffled = mnist(tiny_data_dir, group_order="shuffled")
    assert torch.equal(consecutive.source_index("test"), torch.arange(200))
    order = shuffled.source_index("test")
    assert not torch.equal(order, torch.arange(200)) and torch.equal(order.sort().values, torch.arange(200))
    assert torch.equal(order, mnist(tiny_data_dir, group_order="shuffled").source_index("test"))
    x_c, y_c = consecutive.split("test")
    x_s, y_s = shuffled.split("test")
    assert torch.equal(x_s, x_c[order]) and torch.equal(y_s, y_c[order])


def test_loader_rejects_mismatched_tensors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        TensorLoader(torch.zeros(3, 1, 2, 2), torch.zeros(4), 2)


# ---- augmentation ----------------------------------------------------------------------------------


def test_random_crop_is_a_window_of_the_padded_image() -> None:
    x = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = transforms.random_crop(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = padded.unfold(2, 8, 1).unfold(3, 8, 1)  # (B, C, 5, 5, 8, 8)
    for b in range(16):
        assert any(torch.equal(windows[b, :, i, j], out[b]) for i in range(5) for j in range(5))
    assert (out == 0).any()  # some crop reached the zero padding
    assert transforms.random_crop(x, padding=0) is x


def test_random_hflip() -> None:
    x = torch.arange(2 * 1 * 2 * 3).view(2, 1, 2, 3)
    assert torch.equal(transforms.random_hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(transforms.random_hflip(x, p=1.0)[0, 0, 0], torch.tensor([2, 1, 0]))
    assert torch.equal(transforms.random_hflip(x, p=0.0), x)
    pairs = torch.tensor([0, 1]).expand(64, 1, 1, 2)
    flipped = transforms.random_hflip(pairs, generator=torch.Generator().manual_seed(0))[:, 0, 0, 0] == 1
    assert 0 < int(flipped.sum()) < 64


def test_augmentation_only_for_training(tiny_data_dir: Path) -> None:
    dm = build_datamodule("cifar10", data_dir=str(tiny_data_dir), **SMALL, augment=True)
    batch = next(iter(dm.val_dataloader()))
    plain = dm.normalize(batch[0])
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], plain)  # no trainer attached
    dm.trainer = SimpleNamespace(training=False)  # type: ignore[assignment]
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], plain)
    dm.trainer = SimpleNamespace(training=True)  # type: ignore[assignment]
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)[0], plain)
    dm.augment = False
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], plain)


# ---- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"group_size": 0}, "group_size must be an int >= 1"),
        ({"group_size": True}, "group_size must be an int"),
        ({"val_size": 1.5}, "val_size must be an int >= 0"),
        ({"val_size": -1}, "val_size must be"),
        ({"group_order": "random"}, "group_order must be one of"),
        ({"augment": "yes"}, "augment must be True or False"),
        ({"groups_per_batch": 400}, "fewer than one batch"),
        ({"val_size": 600}, "leaves no training data"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str, tiny_data_dir: Path) -> None:
    with pytest.raises(ValueError, match=match):
        mnist(tiny_data_dir, **kwargs).setup()


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'; available:"):
        build_datamodule("imagenet", group_size=2)


def test_data_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARM_DATA_DIR", str(tmp_path))
    assert build_datamodule("mnist", group_size=2).data_dir == tmp_path
    monkeypatch.delenv("PARM_DATA_DIR")
    assert build_datamodule("mnist", group_size=2).data_dir == Path("data")


def test_missing_file_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected the file .*mnist\.npz.*data_dir=.*PARM_DATA_DIR"):
        mnist(tmp_path).setup()
    with pytest.raises(FileNotFoundError, match=r"cifar10_train_part1\.npz.*data.download is off. Download it with "
                       r"`python -m parm.data.download cifar10 --data-dir .*`"):
        build_datamodule("cifar10", data_dir=str(tmp_path), download=False, group_size=2).setup()
    with pytest.raises(FileNotFoundError, match=r"catdog.*train.*<class>"):
        build_datamodule("image_folder", data_dir=str(tmp_path), group_size=2).setup()


def _rewrite_mnist(path: Path, **changes: np.ndarray | None) -> None:
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez_compressed(path, **arrays)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"y_test": None}, r"missing array\(s\) \['y_test'\]"),
        ({"y_train": np.full(600, 10)}, r"y_train has labels in \[10, 10\], expected \[0, 9\]"),
        ({"y_test": np.zeros(199, dtype=np.int64)}, "x_test holds 200 samples but y_test holds 199"),
        ({"x_train": np.zeros((600, 28, 28), dtype=np.float32)}, "x_train has dtype float32, expected uint8"),
        ({"x_test": np.zeros((200, 32, 32), dtype=np.uint8)}, r"x_test has shape \(200, 32, 32\)"),
    ],
)
def test_corrupt_file_errors(changes: dict, match: str, tiny_data_dir: Path, tmp_path: Path) -> None:
    data = fresh_copy(tiny_data_dir, tmp_path)
    _rewrite_mnist(data / "mnist.npz", **changes)
    with pytest.raises(ValueError, match=f"mnist.npz is corrupt.*{match}.*Delete it and re-create it"):
        mnist(data).setup()


def test_truncated_file(tiny_data_dir: Path, tmp_path: Path) -> None:
    data = fresh_copy(tiny_data_dir, tmp_path)
    raw = (data / "mnist.npz").read_bytes()
    (data / "mnist.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"mnist\.npz is corrupt.*Delete it and re-create it"):
        mnist(data).setup()


# ---- image folder cache ----------------------------------------------------------------------------


def test_image_folder_cache_created_then_reused(tiny_data_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_data_dir / "catdog", tmp_path / "catdog")
    kwargs = {**SMALL, "val_size": 4, "image_size": 16}
    first = build_datamodule("image_folder", data_dir=str(tmp_path), **kwargs)
    assert not first.cache_path.exists()
    first.setup()
    assert first.cache_path == tmp_path / "catdog_16.npz" and first.cache_path.exists()
    assert first.class_names == ("cat", "dog") and first.input_shape == (3, 16, 16)
    assert first.train_label_counts.sum() + 4 == 48
    shutil.rmtree(tmp_path / "catdog")  # the second run must read only the cache
    second = build_datamodule("image_folder", data_dir=str(tmp_path), **kwargs)
    for stage in ("train", "val", "test"):
        assert torch.equal(first.split(stage)[0], second.split(stage)[0])
    x = first.split("train")[0].float()
    y = first.split("train")[1]
    assert x[y == 1].mean() > x[y == 0].mean() + 50  # dogs were drawn brighter: labels follow folders


# ---- configs and Lightning integration -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_config_instantiates(name: str, tiny_data_dir: Path) -> None:
    root = OmegaConf.create({"data_dir": str(tiny_data_dir), "k": 2, "seed": 0,
                             "data": OmegaConf.load(CONF_DIR / f"{name}.yaml")})
    dm = instantiate(root.data, groups_per_batch=4, **({} if name == "image_folder" else {"val_size": 10}))
    assert isinstance(dm, DATASETS[name]) and dm.group_size == 2
    assert dm.input_shape == EXPECTED[name][0]


class _Probe(pl.LightningModule):
    """Logistic regression that records what the datamodule hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(784, 10)
        self.train_batches: list[tuple[torch.dtype, int]] = []
        self.train_index: dict[int, list[torch.Tensor]] = {}
        self.val_correct = self.val_total = 0

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        self.train_batches.append((x.dtype, len(x)))
        self.train_index.setdefault(self.current_epoch, []).append(index)
        return torch.nn.functional.cross_entropy(self.linear(x.flatten(1)), y)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, _ = batch
        self.val_correct += int((self.linear(x.flatten(1)).argmax(1) == y).sum())
        self.val_total += len(y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_lightning_fit_learns_tiny_mnist(tiny_data_dir: Path) -> None:
    dm = mnist(tiny_data_dir, val_size=100, eval_groups_per_batch=16, augment=True)
    model = _Probe()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert model.train_batches and all(b == (torch.float32, 8) for b in model.train_batches)
    assert len(model.train_batches) == 2 * (500 // 8)
    assert model.val_correct / model.val_total > 0.5  # chance is 0.1
    # Every epoch is a fresh permutation, reproducible from (seed, epoch): Lightning drove set_epoch.
    replay = dm.train_dataloader()
    for epoch in (0, 1):
        replay.sampler.set_epoch(epoch)
        assert torch.equal(torch.cat(model.train_index[epoch]), torch.cat([i for _, _, i in replay]))
    assert not torch.equal(torch.cat(model.train_index[0]), torch.cat(model.train_index[1]))


# The shared data folder sits beside the checkout (as the README's ../shared/data); PARM_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("PARM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist.npz").exists(),
    reason="real MNIST not available (set PARM_SHARED_DATA)",
)
def test_real_mnist() -> None:
    dm = build_datamodule("mnist", data_dir=str(SHARED_DATA),
                          group_size=2, download=False)
    assert dm.split("train")[0].shape == (55000, 1, 28, 28) and dm.split("test")[0].shape == (10000, 1, 28, 28)
    assert abs(float(dm.mean) - 0.1307) < 2e-3 and abs(float(dm.std) - 0.3081) < 2e-3
    counts = dm.train_label_counts + torch.bincount(dm.split("val")[1], minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cache_and_gpu_augmentation(tiny_data_dir: Path) -> None:
    dm = build_datamodule("cifar10", data_dir=str(tiny_data_dir), **SMALL, augment=True, device_cache=True)
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    model = _Probe()
    model.linear = torch.nn.Linear(3 * 32 * 32, 10)
    trainer.fit(model, datamodule=dm)
    assert dm.split("train")[0].is_cuda and model.train_batches


def test_normalize_copies_the_channel_stats_to_a_device_once(tiny_data_dir: Path) -> None:
    """A blocking host-to-GPU copy of mean/std per batch would synchronise every training step."""
    dm = build_datamodule("mnist", data_dir=str(tiny_data_dir), **SMALL)
    dm.setup("fit")
    batch = torch.zeros(4, 1, 28, 28, dtype=torch.uint8, device="meta")  # any non-CPU device
    dm.normalize(batch)
    first = dm._device_stats[torch.device("meta")]
    out = dm.normalize(batch)
    assert dm._device_stats[torch.device("meta")][0] is first[0] and out.device.type == "meta"
    assert out.dtype == torch.float32 and out.shape == batch.shape
