"""LightningDataModules that hold whole datasets as tensors and batch them in whole coding groups.

Hydra builds them through ``_target_`` (``conf/data/<name>.yaml``); :func:`build_datamodule` does the
same by name for tests and scripts.
"""

from __future__ import annotations

from typing import Any

from parm.data.base import DATA_DIR_ENV, Splits, TensorDataModule
from parm.data.image_folder import ImageFolderDataModule
from parm.data.loader import TensorLoader
from parm.data.localization import LocalizationDataModule, make_localization_set
from parm.data.speech import SpeechCommandsDataModule, log_mel_spectrogram, mel_filterbank
from parm.data.vision import CIFAR10DataModule, CIFAR100DataModule, FashionMNISTDataModule, MNISTDataModule

DATASETS: dict[str, type[TensorDataModule]] = {
    "mnist": MNISTDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "cifar100": CIFAR100DataModule,
    "speech_commands": SpeechCommandsDataModule,
    "image_folder": ImageFolderDataModule,
}


def build_datamodule(name: str, **kwargs: Any) -> TensorDataModule:
    """The datamodule registered as ``name`` (see :data:`DATASETS`), built with ``kwargs``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {sorted(DATASETS)}.")
    return DATASETS[name](**kwargs)


__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "LocalizationDataModule",
    "MNISTDataModule",
    "SpeechCommandsDataModule",
    "Splits",
    "TensorDataModule",
    "TensorLoader",
    "build_datamodule",
    "make_localization_set",
    "log_mel_spectrogram",
    "mel_filterbank",
]
