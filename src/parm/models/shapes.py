"""Constructor-time checks shared by every architecture, so a bad config fails before the first batch."""

from __future__ import annotations

from collections.abc import Iterable


def check_input_shape(
    arch: str,
    input_shape: Iterable[int],
    ndim: int | None = None,
    min_hw: int | None = None,
) -> tuple[int, ...]:
    """Normalize ``input_shape`` (a list, tuple or Hydra ListConfig) to a tuple of positive ints.

    Args:
        arch: class name used in error messages, e.g. ``"LeNet5"``.
        input_shape: shape of one sample without the batch dimension, e.g. ``(1, 28, 28)``.
        ndim: required number of dimensions (3 for ``(C, H, W)`` images), or None for any.
        min_hw: smallest allowed height and width when ``ndim == 3``.

    Raises:
        TypeError: ``input_shape`` is not a sequence of ints.
        ValueError: wrong number of dimensions, a non-positive size, or an image smaller than ``min_hw``.
    """
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Iterable):
        raise TypeError(f"{arch} needs input_shape as a sequence of ints such as (1, 28, 28), got {input_shape!r}.")
    dims = tuple(input_shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{arch} needs input_shape as a sequence of ints such as (1, 28, 28), got {input_shape!r}.")
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{arch} needs a non-empty input_shape of positive sizes, got {dims}.")
    if ndim is not None and len(dims) != ndim:
        raise ValueError(
            f"{arch} takes {ndim}-d inputs (C, H, W) such as (1, 28, 28) or (3, 32, 32), got input_shape={dims}. "
            f"Use MLP for flat inputs."
        )
    if min_hw is not None and min(dims[-2:]) < min_hw:
        raise ValueError(
            f"{arch} needs height and width >= {min_hw}, got input_shape={dims}. Use a larger input or the MLP."
        )
    return dims


def check_positive_int(arch: str, name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise a message naming ``arch.name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arch}.{name} must be an int, got {type(value).__name__} {value!r}.")
    if value < 1:
        raise ValueError(f"{arch}.{name} must be >= 1, got {value}.")
    return value
