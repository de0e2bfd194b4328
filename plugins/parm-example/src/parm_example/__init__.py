"""An example coder plugin: every piece of the contract a third-party coder implements.

- :class:`WeightedMeanEncoder` (``encoder=weighted``): parity j = sum_i A[j, i] X_i with
  A[j, i] = (i + 1)^j / k, a Vandermonde matrix on the nodes 1..k scaled by 1/k. It declares the
  ``linear`` trait and its ``(r, k)`` ``coefficients``, so the built-in ``subtraction`` decoder pairs with it.
- :class:`NearestParityDecoder` (``decoder=nearest``): answers a missing output with the first
  arrived parity output (of non-zero row sum) divided by the sum of its row of A; it ``requires`` the ``linear`` trait.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from parm.coding import CodeSpec, Decoder, Encoder


class WeightedMeanEncoder(Encoder):
    """Weighted means of the k queries; any input shape.

    Args:
        spec: the code (k queries, r parities).
        input_shape: shape of one query, e.g. ``(1, 28, 28)``.
    """

    traits: ClassVar[frozenset[str]] = frozenset({"linear"})
    weights: torch.Tensor

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...]) -> None:
        super().__init__(spec, input_shape)
        nodes = torch.arange(1, spec.k + 1, dtype=torch.float64)
        rows = torch.stack([nodes**j for j in range(spec.r)]) / spec.k
        self.register_buffer("weights", rows.float(), persistent=False)

    @property
    def coefficients(self) -> torch.Tensor:
        """``(r, k)``: F_P(P_j) is trained towards ``sum_i A[j, i] F(X_i)``."""
        return self.weights

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, *S)`` -> ``(B, r, *S)``."""
        flat = x.reshape(x.shape[0], self.spec.k, -1)
        return torch.matmul(self.weights.to(flat.dtype), flat).reshape(x.shape[0], self.spec.r, *self.input_shape)


class NearestParityDecoder(Decoder):
    """A crude decoder: a missing output is the first arrived parity output over its row's weight sum.

    Args:
        spec: the code.
        output_shape: shape of one output of F, e.g. ``(10,)``.
        encoder: the encoder it decodes for; must have the ``linear`` trait.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"linear"})
    row_sums: torch.Tensor

    def __init__(self, spec: CodeSpec, output_shape: tuple[int, ...], encoder: Encoder) -> None:
        super().__init__(spec, output_shape, encoder)
        coefficients = encoder.coefficients
        assert coefficients is not None  # the "linear" trait promises coefficients
        self.register_buffer("row_sums", coefficients.sum(dim=1), persistent=False)

    def decode(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """``outputs (B, k, D)``, ``parities (B, r, D)``, ``available (B, k + r)`` -> estimates ``(B, k, D)``."""
        usable = available[:, self.spec.k:] & (self.row_sums.abs() > 1e-6)  # (B, r): arrived, non-zero weight
        j = usable.float().argmax(dim=1)  # first usable parity (a slot with weight zero cannot be rescaled)
        picked = parities.gather(1, j[:, None, None].expand(-1, 1, parities.shape[-1]))[:, 0]  # (B, D)
        scale = torch.where(usable.any(dim=1), self.row_sums.to(parities.dtype)[j], torch.ones_like(picked[:, 0]))
        return (picked / scale[:, None])[:, None, :].expand_as(outputs)
