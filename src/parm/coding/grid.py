"""The tile layout of image concatenation, shared by the concat encoder and tile-wise parity models."""

from __future__ import annotations


def choose_grid(k: int, height: int, width: int) -> tuple[int, int]:
    """Rows x cols for k tiles on an H x W image: tiles must divide the image exactly.

    Scored by aspect distortion times cell count over k (empty cells waste resolution); ties go to
    fewer cells. Raises ValueError when no grid tiles the image.
    """
    best: tuple[float, int, tuple[int, int]] | None = None
    for rows in range(1, k + 1):
        for cols in range(1, k + 1):
            cells = rows * cols
            if cells < k or height % rows or width % cols:
                continue
            score = max(rows / cols, cols / rows) * cells / k
            if best is None or (score, cells) < best[:2]:
                best = (score, cells, (rows, cols))
    if best is None:
        raise ValueError(
            f"concat cannot tile k={k} queries onto a {height}x{width} image: no rows x cols grid with at "
            f"least k cells divides it. Use another k, resize the inputs, or encoder=sum."
        )
    return best[2]
