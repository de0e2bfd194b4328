"""Coefficients shared by the linear codes (sum, concat)."""

from __future__ import annotations

import math

import torch


def vandermonde_coefficients(k: int, r: int) -> torch.Tensor:
    """``(r, k)`` matrix whose row j holds ``x_i ** j`` at k distinct Chebyshev nodes ``x_i``.

    Row 0 is all ones, so r = 1 is the plain sum of the reference. Any r columns of a Vandermonde
    matrix on distinct nodes are linearly independent, so any r erased outputs can be solved for;
    Chebyshev nodes in (-1, 1) keep the parities bounded and the small systems well conditioned.
    """
    nodes = torch.tensor([math.cos((2 * i + 1) * math.pi / (2 * k)) for i in range(k)], dtype=torch.float64)
    powers = torch.arange(r, dtype=torch.float64)[:, None]
    return (nodes[None, :] ** powers).to(torch.float32)
