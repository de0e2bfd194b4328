"""Shared fixtures. Tests run on CPU with one thread and never download anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)


# ---- tiny datasets in the real file layouts (see the shared data folder's README) -------------------------


def _learnable_images(rng: np.random.Generator, n: int, shape: tuple[int, ...], num_classes: int,
                      prototypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent block patterns plus noise: a small model beats chance within one epoch."""
    y = np.arange(n, dtype=np.int64) % num_classes
    rng.shuffle(y)
    noise = rng.integers(0, 60, size=(n, *shape))
    x = np.clip(prototypes[y] * 0.75 + noise, 0, 255).astype(np.uint8)
    return x, y


def _prototypes(rng: np.random.Generator, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    """One coarse (blocks of 4x4 pixels) random pattern per class, 0 or 255, of ``shape`` ``(H, W[, C])``."""
    h, w = shape[:2]
    coarse = rng.random((num_classes, h // 4, w // 4, *shape[2:])) > 0.6
    return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.float64) * 255


def _write_mnist_like(path: Path, seed: int, n_train: int = 600, n_test: int = 200) -> None:
    rng = np.random.default_rng(seed)
    protos = _prototypes(rng, 10, (28, 28))
    x_train, y_train = _learnable_images(rng, n_train, (28, 28), 10, protos)
    x_test, y_test = _learnable_images(rng, n_test, (28, 28), 10, protos)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _write_cifar(root: Path, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    protos = _prototypes(rng, 10, (32, 32, 3))
    x, y = _learnable_images(rng, 120, (32, 32, 3), 10, protos)
    for part, start in enumerate((0, 40, 80), start=1):
        np.savez_compressed(root / f"cifar10_train_part{part}.npz", x_train=x[start:start + 40],
                            y_train=y[start:start + 40], index_start=np.int64(start))
    x_test, y_test = _learnable_images(rng, 60, (32, 32, 3), 10, protos)
    np.savez_compressed(root / "cifar10_test.npz", x_test=x_test, y_test=y_test,
                        order_is_canonical=np.arange(60) < 20)

    protos = _prototypes(rng, 100, (32, 32, 3))
    x_train, y_train = _learnable_images(rng, 300, (32, 32, 3), 100, protos)
    x_test, y_test = _learnable_images(rng, 100, (32, 32, 3), 100, protos)
    np.savez_compressed(root / "cifar100.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _write_speech(path: Path, seed: int = 3) -> None:
    """Class-dependent tones with noise, int16 at 16 kHz, padded to 16000 samples like the real file."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    arrays: dict[str, np.ndarray] = {}
    for stage, n in (("train", 20), ("val", 10), ("test", 10)):
        y = np.arange(n, dtype=np.int64) % 10
        wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * y[:, None]) * t) + 0.05 * rng.standard_normal((n, 16000))
        x = (wave * 32767).astype(np.int16)
        length = np.full(n, 16000, dtype=np.int64)
        length[0], x[0, 12288:] = 12288, 0
        arrays |= {f"x_{stage}": x, f"y_{stage}": y, f"length_{stage}": length,
                   f"file_{stage}": np.asarray([f"word{c}/fake_nohash_{i}.wav" for i, c in enumerate(y)])}
    np.savez_compressed(path, **arrays)


def write_image_folder(root: Path, name: str = "catdog", per_class: tuple[int, int] = (24, 6)) -> Path:
    """``root/name/{train,test}/{cat,dog}/*.png|jpg``: non-square images, cats dark, dogs bright."""
    rng = np.random.default_rng(4)
    for stage, n in zip(("train", "test"), per_class, strict=True):
        for label, cls in enumerate(("cat", "dog")):
            folder = root / name / stage / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 100, (30, 40, 3)) + 120 * label
                suffix = "jpg" if i == 0 else "png"
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.{suffix}")
    return root / name


def write_tiny_datasets(root: Path) -> Path:
    """Write small versions of every dataset file the datamodules read into ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    _write_mnist_like(root / "mnist.npz", seed=0)
    _write_mnist_like(root / "fashion_mnist.npz", seed=1)
    _write_cifar(root)
    _write_speech(root / "speech_commands_10kw_subset.npz")
    write_image_folder(root)
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention folder of tiny datasets in the real layouts (600/200 MNIST images, ...).

    Copy it (``shutil.copytree``) before writing into it: it is shared by the whole session.
    """
    return write_tiny_datasets(tmp_path_factory.mktemp("tiny_data"))
