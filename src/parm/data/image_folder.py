"""A folder of class-named image folders (e.g. cats vs. dogs), decoded once and cached as ``.npz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from parm.data.base import Splits, TensorDataModule
from parm.data.npz import check_split, missing, read_npz, save_npz

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _decode_split(folder: Path, classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image under ``folder/<class>/`` as ``(N, size, size, 3)`` uint8 RGB and ``(N,)`` int64 labels."""
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (folder / cls).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            try:
                with Image.open(file) as img:
                    rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"Cannot decode image {file}: {e}. Delete or replace it.") from e
            images.append(np.asarray(rgb, dtype=np.uint8))
            labels.append(label)
    if not images:
        raise ValueError(f"No {'/'.join(IMAGE_SUFFIXES)} images found under {folder}/<class>/.")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


class ImageFolderDataModule(TensorDataModule):
    """Images laid out as ``data_dir/<name>/{train,test}/<class>/*.jpg|png``, e.g. cats vs. dogs.

    On first use every image is decoded once with Pillow, resized to ``image_size`` squared and cached to
    ``data_dir/<name>_<image_size>.npz``; later runs read only that cache (delete it to re-decode).
    Classes are the sorted sub-folder names of ``train``. Samples are ``(3, image_size, image_size)`` uint8.

    Args:
        name: the dataset folder under ``data_dir``.
        image_size: side length images are resized to.
        **kwargs: as :class:`~parm.data.base.TensorDataModule`.
    """

    def __init__(self, *, name: str = "catdog", image_size: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(name, str) or not name or Path(name).name != name:
            raise ValueError(f"name must be a plain folder name, got {name!r}.")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be an int >= 1, got {image_size!r}.")
        self.name = name
        self.image_size = image_size

    @property
    def cache_path(self) -> Path:
        return self.data_dir / f"{self.name}_{self.image_size}.npz"

    def prepare_data(self) -> None:
        """Decode the image folders into :attr:`cache_path` unless the cache already exists."""
        if self.cache_path.exists():
            return
        source = self.data_dir / self.name
        for stage in ("train", "test"):
            if not (source / stage).is_dir():
                raise missing(source / stage, self.name, f"Lay the images out as {source}/{{train,test}}/<class>/"
                              f"*.jpg|png (or provide the cache {self.cache_path.name}).")
        classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
        unknown = sorted({p.name for p in (source / "test").iterdir() if p.is_dir()} - set(classes))
        if unknown:
            raise ValueError(f"{source / 'test'} has classes {unknown} that {source / 'train'} lacks.")
        x_train, y_train = _decode_split(source / "train", classes, self.image_size)
        x_test, y_test = _decode_split(source / "test", classes, self.image_size)
        save_npz(self.cache_path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 class_names=np.asarray(classes))

    def load_splits(self) -> Splits:
        self.prepare_data()
        path = self.cache_path
        arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test", "class_names"))
        classes = tuple(str(c) for c in arrays["class_names"])
        shape = (self.image_size, self.image_size, 3)
        train_x, train_y = check_split(path, arrays["x_train"], arrays["y_train"], name="train",
                                       sample_shape=shape, num_classes=len(classes))
        test_x, test_y = check_split(path, arrays["x_test"], arrays["y_test"], name="test",
                                     sample_shape=shape, num_classes=len(classes))
        return Splits(train=(train_x.permute(0, 3, 1, 2).contiguous(), train_y),
                      test=(test_x.permute(0, 3, 1, 2).contiguous(), test_y), class_names=classes)
