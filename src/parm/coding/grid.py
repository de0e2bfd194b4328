"""The tile layout of image concatenation, shared by the concat encoder and tile-wise parity models."""

from __future__ import annotations

FITS = ("exact", "pad")


def choose_grid(k: int, height: int, width: int, fit: str = "exact") -> tuple[int, int]:
    """Rows x cols for k tiles on an H x W image.

    ``fit="exact"``: tiles divide the image exactly (the reference's k=2 halves and k=4 quadrants),
    scored by aspect distortion times cell count over k (empty cells waste resolution); ties go to
    fewer cells. ``fit="pad"``: tiles of ``(H // rows, W // cols)`` with the remainder left blank,
    chosen for the most pixels per tile, discounted by the square root of the tile's aspect ratio;
    this gives large k more resolution (k=12 on 28x28: 3x4 tiles of 9x7 instead of 4x4 of 7x7).
    Raises ValueError when no grid fits.
    """
    if fit not in FITS:
        raise ValueError(f"concat fit must be one of {FITS}, got {fit!r}.")
    if fit == "pad":
        return _padded_grid(k, height, width)
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


def _padded_grid(k: int, height: int, width: int) -> tuple[int, int]:
    best: tuple[float, int, tuple[int, int]] | None = None
    for rows in range(1, min(k, height) + 1):
        for cols in range(1, min(k, width) + 1):
            if rows * cols < k:
                continue
            th, tw = height // rows, width // cols
            score = -(th * tw) / (max(th, tw) / min(th, tw)) ** 0.5
            if best is None or (score, rows * cols) < best[:2]:
                best = (score, rows * cols, (rows, cols))
    if best is None:
        raise ValueError(f"concat cannot place k={k} tiles of at least one pixel on a {height}x{width} image.")
    return best[2]
