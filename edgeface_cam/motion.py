"""Is anything moving? The pipeline skips face detection while nothing moves and no track lives.

A door camera sees nobody most of the day, and YuNet on every frame of an empty scene costs half
an x86 core (most of a Pi 4) for nothing. ``MotionGate.check`` answers per frame, on a small grey
copy (about 160 pixels wide, every n-th pixel first: ~0.5 ms for a 640x480 frame):

- the difference to a running-average background, after removing the picture's median
  difference (the whole scene getting brighter or darker, a cloud, auto exposure, is not
  motion); pixels that differ by more than ``PIXEL_DELTA`` grey levels count as changed;
- a 3x3 opening drops isolated changed pixels (sensor and compression noise: the area-averaged
  thumbnail already divides their amplitude by ~4);
- motion = the changed share of the picture >= ``threshold`` and its largest connected changed
  region, in frame pixels, >= ``min_area``.

The detector runs when something moves, while a track is alive (the caller says so), on the
first frame, and every ``check_every`` seconds regardless, so a person standing still (who
becomes background within seconds) is not lost and a slow drift cannot hide anyone for long.

Why a running average and not OpenCV's MOG2 background subtractor (both measured by
``benchmarks/cameras.py --only motion``): on the same thumbnail they cost the same and agree on
noise, a slow ramp and a walker, but MOG2 took the lights going up by 40 grey levels at once for
motion during 37 frames; the median-corrected difference ignores any uniform change.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB_WIDTH = 160  # pixels; the height follows the frame's aspect ratio
PIXEL_DELTA = 12.0  # grey levels (0..255) a thumbnail pixel must differ from the background
ALPHA = 0.05  # background update rate per checked frame (time constant ~0.7 s at 30 fps)
_KERNEL = np.ones((3, 3), np.uint8)


def thumbnail(image: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """A small float32 grey copy of ``image`` (BGR, BGRA or grey)."""
    h, w = image.shape[:2]
    step = max(1, w // (2 * width))  # every n-th pixel first (a view): cheap on big frames
    image = image[::step, ::step]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    size = (width, max(1, round(width * h / w)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)


class MotionGate:
    """``check(image, busy, now)`` for each frame of one camera, in order: run the detector?

    ``threshold``: share of the picture (0..1) that must change; ``min_area``: the smallest
    changed region that counts, in frame pixels; ``check_every``: seconds after which the
    detector runs regardless. ``skipped`` counts the frames it said no to.
    """

    def __init__(self, threshold: float = 0.002, min_area: float = 400.0,
                 check_every: float = 2.0) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"motion threshold must be in [0, 1], got {threshold}")
        if min_area < 0 or check_every <= 0:
            raise ValueError(f"min_area must be >= 0 and check_every > 0, got {min_area}, "
                             f"{check_every}")
        self.threshold = float(threshold)
        self.min_area = float(min_area)
        self.check_every = float(check_every)
        self.skipped = 0
        self.checked = 0
        self.last_share = 0.0  # changed share of the last frame (after the opening)
        self._bg: np.ndarray | None = None
        self._last_run: float | None = None

    def moving(self, image: np.ndarray) -> bool:
        """Whether ``image`` differs from the background; updates the background."""
        small = thumbnail(image)
        bg = self._bg
        if bg is None or bg.shape != small.shape:
            self._bg = small
            self.last_share = 1.0
            return True  # nothing to compare with: assume something is there
        diff = small - bg
        diff -= float(np.median(diff))  # a uniform brightness change is not motion
        mask = (np.abs(diff) > PIXEL_DELTA).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL)
        cv2.accumulateWeighted(small, bg, ALPHA)
        changed = int(np.count_nonzero(mask))
        self.last_share = changed / mask.size
        if not changed or self.last_share < self.threshold:
            return False
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        largest = int(stats[1:, cv2.CC_STAT_AREA].max())
        h, w = image.shape[:2]
        return largest * (h * w) / mask.size >= self.min_area

    def check(self, image: np.ndarray, busy: bool, now: float) -> bool:
        """True when the detector should run on this frame: something moves, ``busy`` (a track
        is alive), the first frame, or ``check_every`` seconds since it last ran."""
        self.checked += 1
        moved = self.moving(image)
        due = self._last_run is None or now - self._last_run >= self.check_every
        if moved or busy or due:
            self._last_run = now
            return True
        self.skipped += 1
        return False

    def reset(self) -> None:
        """Forget the background (a source reopened: its picture may differ)."""
        self._bg = None
