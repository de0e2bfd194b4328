"""The ``concat`` encoder: each query downsampled and tiled into one image of the original size.

k = 2 gives two H x W/2 halves side by side and k = 4 four H/2 x W/2 quadrants, as in the reference;
any other k uses the grid that best keeps the tiles' aspect ratio with the fewest empty cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from parm.coding import CodeSpec, Encoder
from parm.coding.grid import choose_grid
from parm_coders._linear import vandermonde_coefficients


class ConcatEncoder(Encoder):
    """Downsample and tile images ``(C, H, W)``.

    Args:
        spec: the code. Parity j tiles ``A[j, i] * down(X_i)``; row 0 of A is all ones.
        input_shape: ``(C, H, W)``.
        grid: optional ``(rows, cols)`` override of the automatic layout.
        mode: downsampling, ``"area"`` (pixel averaging) or ``"bilinear"`` (antialiased).
    """

    traits: ClassVar[frozenset[str]] = frozenset({"linear"})
    coeffs: torch.Tensor

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...], grid: Sequence[int] | None = None,
                 mode: str = "area") -> None:
        super().__init__(spec, input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(
                f"concat tiles images of shape (C, H, W); got input_shape {self.input_shape}. "
                f"Use encoder=sum or encoder=learned for non-image inputs."
            )
        if mode not in ("area", "bilinear"):
            raise ValueError(f"concat mode must be 'area' or 'bilinear', got {mode!r}.")
        _, height, width = self.input_shape
        if grid is None:
            rows, cols = choose_grid(spec.k, height, width)
        else:
            rows, cols = (int(g) for g in grid)
            if rows * cols < spec.k or height % rows or width % cols:
                raise ValueError(
                    f"concat grid {rows}x{cols} cannot hold k={spec.k} tiles that divide a {height}x{width} image."
                )
        self.grid = (rows, cols)
        self.tile = (height // rows, width // cols)
        self.mode = mode
        self.register_buffer("coeffs", vandermonde_coefficients(spec.k, spec.r), persistent=False)

    @property
    def coefficients(self) -> torch.Tensor:
        return self.coeffs

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, C, H, W)`` -> ``(B, r, C, H, W)``."""
        batch, k = x.shape[:2]
        channels, height, width = self.input_shape
        (rows, cols), (th, tw) = self.grid, self.tile
        flat = x.reshape(batch * k, channels, height, width)
        if self.mode == "area":
            # Tiles divide the image exactly, so area downsampling is a plain (rows x cols) average pool.
            tiles = F.avg_pool2d(flat, (rows, cols)) if (rows, cols) != (1, 1) else flat
        else:
            tiles = F.interpolate(flat, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        tiles = tiles.reshape(batch, 1, k, channels, th, tw)
        if self.spec.r > 1:  # row 0 of the coefficients is all ones: plain tiling needs no multiply
            tiles = tiles * self.coeffs.to(x.dtype)[None, :, :, None, None, None]
        empty = rows * cols - k
        if empty:
            tiles = F.pad(tiles, (0, 0, 0, 0, 0, 0, 0, empty))
        r = self.spec.r
        # (B, r, rows, cols, C, th, tw) -> (B, r, C, rows, th, cols, tw) -> (B, r, C, H, W)
        grid = tiles.reshape(batch, r, rows, cols, channels, th, tw).permute(0, 1, 4, 2, 5, 3, 6)
        return grid.reshape(batch, r, channels, height, width)
