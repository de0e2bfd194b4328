"""Batched, pure-torch normalisation and augmentation of image tensors.

Everything here works on a whole batch at once on whatever device the batch lives on, so the
datamodule can augment on the GPU after the batch has been transferred (no per-sample PIL work).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; float features (audio) pass through as float32.

    Args:
        x: ``(B, C, H, W)`` uint8 or floating tensor.
    """
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a uint8 or floating tensor, got dtype {x.dtype}.")
    return x.to(torch.float32)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` after :func:`to_unit_float`.

    Args:
        x: ``(B, C, H, W)`` uint8 or float tensor.
        mean: ``(C,)`` channel means in the scale of :func:`to_unit_float`'s output.
        std: ``(C,)`` channel standard deviations, same scale.

    Returns:
        ``(B, C, H, W)`` float32 tensor on ``x``'s device.
    """
    if x.ndim != 4 or x.shape[1] != mean.numel():
        raise ValueError(f"expected a (B, {mean.numel()}, H, W) batch, got shape {tuple(x.shape)}.")
    mean = mean.to(device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = std.to(device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (to_unit_float(x) - mean) / std


def random_crop(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad every image by ``padding`` pixels, then crop each at its own random offset.

    The batched equivalent of ``torchvision.transforms.RandomCrop(size, padding=padding)``.

    Args:
        x: ``(B, C, H, W)`` tensor (any dtype).
        padding: pixels of zero padding on each side; 0 returns ``x`` unchanged.
        generator: random source on ``x``'s device, for reproducibility.

    Returns:
        ``(B, C, H, W)`` tensor of ``x``'s dtype.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    if padding == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, b, 1), device=x.device, generator=generator)
    rows = offsets[0] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # Advanced indices split by a slice move to the front: the result is (B, H, W, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``.

    Args:
        x: ``(B, C, H, W)`` tensor.
        p: flip probability per image.
        generator: random source on ``x``'s device.

    Returns:
        ``(B, C, H, W)`` tensor.
    """
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def augment(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard CIFAR augmentation: :func:`random_crop` then :func:`random_hflip`. Shapes as there."""
    return random_hflip(random_crop(x, padding, generator), generator=generator)
