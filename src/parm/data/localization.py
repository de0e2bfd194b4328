"""A small generated localization set: one bright rectangle per noisy image, the target is its box.

Nothing is downloaded or written: the images are generated in memory from ``generator_seed`` on first
:meth:`~parm.data.base.TensorDataModule.setup` (a few milliseconds for thousands of images), so tests and
users get the same data from the same settings.
"""

from __future__ import annotations

from typing import Any

import torch

from parm.data.base import Splits, TensorDataModule, _check_int, _derived_seed

BOX_DIM = 4  # (x1, y1, x2, y2)


def make_localization_set(n: int, size: int = 16, seed: int = 0,
                          noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy ``(1, size, size)`` float32 images with one bright rectangle, and their boxes.

    Rectangles lie on the pixel grid, start in the upper-left half and span a quarter to a half of the
    side in each direction (clipped at the border). Pixels are ``noise * N(0, 1)``, plus 1 inside the box.

    Returns:
        images ``(n, 1, size, size)`` float32 and boxes ``(n, 4)`` float32 ``(x1, y1, x2, y2)`` in [0, 1].
    """
    gen = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, size // 2, (n, 2), generator=gen)
    extent = torch.randint(size // 4, size // 2 + 1, (n, 2), generator=gen)
    hi = torch.minimum(lo + extent, torch.tensor(size))
    images = noise * torch.randn(n, 1, size, size, generator=gen)
    grid = torch.arange(size)
    inside_y = (grid[None, :] >= lo[:, 1:2]) & (grid[None, :] < hi[:, 1:2])  # (n, size)
    inside_x = (grid[None, :] >= lo[:, :1]) & (grid[None, :] < hi[:, :1])
    images[:, 0] += (inside_y[:, :, None] & inside_x[:, None, :]).float()
    boxes = torch.cat([lo, hi], dim=1).float() / size
    return images, boxes


class LocalizationDataModule(TensorDataModule):
    """Generated box regression: ``x`` ``(N, 1, S, S)`` float32, ``y`` ``(N, 4)`` float32 boxes in [0, 1].

    The targets make this a ``regression`` task (:mod:`parm.tasks`): F is trained by MSE and scored by
    IoU. Validation is drawn from the training images (``val_size``).

    Args:
        num_train: generated training images (validation included).
        num_test: generated test images.
        image_size: S, the side of the square images (>= 8).
        noise: standard deviation of the background noise.
        generator_seed: seeds the images themselves, apart from ``seed`` (splits and shuffling), so a
            new training seed keeps the same data.
        **kwargs: :class:`~parm.data.base.TensorDataModule`'s arguments; ``augment`` must stay False
            (crops and flips would move the boxes).
    """

    name = "localization"
    task = "regression"

    def __init__(self, *, num_train: int = 4000, num_test: int = 1000, image_size: int = 32, noise: float = 0.2,
                 generator_seed: int = 0, **kwargs: Any) -> None:
        if kwargs.get("augment"):
            raise ValueError("LocalizationDataModule does not support augment=True: random crops and flips "
                             "would move the rectangles away from their boxes. Set data.augment=false.")
        super().__init__(**kwargs)
        self.num_train = _check_int("num_train", num_train, 1)
        self.num_test = _check_int("num_test", num_test, 1)
        self.image_size = _check_int("image_size", image_size, 8)
        self.generator_seed = _check_int("generator_seed", generator_seed, 0)
        if not isinstance(noise, int | float) or isinstance(noise, bool) or noise < 0:
            raise ValueError(f"noise must be a number >= 0, got {noise!r}.")
        self.noise = float(noise)

    def load_splits(self) -> Splits:
        train, test = (make_localization_set(n, self.image_size, _derived_seed(self.generator_seed, part), self.noise)
                       for part, n in enumerate((self.num_train, self.num_test)))
        return Splits(train=train, test=test, class_names=())

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(4,)``: one box ``(x1, y1, x2, y2)`` per image."""
        return (BOX_DIM,)
