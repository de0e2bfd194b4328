"""The ``sum`` encoder: parity j = sum_i A[j, i] X_i on normalised inputs."""

from __future__ import annotations

from typing import ClassVar

import torch

from parm.coding import CodeSpec, Encoder
from parm_coders._linear import vandermonde_coefficients


class SumEncoder(Encoder):
    """Weighted sums of the k queries; works for any input shape.

    Args:
        spec: the code.
        input_shape: shape of one query.
    """

    traits: ClassVar[frozenset[str]] = frozenset({"linear"})
    coeffs: torch.Tensor

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...]) -> None:
        super().__init__(spec, input_shape)
        self.register_buffer("coeffs", vandermonde_coefficients(spec.k, spec.r), persistent=False)

    @property
    def coefficients(self) -> torch.Tensor:
        return self.coeffs

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, *S)`` -> ``(B, r, *S)``."""
        flat = x.reshape(x.shape[0], self.spec.k, -1)
        parity = torch.matmul(self.coeffs.to(flat.dtype), flat)  # (r, k) @ (B, k, D); cheaper than einsum
        return parity.reshape(x.shape[0], self.spec.r, *self.input_shape)
