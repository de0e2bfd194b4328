"""The ``subtraction`` decoder: solve the small linear system of a linear code.

For r = 1 this is the reference's F(X_j) ~ F_P(P) - sum_{i != j} F(X_i). For r > 1 the missing
outputs y satisfy A[:, missing] y = F_P(P) - A[:, available] F(X_available), solved per erasure
pattern by least squares over the available parity rows.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from parm.coding import CodeSpec, Decoder, Encoder


class SubtractionDecoder(Decoder):
    """Decoder for encoders with the ``linear`` trait (``sum``, ``concat``)."""

    requires: ClassVar[frozenset[str]] = frozenset({"linear"})
    coeffs: torch.Tensor

    def __init__(self, spec: CodeSpec, output_shape: tuple[int, ...], encoder: Encoder) -> None:
        super().__init__(spec, output_shape, encoder)
        coefficients = encoder.coefficients
        if coefficients is None or tuple(coefficients.shape) != (spec.r, spec.k):
            raise ValueError(
                f"encoder {type(encoder).__name__} declares the 'linear' trait but its coefficients are "
                f"{None if coefficients is None else tuple(coefficients.shape)}, expected ({spec.r}, {spec.k})."
            )
        self.register_buffer("coeffs", coefficients.detach().clone(), persistent=False)
        # The reference's code (r = 1, parity = plain sum): decode is one subtraction, no per-slot division.
        self.unit_sum = spec.r == 1 and bool((coefficients == 1).all())

    def decode(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        # Solve in at least float32 even under bf16 autocast: the systems are tiny, precision is not.
        dtype = torch.promote_types(outputs.dtype, torch.float32)
        coeffs, k = self.coeffs.to(dtype), self.spec.k
        if self.unit_sum:  # every slot's estimate is F_P(P) - sum of the available outputs
            residual = parities.to(dtype) - outputs.to(dtype).sum(dim=1, keepdim=True)
            return residual.expand(-1, k, -1).to(outputs.dtype)
        # Residual of each parity once the available outputs are subtracted: (B, r, D).
        residual = parities.to(dtype) - torch.matmul(coeffs, outputs.to(dtype))
        if self.spec.r == 1:
            # At most one output is missing, so every slot's estimate is the residual over its
            # coefficient; the base class keeps only the missing slot's. No per-pattern loop.
            return (residual / coeffs[0][None, :, None]).to(outputs.dtype)
        estimate = torch.zeros_like(residual[:, :1].expand(-1, k, -1)).contiguous()
        patterns, inverse = torch.unique(available, dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            missing = (~pattern[:k]).nonzero().flatten()
            if missing.numel() == 0:
                continue
            rows = pattern[k:].nonzero().flatten()
            if rows.numel() < missing.numel():
                raise ValueError(
                    f"{missing.numel()} outputs are missing but only {rows.numel()} parity outputs arrived; "
                    f"the subtraction decoder needs at least as many parities as missing outputs."
                )
            members = (inverse == p).nonzero().flatten()
            system = coeffs[rows][:, missing]  # (rows, m)
            rhs = residual[members][:, rows]  # (b, rows, D)
            solution = torch.linalg.pinv(system) @ rhs  # (b, m, D)
            block = estimate[members]
            block[:, missing] = solution
            estimate[members] = block
        return estimate.to(outputs.dtype)
