"""Which outputs of a coding group are missing: availability masks and erasure patterns."""

from __future__ import annotations

import itertools
import math

import torch

from parm.coding.spec import CodeSpec


def erasure_patterns(spec: CodeSpec, max_patterns: int | None = None, seed: int = 0) -> torch.Tensor:
    """Every way to erase ``r`` of the ``k`` data slots (parities all available).

    Args:
        spec: the code.
        max_patterns: when C(k, r) exceeds this, a seeded sample of that many patterns.
        seed: seed of that sample.

    Returns:
        ``(P, k + r)`` bool availability masks, True where an output is available.
    """
    total = math.comb(spec.k, spec.r)
    if max_patterns is not None and max_patterns < 1:
        raise ValueError(f"max_patterns must be >= 1 or None, got {max_patterns}.")
    if max_patterns is None or total <= max_patterns:
        chosen = list(itertools.combinations(range(spec.k), spec.r))
    else:
        gen = torch.Generator().manual_seed(seed)
        picks = torch.randperm(total, generator=gen)[:max_patterns].sort().values.tolist()
        wanted = set(picks)
        chosen = [c for i, c in enumerate(itertools.combinations(range(spec.k), spec.r)) if i in wanted]
    masks = torch.ones(len(chosen), spec.n, dtype=torch.bool)
    for row, slots in enumerate(chosen):
        masks[row, list(slots)] = False
    return masks


def random_erasures(spec: CodeSpec, batch: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Per group, erase ``r`` data slots chosen uniformly at random (used in training).

    Returns:
        ``(batch, k + r)`` bool availability mask.
    """
    return sample_erasures(spec, batch, generator, device)[0]


def sample_erasures(spec: CodeSpec, batch: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`random_erasures` with the erased slots themselves, in ascending order per group.

    Training gathers the erased slots' reconstructions by index; deriving them back from the mask
    would cost a sort per step. r = 1 draws one index per group instead of ranking k random scores.

    Returns:
        ``(batch, k + r)`` bool availability mask and ``(batch, r)`` int64 erased slot indices.
    """
    if spec.r == 1:
        erased = torch.randint(spec.k, (batch, 1), generator=generator, device=device)
    else:
        scores = torch.rand(batch, spec.k, generator=generator, device=device)
        erased = scores.argsort(dim=1)[:, : spec.r].sort(dim=1).values
    mask = torch.ones(batch, spec.n, dtype=torch.bool, device=device)
    mask.scatter_(1, erased, False)  # erased slots are < k: parities stay available
    return mask, erased


def check_mask(spec: CodeSpec, available: torch.Tensor, batch: int) -> None:
    """Validate an availability mask against a code and a batch size."""
    if available.dtype != torch.bool or tuple(available.shape) != (batch, spec.n):
        raise ValueError(
            f"availability mask must be a bool tensor of shape (B, k + r) = ({batch}, {spec.n}), got "
            f"{available.dtype} {tuple(available.shape)}."
        )
    worst = int((~available).sum(dim=1).max()) if batch else 0  # one host sync on this hot path
    if worst > spec.r:
        raise ValueError(
            f"a group has {worst} missing outputs but a code with r={spec.r} recovers at most {spec.r}."
        )
