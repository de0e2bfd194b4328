"""The shape of an erasure code: k data slots, r parity slots."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeSpec:
    """A coding group of ``k`` queries protected by ``r`` parity queries.

    Any ``r`` of the ``k`` outputs may be missing and still be reconstructed.

    Args:
        k: queries per coding group (k >= 2).
        r: parity queries per group (1 <= r < k).
    """

    k: int
    r: int = 1

    def __post_init__(self) -> None:
        for name in ("k", "r"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"CodeSpec.{name} must be an int, got {type(value).__name__} {value!r}.")
        if self.k < 2:
            raise ValueError(f"CodeSpec needs k >= 2 queries per coding group, got k={self.k}. Set k=2 or more.")
        if self.r < 1:
            raise ValueError(f"CodeSpec needs r >= 1 parity queries, got r={self.r}. Set r=1 or more.")
        if self.r >= self.k:
            raise ValueError(
                f"CodeSpec needs r < k (a code with r >= k is no cheaper than replication), got k={self.k}, "
                f"r={self.r}. Lower r or raise k."
            )

    @property
    def n(self) -> int:
        """Slots per group: ``k + r``."""
        return self.k + self.r
