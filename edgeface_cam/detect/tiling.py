"""Where to look in a still photo bigger than a detector's input: a scale pyramid of tiles.

Pure geometry (numpy only); ``Detector.detect_still`` runs the detector on the tiles.
"""

from __future__ import annotations

import math

import numpy as np

# A face must be this much smaller than a tile's overlap to be sure to lie wholly in one tile
# with some context around it.
MARGIN = 1.25


def pyramid(fast_scale: float, target_scale: float, step: float) -> list[float]:
    """The scales, finest first, to tile at beyond the fast path's ``fast_scale``: from
    ``target_scale`` (where the smallest wanted face reaches the detector's reliable size) down
    by ``step`` while still finer than the fast path."""
    scales = []
    s = target_scale
    while s > fast_scale * 1.0001:
        scales.append(s)
        s /= step
    return scales


def origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of ``length`` pixels: every interval of ``overlap`` pixels
    lies wholly inside one tile, and the last tile ends at the edge (all tiles full size)."""
    if length <= tile:
        return [0]
    step = tile - overlap
    n = math.ceil((length - tile) / step)
    return sorted({min(i * step, length - tile) for i in range(n + 1)})


def overlap_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two x, y, w, h boxes over the smaller one's area: 1 when one box lies
    inside the other (a face found again, or a part of a face found as one)."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    smaller = min(a[2] * a[3], b[2] * b[3])
    return float(ix * iy / max(smaller, 1e-6))


def touches_cut(box: np.ndarray, size: tuple[int, int], cut: tuple[bool, bool, bool, bool],
                tol: float = 2.0) -> bool:
    """Whether ``box`` (tile pixels) reaches an edge of a ``size`` (w, h) tile where the tile
    cuts the image (``cut``: left, top, right, bottom): a face cut in two there lies whole in
    the neighbouring tile, which finds it."""
    w, h = size
    return bool((cut[0] and box[0] <= tol) or (cut[1] and box[1] <= tol)
                or (cut[2] and box[0] + box[2] >= w - tol)
                or (cut[3] and box[1] + box[3] >= h - tol))
