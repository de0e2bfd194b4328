"""Berrut's rational interpolant in barycentric form, batched over availability masks.

Through values ``v_i`` at sorted nodes ``z_i`` Berrut's interpolant is

    r(x) = sum_i [s_i / (x - z_i)] v_i / sum_i [s_i / (x - z_i)],   s_i = (-1)^(rank of z_i),

which has no real poles for any node set and reproduces every value at its node. It is linear in
the values, so evaluating it at targets is a ``(T, n)`` weight matrix applied to them; rows sum to 1.
"""

from __future__ import annotations

import math

import torch

# Closer than this, a target counts as sitting on a node (the node's value is returned as is).
_HIT = 1e-12


def chebyshev_first_kind(n: int) -> torch.Tensor:
    """``cos((2i + 1) pi / 2n)``, i = 0..n-1, ascending, float64 ``(n,)``: the data points of ApproxIFER."""
    if n < 1:
        raise ValueError(f"need at least one Chebyshev point, got n={n}.")
    return torch.tensor([math.cos((2 * i + 1) * math.pi / (2 * n)) for i in range(n)], dtype=torch.float64).flip(0)


def chebyshev_second_kind(n: int) -> torch.Tensor:
    """``cos(i pi / (n - 1))``, i = 0..n-1, ascending, float64 ``(n,)``: the worker points of ApproxIFER."""
    if n < 2:
        raise ValueError(f"Chebyshev points of the second kind need n >= 2, got n={n}.")
    return torch.tensor([math.cos(i * math.pi / (n - 1)) for i in range(n)], dtype=torch.float64).flip(0)


def berrut_basis(targets: torch.Tensor, nodes: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
    """Weights that evaluate Berrut's interpolant through the available nodes at ``targets``.

    The alternating signs follow the order of the *available* nodes, so an erased node is dropped
    from the interpolant rather than leaving a gap in the sign pattern.

    Args:
        targets: ``(T,)`` evaluation points.
        nodes: ``(n,)`` distinct interpolation nodes, in any order.
        available: ``(B, n)`` bool, True where a node's value is known; None means all are.

    Returns:
        ``(B, T, n)`` float64 weights (``B = 1`` when ``available`` is None); zero on missing nodes,
        a one-hot row where a target coincides with an available node, rows summing to 1.

    Raises:
        ValueError: a mask row with no available node, or shapes that do not match.
    """
    nodes, targets = nodes.to(torch.float64), targets.to(torch.float64)
    if nodes.dim() != 1 or targets.dim() != 1:
        raise ValueError(f"targets and nodes must be 1-D, got {tuple(targets.shape)} and {tuple(nodes.shape)}.")
    if available is None:
        available = torch.ones(1, nodes.numel(), dtype=torch.bool, device=nodes.device)
    if available.dim() != 2 or available.shape[1] != nodes.numel():
        raise ValueError(f"available must be (B, n={nodes.numel()}), got {tuple(available.shape)}.")
    if not bool(available.any(dim=1).all()):
        raise ValueError("every row of available needs at least one available node to interpolate from.")
    order = nodes.argsort()
    rank = torch.empty_like(available, dtype=torch.long)
    rank[:, order] = available[:, order].long().cumsum(dim=1) - 1
    sign = 1.0 - 2.0 * (rank % 2).to(torch.float64)  # (B, n)
    diff = targets[:, None] - nodes[None, :]  # (T, n)
    hit = diff.abs() < _HIT
    terms = sign[:, None, :] / torch.where(hit, torch.ones_like(diff), diff)[None] * available[:, None, :]
    weights = terms / terms.sum(dim=-1, keepdim=True)
    on_node = hit[None] & available[:, None, :]  # (B, T, n)
    return torch.where(on_node.any(dim=-1, keepdim=True), on_node.to(torch.float64), weights)
