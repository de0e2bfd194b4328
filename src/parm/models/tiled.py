"""A parity model shaped for the concat code: one shared network per tile, outputs summed.

The concat parity query holds k downsampled queries side by side and its target is
``sum_i F(X_i)``. A network that answers each tile with the same small model g and adds the answers
has that structure built in: g only has to learn F on a downsampled query, instead of one network
learning to classify k superimposed regions at once. This matters most at large k.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from parm.coding.grid import choose_grid
from parm.models.mlp import MLP
from parm.models.shapes import check_input_shape, check_positive_int


class TiledParity(nn.Module):
    """``F_P(P) = sum_t g(tile_t)`` over the first ``tiles`` cells of the concat grid.

    Args:
        input_shape: the parity query's shape ``(C, H, W)``.
        num_classes: number of outputs.
        tiles: queries per coding group (k); the grid is the concat encoder's for that k.
        hidden: hidden widths of g, an MLP over one ``(C, H // rows, W // cols)`` tile.
        fit: the concat encoder's ``fit`` (``"exact"`` or ``"pad"``); the grids must match.

    Shape:
        input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(self, *, input_shape: Iterable[int], num_classes: int, tiles: int,
                 hidden: Iterable[int] = (200, 100), fit: str = "exact") -> None:
        super().__init__()
        self.input_shape = check_input_shape("TiledParity", input_shape)
        self.num_classes = check_positive_int("TiledParity", "num_classes", num_classes)
        self.tiles = check_positive_int("TiledParity", "tiles", tiles)
        if len(self.input_shape) != 3:
            raise ValueError(f"TiledParity answers concat parity images (C, H, W); got input_shape {self.input_shape}.")
        channels, height, width = self.input_shape
        self.grid = choose_grid(self.tiles, height, width, fit)
        self.tile_shape = (channels, height // self.grid[0], width // self.grid[1])
        self.g = MLP(input_shape=self.tile_shape, num_classes=self.num_classes, hidden=hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        (rows, cols), (channels, th, tw) = self.grid, self.tile_shape
        # (B, C, rows*th, cols*tw) -> (B, rows, cols, C, th, tw) -> the k occupied cells, row-major.
        x = x[..., : rows * th, : cols * tw]  # fit="pad" leaves a blank margin
        cells = x.reshape(batch, channels, rows, th, cols, tw).permute(0, 2, 4, 1, 3, 5)
        tiles = cells.reshape(batch, rows * cols, math.prod(self.tile_shape))[:, : self.tiles]
        return self.g(tiles.reshape(batch * self.tiles, *self.tile_shape)).reshape(batch, self.tiles, -1).sum(1)
