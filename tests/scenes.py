"""Scenes made for the motion gate's tests and benchmarks: a still room with sensor noise (and
optionally JPEG compression noise), a slow brightness ramp, and a person (a fixture photo)
walking in after a stretch of nothing. Deterministic (seeded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)  # width, height


def room(size: tuple[int, int] = SIZE, seed: int = 0) -> np.ndarray:
    """A still, textured 'room' with no face in it: a gradient wall, furniture-like blocks and
    blurred texture (so noise and compression have something to work on)."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = 90 + 60 * xx / w + 30 * yy / h
    img = np.dstack([wall * 0.9, wall, wall * 1.1])
    for _ in range(8):
        x0, y0 = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 80))
        x1, y1 = x0 + int(rng.integers(40, 200)), y0 + int(rng.integers(40, 160))
        img[y0:y1, x0:x1] = rng.integers(20, 230, 3)
    texture = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 2)
    return np.clip(img + texture, 0, 255).astype(np.uint8)


def noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 4.0,
          jpeg: int | None = None) -> np.ndarray:
    """``image`` with Gaussian sensor noise and, if ``jpeg`` (a quality), compression noise."""
    out = np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
    if jpeg is not None:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def still(n: int, sigma: float = 4.0, jpeg: int | None = 75, seed: int = 1) -> Iterator[np.ndarray]:
    base, rng = room(), np.random.default_rng(seed)
    for _ in range(n):
        yield noisy(base, rng, sigma, jpeg)


def ramp(n: int, levels: float = 60.0, seed: int = 2) -> Iterator[np.ndarray]:
    """The room getting brighter by ``levels`` grey levels over ``n`` frames (a sunrise, a
    dimmer, auto exposure), with noise."""
    base, rng = room().astype(np.float32), np.random.default_rng(seed)
    for i in range(n):
        lit = np.clip(base * (1.0 + levels / 128.0 * i / max(1, n - 1)), 0, 255)
        yield noisy(lit.astype(np.uint8), rng)


def walk_in(person: Path, idle: int, walk: int = 20, stay: int = 40, height: int = 300,
            seed: int = 3) -> Iterator[np.ndarray]:
    """``idle`` still frames, then ``person`` (a photo) sliding in from the left over ``walk``
    frames, then standing with a slight sway for ``stay`` frames."""
    base, rng = room(), np.random.default_rng(seed)
    photo = cv2.imread(str(person))
    ph = height
    pw = round(photo.shape[1] * ph / photo.shape[0])
    photo = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
    w, h = SIZE
    target = (w - pw) // 2
    y = (h - ph) // 2
    for i in range(idle + walk + stay):
        frame = base.copy()
        if i >= idle:
            k = i - idle
            x = round(-pw + (target + pw) * min(1.0, (k + 1) / walk)) + (k % 6 - 3 if k >= walk
                                                                         else 0)
            x0, x1 = max(0, x), min(w, x + pw)
            if x1 > x0:
                frame[y:y + ph, x0:x1] = photo[:, x0 - x:x1 - x]
        yield noisy(frame, rng)


def first_full_frame(idle: int, walk: int = 20) -> int:
    """The first frame of ``walk_in`` with the whole photo in view."""
    return idle + walk - 1


def write_video(path: Path, frames: Iterator[np.ndarray], fps: float = 30.0) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    for f in frames:
        out.write(f)
    out.release()
    return path
