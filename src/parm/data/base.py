"""The datamodule contract: whole datasets held as tensors, batches that hold whole coding groups."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from parm.data import transforms
from parm.data.loader import Batch, TensorLoader

DATA_DIR_ENV = "PARM_DATA_DIR"
GROUP_ORDERS = ("shuffled", "consecutive")
STAGES = ("train", "val", "test")

XY = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Splits:
    """What a dataset's loader returns: ``(x, y)`` per split plus the class names.

    ``x`` is ``(N, C, H, W)`` uint8 (images) or float32 (audio features); ``y`` is ``(N,)`` int64 labels,
    or ``(N, D)`` float32 targets for regression (then ``class_names`` is empty).
    ``val`` is None when the dataset has no official validation split: it is then drawn from train.
    """

    train: XY
    test: XY
    class_names: tuple[str, ...]
    val: XY | None = None


def _derived_seed(*entropy: int) -> int:
    """A 63-bit seed mixed from ``entropy``, so that the streams of (seed, purpose) pairs never collide."""
    state = np.random.SeedSequence(list(entropy)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _seeded_generator(*entropy: int) -> torch.Generator:
    return torch.Generator().manual_seed(_derived_seed(*entropy))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return value


def _check_val_size(value: Any) -> int | float:
    if isinstance(value, float) and 0.0 < value < 1.0:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"val_size must be an int >= 0 (a sample count) or a float in (0, 1) (a fraction of the "
                     f"training set), got {value!r}.")


def channel_stats(x: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``(N, C, H, W)`` data in :func:`transforms.to_unit_float`'s scale.

    Accumulates in float64 over chunks of samples, so CIFAR-sized uint8 data never becomes one big float copy.

    Returns:
        ``(C,)`` float32 mean and ``(C,)`` float32 (population) std.
    """
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = transforms.to_unit_float(x[start:start + chunk].cpu()).double()
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = max(len(x) * x.shape[2] * x.shape[3], 1)
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


