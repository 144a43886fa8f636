"""Shot-cut detection: has the whole picture changed between two processed frames?

At a cut in a video a face box can pass to another person with a good IoU, and one embedding
cannot tell that from the same person looking down: on the fixture clips a cut from an audience
member to a performer measured cosine 0.12 to the track, and a boy walking with his head bowed
measured 0.12 to his own track, with no cut. The picture can tell: the mean absolute difference
of two tiny grey thumbnails is 0.10-0.12 at the three cuts of lin_manuel_miranda_clip.mp4 and at
most 0.05 between any other two consecutive frames of both clips (street_scene.mp4: 0.02).
The tracker uses a cut only as a reason to look again: each live track is re-embedded at once
and split at a stricter cosine (``Tracker.scene_changed``), so a false cut (the lights switched
on, someone filling the frame) costs one embedding, not a new track.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import TrackingConfig

THUMBNAIL = (32, 18)  # (width, height): 16:9; a 4:3 frame is squeezed, which does not matter here


class ShotCutDetector:
    """``is_cut(image)`` for each processed frame, in order; the first frame is never a cut."""

    def __init__(self, threshold: float | None = None) -> None:
        """``threshold``: the grey-thumbnail change that makes a cut; None = the config's
        ``tracking.cut_threshold`` (0.08: between 0.05, the largest change within a shot of the
        fixture clips, and 0.10, their smallest cut)."""
        if threshold is None:
            threshold = TrackingConfig().cut_threshold
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"cut threshold must be in (0, 1], got {threshold}")
        self.threshold = float(threshold)
        self._prev: np.ndarray | None = None
        self.last_change = 0.0  # mean absolute difference of the last two thumbnails, 0..1

    @staticmethod
    def thumbnail(image: np.ndarray) -> np.ndarray:
        # Every n-th pixel first (a view, no copy) to about 4x the thumbnail: converting and
        # area-averaging a whole 1080p frame costs 2 ms, this 0.1 ms, and the change measured is
        # the same to within 0.01 on the clips.
        h, w = image.shape[:2]
        image = image[::max(1, h // (4 * THUMBNAIL[1])), ::max(1, w // (4 * THUMBNAIL[0]))]
        if image.ndim == 3:
            code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
            image = cv2.cvtColor(image, code)
        small = cv2.resize(image, THUMBNAIL, interpolation=cv2.INTER_AREA)
        return small.astype(np.float32) / 255.0

    def is_cut(self, image: np.ndarray) -> bool:
        thumb = self.thumbnail(image)
        prev, self._prev = self._prev, thumb
        if prev is None:
            self.last_change = 0.0
            return False
        self.last_change = float(np.mean(np.abs(thumb - prev)))
        return self.last_change > self.threshold

    def reset(self) -> None:
        """Forget the previous frame (a source reopened: its first frame is not compared)."""
        self._prev = None
