"""ApproxIFER (Soleymani, Jahani-Nezhad, Mahdavifar, AAAI 2022): every prediction approximated.

K queries sit on K Chebyshev points of the first kind ``alpha``; N = K + S + 2E workers sit on N
Chebyshev points of the second kind ``z``. Worker i answers ``F(u(z_i))`` where u is the Berrut
interpolant of the queries. From any N - S answers the decoder interpolates them with Berrut and
returns ``r(alpha_j)`` as the estimate of ``F(X_j)`` for every j, available or not.

No query is an original, so this is not a parm Encoder/Decoder pair; parm evaluates it with
:func:`parm.evaluation.evaluate_coded_computation`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from parm_berrut.berrut import berrut_basis, chebyshev_first_kind, chebyshev_second_kind


class ApproxIFERCode(nn.Module):
    """Berrut-coded computation over N = K + S + 2E workers.

    Args:
        k: queries per group (K >= 1).
        stragglers: S, answers that may be missing.
        byzantine: E, answers that may be wrong; the decoder locates and drops up to E of them.
    """

    data_nodes: torch.Tensor
    worker_nodes: torch.Tensor
    encoding: torch.Tensor

    def __init__(self, k: int, stragglers: int = 1, byzantine: int = 0) -> None:
        super().__init__()
        for name, value, low in (("k", k, 1), ("stragglers", stragglers, 0), ("byzantine", byzantine, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ApproxIFERCode {name} must be an int >= {low}, got {value!r}.")
        self.k, self.stragglers, self.byzantine = k, stragglers, byzantine
        self.n = k + stragglers + 2 * byzantine
        if self.n < 2:
            raise ValueError(f"ApproxIFERCode needs N = K + S + 2E >= 2 workers, got {self.n}.")
        self.register_buffer("data_nodes", chebyshev_first_kind(k), persistent=False)
        self.register_buffer("worker_nodes", chebyshev_second_kind(self.n), persistent=False)
        self.register_buffer("encoding", berrut_basis(self.worker_nodes, self.data_nodes)[0], persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K, *S)`` queries -> ``(B, N, *S)`` coded queries, one per worker."""
        if x.dim() < 2 or x.shape[1] != self.k:
            raise ValueError(f"ApproxIFERCode expects (B, K={self.k}, ...) queries, got {tuple(x.shape)}.")
        flat = x.reshape(x.shape[0], self.k, -1)
        coded = torch.einsum("nk,bkd->bnd", self.encoding.to(flat.dtype), flat)
        return coded.reshape(x.shape[0], self.n, *x.shape[2:])

    def decode(self, answers: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Estimate all K outputs from the available answers.

        Args:
            answers: ``(B, N, *O)`` worker outputs; values at missing workers are ignored.
            available: ``(B, N)`` bool; at most S False per row.

        Returns:
            ``(B, K, *O)`` estimates of ``F(X_j)``.
        """
        batch = answers.shape[0]
        if answers.dim() < 2 or answers.shape[1] != self.n:
            raise ValueError(f"answers must be (B, N={self.n}, ...), got {tuple(answers.shape)}.")
        if available.dtype != torch.bool or tuple(available.shape) != (batch, self.n):
            raise ValueError(f"available must be a bool (B, N) = ({batch}, {self.n}) tensor, got "
                             f"{available.dtype} {tuple(available.shape)}.")
        missing = int((~available).sum(dim=1).max()) if batch else 0
        if missing > self.stragglers:
            raise ValueError(f"a group has {missing} missing answers but the code tolerates S={self.stragglers}.")
        values = torch.where(available[:, :, None], answers.reshape(batch, self.n, -1).to(torch.float64), 0.0)
        if self.byzantine:
            available = self.locate_errors(values, available)
        weights = berrut_basis(self.data_nodes, self.worker_nodes, available)  # (B, K, N)
        return (weights @ values).to(answers.dtype).reshape(batch, self.k, *answers.shape[2:])

    def locate_errors(self, values: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Drop, one at a time, the E answers whose removal leaves the most self-consistent set.

        A candidate is scored by the leave-one-out residuals of the answers that remain without it
        (each interpolated from the others); the candidate with the smallest total is dropped. A
        heuristic stand-in for the paper's Berlekamp-Welch-style rational decoding, reliable when
        wrong answers are far off compared to the interpolation error. O(N^2) interpolations a round.

        Args:
            values: ``(B, N, D)`` float64 answers, zero where missing.
            available: ``(B, N)`` bool.

        Returns:
            ``(B, N)`` bool: ``available`` minus the E answers judged wrong.
        """
        available = available.clone()
        eye = torch.eye(self.n, dtype=torch.bool, device=available.device)
        rows = torch.arange(available.shape[0], device=available.device)
        for _ in range(self.byzantine):
            score = torch.full(available.shape, math.inf, dtype=torch.float64, device=values.device)
            for i in range(self.n):
                kept = available & ~eye[i]
                total = torch.zeros(available.shape[0], dtype=torch.float64, device=values.device)
                for j in range(self.n):
                    weights = berrut_basis(self.worker_nodes[j : j + 1], self.worker_nodes, kept & ~eye[j])[:, 0]
                    error = torch.einsum("bn,bnd->bd", weights, values) - values[:, j]
                    total += torch.where(kept[:, j], error.square().sum(dim=-1), 0.0)
                score[:, i] = torch.where(available[:, i], total, math.inf)
            available[rows, score.argmin(dim=1)] = False
        return available
