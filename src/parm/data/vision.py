"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from local ``.npz`` files, downloaded on first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from parm.data import download as remote
from parm.data.base import Splits, TensorDataModule
from parm.data.npz import check_split, missing, read_npz, save_npz


class _NpzVisionDataModule(TensorDataModule):
    """An image dataset stored as ``x_train, y_train, x_test, y_test`` arrays of ``(N, H, W[, C])`` uint8.

    Args:
        download: when a file is missing, fetch the dataset from its canonical mirrors
            (:mod:`parm.data.download`) and convert it to the ``.npz`` layout.
        **kwargs: as :class:`~parm.data.base.TensorDataModule`.
    """

    train_files: ClassVar[tuple[str, ...]]
    test_file: ClassVar[str]
    file_shape: ClassVar[tuple[int, ...]]  # one sample as stored in the file: (H, W) or (H, W, C)
    classes: ClassVar[tuple[str, ...]]

    def __init__(self, *, download: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.download = download

    def _paths(self) -> list[Path]:
        return [self.data_dir / name for name in dict.fromkeys((*self.train_files, self.test_file))]

    def prepare_data(self) -> None:
        """Download and convert the dataset when one of its files is missing (rank 0 only under DDP).

        Raises:
            FileNotFoundError: a file is missing and cannot be downloaded (off, offline, or no source);
                the message names the file, the folder and the download command.
        """
        absent = [path for path in self._paths() if not path.exists()]
        if not absent:
            return
        how = (f"Download it with `{remote.command(self.name, self.data_dir)}` on a machine with internet "
               f"access, or copy {absent[0].name} into that folder.")
        if self.name not in remote.SOURCES:
            raise missing(absent[0], self.name, f"parm cannot download it; copy {absent[0].name} into that folder.")
        if not self.download:
            raise missing(absent[0], self.name, f"data.download is off. {how}")
        print(f"[parm] {absent[0]} not found: downloading {self.name} into {self.data_dir}")
        try:
            remote.download(self.name, self.data_dir, self._write_files)
        except OSError as e:
            raise missing(absent[0], self.name, f"The download failed ({e}). {how}") from e

    def _write_files(self, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
        save_npz(self.data_dir / self.test_file, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])

    def _read(self, name: str, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.data_dir / name
        arrays = read_npz(path, (f"x_{stage}", f"y_{stage}"))
        return check_split(path, arrays[f"x_{stage}"], arrays[f"y_{stage}"], name=stage,
                           sample_shape=self.file_shape, num_classes=len(self.classes))

    @staticmethod
    def _to_nchw(x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()

    def load_splits(self) -> Splits:
        self.prepare_data()
        parts = [self._read(name, "train") for name in self.train_files]
        train_x = torch.cat([x for x, _ in parts])
        train_y = torch.cat([y for _, y in parts])
        test_x, test_y = self._read(self.test_file, "test")
        return Splits(train=(self._to_nchw(train_x), train_y), test=(self._to_nchw(test_x), test_y),
                      class_names=self.classes)


class MNISTDataModule(_NpzVisionDataModule):
    """MNIST digits from ``data_dir/mnist.npz``: ``(1, 28, 28)`` uint8, 10 classes."""

    name = "mnist"
    train_files = ("mnist.npz",)
    test_file = "mnist.npz"
    file_shape = (28, 28)
    classes = tuple(str(d) for d in range(10))


class FashionMNISTDataModule(_NpzVisionDataModule):
    """Fashion-MNIST from ``data_dir/fashion_mnist.npz``: ``(1, 28, 28)`` uint8, 10 classes."""

    name = "fashion_mnist"
    train_files = ("fashion_mnist.npz",)
    test_file = "fashion_mnist.npz"
    file_shape = (28, 28)
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


class CIFAR10DataModule(_NpzVisionDataModule):
    """CIFAR-10 from ``cifar10_train_part{1,2,3}.npz`` (concatenated in order) and ``cifar10_test.npz``.

    Samples are ``(3, 32, 32)`` uint8 RGB, 10 classes.
    """

    name = "cifar10"
    train_files = ("cifar10_train_part1.npz", "cifar10_train_part2.npz", "cifar10_train_part3.npz")
    test_file = "cifar10_test.npz"
    file_shape = (32, 32, 3)
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    part_starts: ClassVar[tuple[int, ...]] = (0, 17000, 34000)

    def _write_files(self, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
        ends = (*self.part_starts[1:], len(train[0]))
        for name, start, end in zip(self.train_files, self.part_starts, ends, strict=True):
            save_npz(self.data_dir / name, x_train=train[0][start:end], y_train=train[1][start:end],
                     index_start=np.asarray(start, dtype=np.int64))
        save_npz(self.data_dir / self.test_file, x_test=test[0], y_test=test[1],
                 order_is_canonical=np.ones(len(test[0]), dtype=bool))


class CIFAR100DataModule(_NpzVisionDataModule):
    """CIFAR-100 (fine labels) from ``data_dir/cifar100.npz``: ``(3, 32, 32)`` uint8 RGB, 100 classes."""

    name = "cifar100"
    train_files = ("cifar100.npz",)
    test_file = "cifar100.npz"
    file_shape = (32, 32, 3)
    classes = (
        "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
        "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
        "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
        "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
        "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
        "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
        "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
        "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
        "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
        "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
    )
