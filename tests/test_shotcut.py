"""Shot-cut detection on the real clips: the cuts a viewer sees, and nothing else."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeface_cam.shotcut import ShotCutDetector

from .conftest import VIDEO

pytestmark = pytest.mark.device

# Checked by eye: lin_manuel_miranda_clip.mp4 cuts to a new shot at these frames (0-based:
# the first frame of the new shot): stage -> audience, audience -> stage, stage -> audience.
# street_scene.mp4 is one continuous shot.
CLIP_CUTS = {"lin_manuel_miranda_clip.mp4": [20, 82, 211], "street_scene.mp4": []}


def frames(path):
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield img
    finally:
        cap.release()


@pytest.mark.parametrize("clip", sorted(CLIP_CUTS))
def test_cuts_found_where_the_shot_changes(clip, shared):
    det = ShotCutDetector()
    found = [i for i, img in enumerate(frames(VIDEO / clip)) if det.is_cut(img)]
    assert found == CLIP_CUTS[clip]


def test_every_other_frame_is_still_no_cut(shared):
    """A live camera drops stale frames: motion between processed frames grows, cuts do not
    appear (half the frames of the clip, away from its cuts)."""
    det = ShotCutDetector()
    kept = [img for i, img in enumerate(frames(VIDEO / "lin_manuel_miranda_clip.mp4"))
            if i % 2 == 0 and not any(c - 2 <= i <= c + 1 for c in CLIP_CUTS[
                "lin_manuel_miranda_clip.mp4"])]
    cuts = [det.is_cut(img) for img in kept]
    # Only the jumps over the removed cut frames remain (one per cut), no others.
    assert sum(cuts) == 3


def test_first_frame_grey_and_bgra_frames_and_reset():
    a = np.zeros((120, 160, 3), np.uint8)
    a[:, 80:] = 220  # dark left, bright right ...
    b = a[:, ::-1].copy()  # ... and the other way round
    det = ShotCutDetector()
    assert not det.is_cut(a) and det.last_change == 0.0  # nothing to compare with
    assert not det.is_cut(a.copy())
    assert det.is_cut(b) and det.last_change > 0.3
    det.reset()
    assert not det.is_cut(a)  # after a reset the next frame starts afresh
    grey = ShotCutDetector()
    assert not grey.is_cut(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY))
    assert grey.is_cut(cv2.cvtColor(b, cv2.COLOR_BGR2BGRA))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_threshold_is_refused(bad):
    with pytest.raises(ValueError, match="cut threshold"):
        ShotCutDetector(bad)