class TensorDataModule(pl.LightningDataModule):
    """A dataset held in memory as tensors, served in batches of whole coding groups.

    Subclasses implement :meth:`load_splits` (and :meth:`prepare_data` when they can download).
    Data is loaded on first :meth:`setup`, or on first access of a data-dependent property.

    Batches are ``(x, y, index)``: ``x`` ``(B, C, H, W)`` (uint8 or float as stored; normalised float32
    once :meth:`on_after_batch_transfer` has run), ``y`` ``(B,)`` int64 (or ``(B, D)`` float32 regression
    targets), and ``index`` ``(B,)`` int64,
    each sample's row in :meth:`split` of that stage (a stable key for caching the base model's outputs).
    Consecutive runs of ``group_size`` samples in a batch form one coding group.

    Args:
        data_dir: folder of the dataset files; None reads ``$PARM_DATA_DIR``, else ``./data``.
        group_size: k, the samples per coding group. Train batches hold ``groups_per_batch * k`` samples
            exactly; eval batches hold ``eval_groups_per_batch * k`` (the last may be partial).
        groups_per_batch: coding groups per training batch.
        eval_groups_per_batch: coding groups per validation/test batch.
        val_size: samples (int) or fraction (float) of train held out for validation with a seeded split;
            ignored by datasets that ship their own validation split.
        seed: seeds the val split, the per-epoch train shuffle, the eval group order and augmentation.
        group_order: ``"shuffled"`` forms eval coding groups from a seeded permutation of val/test;
            ``"consecutive"`` keeps dataset order.
        augment: random crop (4-pixel zero padding) and horizontal flip on training batches.
        device_cache: when training on CUDA, keep all splits on the GPU (no host-to-device copies).
    """

    name: str = ""  # the dataset's name in messages and in Hydra's `data=` group
    task: str = "classification"  # what the targets are, a name in parm.tasks.TASKS

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        group_size: int,
        groups_per_batch: int = 64,
        eval_groups_per_batch: int = 256,
        val_size: int | float = 5000,
        seed: int = 0,
        group_order: str = "shuffled",
        augment: bool = False,
        device_cache: bool = False,
    ) -> None:
        super().__init__()
        if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
            raise ValueError(f"data_dir must be a path or None, got {data_dir!r}.")
        self.data_dir = Path(data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or "data").expanduser()
        self.group_size = _check_int("group_size", group_size, 1)
        self.groups_per_batch = _check_int("groups_per_batch", groups_per_batch, 1)
        self.eval_groups_per_batch = _check_int("eval_groups_per_batch", eval_groups_per_batch, 1)
        self.val_size = _check_val_size(val_size)
        self.seed = _check_int("seed", seed, 0)
        if group_order not in GROUP_ORDERS:
            raise ValueError(f"group_order must be one of {GROUP_ORDERS}, got {group_order!r}.")
        self.group_order = group_order
        for flag, value in (("augment", augment), ("device_cache", device_cache)):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be True or False, got {value!r}.")
        self.augment = augment
        self.device_cache = device_cache
        self.save_hyperparameters()
        self._splits: dict[str, XY] = {}
        self._source_index: dict[str, torch.Tensor] = {}
        self._class_names: tuple[str, ...] = ()
        self._mean = self._std = torch.empty(0)
        self._device_stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._aug_generators: dict[torch.device, torch.Generator] = {}

    # ---- subclass hook -------------------------------------------------------------------------

    def load_splits(self) -> Splits:
        """Read the dataset from :attr:`data_dir` (fetching it first if possible)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_splits().")

    # ---- loading ---------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Load all splits once (idempotent); move them to the GPU when ``device_cache`` asks for it."""
        if not self._splits:
            self._prepare(self.load_splits())
        if self.device_cache and self.trainer is not None:
            device = self.trainer.strategy.root_device
            if device.type == "cuda" and self._splits["train"][0].device != device:
                self._splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self._splits.items()}

    def _prepare(self, splits: Splits) -> None:
        train_x, train_y = splits.train
        source = {"train": torch.arange(len(train_x))}
        if splits.val is None:
            n_val = round(self.val_size * len(train_x)) if isinstance(self.val_size, float) else self.val_size
            if n_val >= len(train_x):
                raise ValueError(f"val_size={self.val_size!r} leaves no training data: the {self.name} training "
                                 f"set holds {len(train_x)} samples. Lower val_size.")
            perm = torch.randperm(len(train_x), generator=_seeded_generator(self.seed, 0))
            source = {"train": perm[n_val:].sort().values, "val": perm[:n_val].sort().values}
            val = (train_x[source["val"]], train_y[source["val"]])
            train_x, train_y = train_x[source["train"]], train_y[source["train"]]
        else:
            val = splits.val
            source["val"] = torch.arange(len(val[0]))
        source["test"] = torch.arange(len(splits.test[0]))
        evals = {"val": val, "test": splits.test}
        if self.group_order == "shuffled":
            for i, (stage, (x, y)) in enumerate(evals.items(), start=1):
                perm = torch.randperm(len(x), generator=_seeded_generator(self.seed, i))
                evals[stage], source[stage] = (x[perm], y[perm]), source[stage][perm]
        batch = self.groups_per_batch * self.group_size
        if len(train_x) < batch:
            raise ValueError(f"The {self.name} training split holds {len(train_x)} samples, fewer than one batch of "
                             f"groups_per_batch * group_size = {batch}. Lower groups_per_batch.")
        self._class_names = tuple(splits.class_names)
        self._splits = {"train": (train_x, train_y), **evals}
        self._source_index = source
        self._mean, self._std = channel_stats(train_x)
        self._device_stats = {}

    def _loaded(self) -> dict[str, XY]:
        if not self._splits:
            self.setup()
        return self._splits

    # ---- properties ------------------------------------------------------------------------------

    def split(self, stage: str) -> XY:
        """The ``(x, y)`` tensors of ``stage`` (``"train"``, ``"val"`` or ``"test"``), in loader order."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
        return self._loaded()[stage]

    def source_index(self, stage: str) -> torch.Tensor:
        """``(N,)`` int64: each row of :meth:`split`'s position in the dataset file's own split."""
        self.split(stage)
        return self._source_index[stage]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self._loaded()["train"][0].shape[1:])

    @property
    def class_names(self) -> tuple[str, ...]:
        self._loaded()
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of F's output for one sample: ``(num_classes,)`` logits for labelled data."""
        return (self.num_classes,)

    @property
    def train_label_counts(self) -> torch.Tensor:
        """``(num_classes,)`` int64 count of each label in the training split."""
        return torch.bincount(self._loaded()["train"][1].cpu(), minlength=self.num_classes)

    @property
    def mean(self) -> torch.Tensor:
        """``(C,)`` per-channel mean of the training split, in ``[0, 1]`` pixel scale for images."""
        self._loaded()
        return self._mean

    @property
    def std(self) -> torch.Tensor:
        """``(C,)`` per-channel standard deviation of the training split, same scale as :attr:`mean`."""
        self._loaded()
        return self._std

    # ---- loaders and batch transforms ------------------------------------------------------------

    def _loader(self, stage: str) -> TensorLoader:
        x, y = self.split(stage)
        # Under DDP every process holds the whole split and reads its own shard of it.
        distributed = self.trainer is not None and self.trainer.world_size > 1
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if distributed else (0, 1)  # type: ignore[union-attr]
        if stage == "train":
            return TensorLoader(x, y, self.groups_per_batch * self.group_size, shuffle=True, drop_last=True,
                                seed=self.seed, rank=rank, world_size=world)
        return TensorLoader(x, y, self.eval_groups_per_batch * self.group_size, rank=rank, world_size=world)

    def train_dataloader(self) -> TensorLoader:
        return self._loader("train")

    def val_dataloader(self) -> TensorLoader:
        return self._loader("val")

    def test_dataloader(self) -> TensorLoader:
        return self._loader("test")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw ``(B, C, H, W)`` samples (uint8 or float) -> normalised float32; needs no trainer."""
        return transforms.normalize(x, *self._stats_on(x.device))

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """:attr:`mean` and :attr:`std` on ``device``, copied there once: a host-to-GPU copy per batch
        would be a blocking copy, a synchronisation of the host with the GPU on every training step."""
        if device not in self._device_stats:
            self._device_stats[device] = (self.mean.to(device), self.std.to(device))
        return self._device_stats[device]

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Augment (training only, when enabled) and normalise, batched on the batch's device."""
        x, y, index = batch
        if self.augment and self.trainer is not None and self.trainer.training:
            if x.device not in self._aug_generators:
                self._aug_generators[x.device] = torch.Generator(x.device).manual_seed(_derived_seed(self.seed, 3))
            x = transforms.augment(x, generator=self._aug_generators[x.device])
        return self.normalize(x), y, index
