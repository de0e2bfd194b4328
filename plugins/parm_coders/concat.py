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
        fit: ``"exact"`` (tiles divide the image) or ``"pad"`` (more pixels per tile at large k, the
            remainder of the image left blank); see :func:`parm.coding.grid.choose_grid`.
    """

    traits: ClassVar[frozenset[str]] = frozenset({"linear"})
    coeffs: torch.Tensor

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...], grid: Sequence[int] | None = None,
                 mode: str = "area", fit: str = "exact") -> None:
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
            rows, cols = choose_grid(spec.k, height, width, fit)
        else:
            rows, cols = (int(g) for g in grid)
            if rows * cols < spec.k or (fit == "exact" and (height % rows or width % cols)) \
                    or rows > height or cols > width:
                raise ValueError(
                    f"concat grid {rows}x{cols} cannot hold k={spec.k} tiles that divide a {height}x{width} image."
                )
        self.grid = (rows, cols)
        self.tile = (height // rows, width // cols)
        self.exact = height % rows == 0 and width % cols == 0
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
        if self.mode == "area" and self.exact:
            # Tiles divide the image exactly, so area downsampling is a plain (rows x cols) average pool.
            tiles = F.avg_pool2d(flat, (rows, cols)) if (rows, cols) != (1, 1) else flat
        elif self.mode == "area":
            tiles = F.adaptive_avg_pool2d(flat, (th, tw))
        else:
            tiles = F.interpolate(flat, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        tiles = tiles.reshape(batch, 1, k, channels, th, tw)
        if self.spec.r > 1:  # row 0 of the coefficients is all ones: plain tiling needs no multiply
            tiles = tiles * self.coeffs.to(x.dtype)[None, :, :, None, None, None]
        empty = rows * cols - k
        if empty:
            tiles = F.pad(tiles, (0, 0, 0, 0, 0, 0, 0, empty))
        r = self.spec.r
        # (B, r, rows, cols, C, th, tw) -> (B, r, C, rows, th, cols, tw) -> (B, r, C, rows*th, cols*tw)
        grid = tiles.reshape(batch, r, rows, cols, channels, th, tw).permute(0, 1, 4, 2, 5, 3, 6)
        grid = grid.reshape(batch, r, channels, rows * th, cols * tw)
        if not self.exact:  # fit="pad": blank the remainder at the bottom and right
            grid = F.pad(grid, (0, width - cols * tw, 0, height - rows * th))
        return grid
