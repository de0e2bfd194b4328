"""Reading and writing the local ``.npz`` dataset files, with errors that say how to fix them."""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError)


def corrupt(path: Path, what: str) -> ValueError:
    """The error raised for an unreadable or malformed dataset file."""
    return ValueError(f"Dataset file {path} is corrupt or not in the expected layout: {what}. Delete it and "
                      "re-create it (re-run the download or copy the file again).")


def missing(path: Path, dataset: str, how: str) -> FileNotFoundError:
    """The error raised when a dataset file is absent and cannot be fetched."""
    return FileNotFoundError(
        f"Dataset {dataset!r} not found: expected the file {path}. Point data_dir= (or the PARM_DATA_DIR "
        f"environment variable) at the folder that holds it. {how}"
    )


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load ``keys`` from ``path`` (no pickle), turning any read failure into :func:`corrupt`."""
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise corrupt(path, f"{type(e).__name__}: {e}") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise corrupt(path, "it holds a single array, not an .npz archive")
    with archive:
        absent = [key for key in keys if key not in archive.files]
        if absent:
            raise corrupt(path, f"missing array(s) {absent}, found {sorted(archive.files)}")
        try:
            return {key: archive[key] for key in keys}
        except _READ_ERRORS as e:
            raise corrupt(path, f"{type(e).__name__}: {e}") from e


def check_split(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    sample_shape: tuple[int, ...],
    num_classes: int,
    dtype: type = np.uint8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one split's arrays and return them as ``(x, y)`` tensors (``y`` int64).

    Args:
        path: the file the arrays came from (for messages).
        x: ``(N, *sample_shape)`` array of ``dtype``.
        y: ``(N,)`` integer labels in ``[0, num_classes)``.
        name: the split's name in the file, e.g. ``"train"``.
        sample_shape: expected shape of one sample.
        num_classes: number of classes.
        dtype: expected dtype of ``x``.
    """
    if x.dtype != dtype:
        raise corrupt(path, f"x_{name} has dtype {x.dtype}, expected {np.dtype(dtype)}")
    if x.shape[1:] != tuple(sample_shape):
        raise corrupt(path, f"x_{name} has shape {x.shape}, expected (N, {', '.join(map(str, sample_shape))})")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise corrupt(path, f"y_{name} must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if len(x) != len(y):
        raise corrupt(path, f"x_{name} holds {len(x)} samples but y_{name} holds {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise corrupt(path, f"y_{name} has labels in [{y.min()}, {y.max()}], expected [0, {num_classes - 1}]")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` compressed, atomically: a crash never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
