"""Systematic Berrut code: the k originals are served as is, r = S parities are Berrut combinations.

All k + r slots sit on k + r Chebyshev points of the first kind; the r parity slots are spread
evenly among them and the k data slots take the rest. Parity j is the Berrut interpolant of the
queries, evaluated at its node: ``P_j = sum_i A[j, i] X_i`` with A the Berrut weights of the data
nodes at the parity nodes (rows sum to 1). F itself answers the parities, so nothing is trained.

The decoder interpolates through the available (node, output) pairs and evaluates at the missing
data nodes. Available outputs are returned untouched (parm's Decoder contract).

The encoder also carries the ``linear`` trait: with F linear (or affine, since rows of A sum to 1)
``F(P_j) = sum_i A[j, i] F(X_i)`` exactly, so ``decoder=subtraction`` solves for the missing outputs
exactly, and a trained parity model may be used with these coefficients too.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from parm.coding import CodeSpec, Decoder, Encoder
from parm_berrut.berrut import berrut_basis, chebyshev_first_kind


def systematic_nodes(k: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Data and parity nodes: ``(k,)`` and ``(r,)`` float64, disjoint, all in (-1, 1).

    Parity j takes position ``round((2j + 1) n / 2r - 1/2)`` of the n = k + r ascending Chebyshev
    points, so a single parity sits in the middle and several split the interval evenly.
    """
    n = k + r
    points = chebyshev_first_kind(n)
    parity_pos = sorted({min(n - 1, max(0, round((2 * j + 1) * n / (2 * r) - 0.5))) for j in range(r)})
    data_pos = [i for i in range(n) if i not in parity_pos]
    return points[data_pos], points[parity_pos]


class BerrutEncoder(Encoder):
    """Parities at extra Berrut nodes: any input shape.

    Args:
        spec: the code (k data slots, r parity slots).
        input_shape: shape of one query.
    """

    traits: ClassVar[frozenset[str]] = frozenset({"linear", "berrut"})
    data_nodes: torch.Tensor
    parity_nodes: torch.Tensor
    coeffs: torch.Tensor

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...]) -> None:
        super().__init__(spec, input_shape)
        data_nodes, parity_nodes = systematic_nodes(spec.k, spec.r)
        self.register_buffer("data_nodes", data_nodes, persistent=False)
        self.register_buffer("parity_nodes", parity_nodes, persistent=False)
        coeffs = berrut_basis(parity_nodes, data_nodes)[0]  # (r, k)
        self.register_buffer("coeffs", coeffs, persistent=False)  # float64: rows sum to 1 to rounding

    @property
    def coefficients(self) -> torch.Tensor:
        return self.coeffs

    @property
    def slot_nodes(self) -> torch.Tensor:
        """``(k + r,)`` float64: the node of each slot, data slots first (the mask's order)."""
        return torch.cat([self.data_nodes, self.parity_nodes])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, *S)`` -> ``(B, r, *S)``."""
        flat = x.reshape(x.shape[0], self.spec.k, -1)
        parity = torch.einsum("rk,bkd->brd", self.coeffs.to(flat.dtype), flat)
        return parity.reshape(x.shape[0], self.spec.r, *self.input_shape)


class BerrutDecoder(Decoder):
    """Berrut interpolation through the available outputs, evaluated at the missing data nodes.

    Pairs only with :class:`BerrutEncoder` (trait ``berrut``); its parities are meant to be answered
    by F itself. Approximate unless F is constant along the interpolant; see the package docs.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"berrut"})
    nodes: torch.Tensor

    def __init__(self, spec: CodeSpec, output_shape: tuple[int, ...], encoder: Encoder) -> None:
        super().__init__(spec, output_shape, encoder)
        nodes = getattr(encoder, "slot_nodes", None)
        if not isinstance(nodes, torch.Tensor) or tuple(nodes.shape) != (spec.n,):
            raise ValueError(
                f"encoder {type(encoder).__name__} declares the 'berrut' trait but has no slot_nodes tensor of "
                f"shape (k + r,) = ({spec.n},); use encoder=berrut."
            )
        self.register_buffer("nodes", nodes.detach().clone(), persistent=False)

    def decode(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        values = torch.cat([outputs, parities], dim=1).to(torch.float64)  # (B, k + r, D)
        weights = berrut_basis(self.nodes[: self.spec.k], self.nodes, available)  # (B, k, k + r)
        return (weights @ values).to(outputs.dtype)
