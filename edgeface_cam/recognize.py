"""Recognition of one frame: detect -> align -> (embed), plus a quality score per face.

The stages are separate methods so the pipeline can time each one and embed only the faces its
tracker asks for; ``analyze`` chains them for one-shot uses (enrol, identify, verify).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .align import CROP_SIZE, align_face
from .detect import Detector, Face

# A face this many pixels across (shorter box side) fills the 112 crop without upscaling.
COMFORT_SIZE = float(CROP_SIZE)
# Laplacian variance of a 112 grey crop at which sharpness scores 0.5: in-focus faces measure a
# few hundred, motion-blurred or upscaled ones tens.
SHARPNESS_HALF = 100.0
# Nose offset from the eye midpoint along the eye line, as a fraction of the eye distance, at which
# frontalness reaches 0 (about 45 degrees of yaw for a typical head).
YAW_LIMIT = 0.6
# Eye-line tilt allowed before frontalness drops (alignment undoes roll, but a strongly tilted
# eye line usually means an unreliable landmark fit), and the tilt at which it reaches 0.
ROLL_FREE_DEG, ROLL_LIMIT_DEG = 15.0, 60.0


class SupportsEmbed(Protocol):
    """What the recognizer needs from ``embed.Embedder`` (tests may pass a stand-in)."""

    def embed(self, crops_bgr: list[np.ndarray] | np.ndarray) -> np.ndarray: ...


@dataclass
class FaceResult:
    face: Face
    crop: np.ndarray  # aligned 112x112 BGR uint8
    embedding: np.ndarray | None  # unit vector, or None when not embedded
    quality: float  # [0, 1], see Recognizer.quality


def _point(face: Face, name: str) -> np.ndarray | None:
    names = tuple(face.landmark_names)
    return np.asarray(face.landmarks[names.index(name)], np.float64) if name in names else None


def size_score(face: Face) -> float:
    return float(min(1.0, max(0.0, face.size / COMFORT_SIZE)))


def sharpness_score(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop, squashed to [0, 1) as v / (v + half)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    var = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return var / (var + SHARPNESS_HALF)


def frontal_score(face: Face) -> float:
    """1 for a level, frontal face; falls with yaw (nose off the eye midpoint) and strong roll.

    Faces without eye or nose landmarks get a neutral 0.5 (no evidence either way).
    """
    le, re_, nose = _point(face, "left_eye"), _point(face, "right_eye"), _point(face, "nose")
    if le is None or re_ is None or nose is None:
        return 0.5
    eye_vec = re_ - le
    dist = float(np.hypot(*eye_vec))
    if dist < 1e-6:
        return 0.0
    axis = eye_vec / dist
    yaw = abs(float((nose - (le + re_) / 2) @ axis)) / dist
    roll = abs(math.degrees(math.atan2(eye_vec[1], eye_vec[0])))
    yaw_s = max(0.0, 1.0 - yaw / YAW_LIMIT)
    roll_s = min(1.0, max(0.0, 1.0 - (roll - ROLL_FREE_DEG) / (ROLL_LIMIT_DEG - ROLL_FREE_DEG)))
    return yaw_s * roll_s


def quality_score(face: Face, crop: np.ndarray) -> float:
    """Geometric mean of size, sharpness and frontalness: one bad factor pulls it down, but a
    single middling factor does not zero it (as a plain product of three would nearly do)."""
    parts = (size_score(face), sharpness_score(crop), frontal_score(face))
    return float(np.prod(parts) ** (1.0 / len(parts)))


class Recognizer:
    """Detector + aligner + embedder for whole frames.

    ``min_face`` (shorter box side, pixels) drops faces too small to recognise: the one
    min-face filter (detectors return every face they find). ``still=True`` is for photos
    (enrol, identify, verify): every face of ``min_face`` or more is found however large the
    photo (``Detector.detect_still``); video frames take the detector's fast path.
    """

    def __init__(self, detector: Detector, embedder: SupportsEmbed | None,
                 min_face: float = 0.0) -> None:
        self.detector = detector
        self.embedder = embedder
        self.min_face = float(min_face)

    def detect(self, image_bgr: np.ndarray, still: bool = False) -> list[Face]:
        faces = (self.detector.detect_still(image_bgr, self.min_face) if still
                 else self.detector.detect(image_bgr))
        return [f for f in faces if f.size >= self.min_face]

    @staticmethod
    def align(image_bgr: np.ndarray, face: Face) -> np.ndarray:
        return align_face(image_bgr, face.landmarks, face.landmark_names)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if self.embedder is None:
            raise RuntimeError("this recognizer has no embedder (detection-only)")
        return self.embedder.embed(crops)

    @staticmethod
    def quality(face: Face, crop: np.ndarray) -> float:
        return quality_score(face, crop)

    def analyze(self, image_bgr: np.ndarray, embed: bool = True, still: bool = False
                ) -> list[FaceResult]:
        """Every face in the frame, largest first, aligned and (optionally) embedded."""
        faces = self.detect(image_bgr, still)
        crops = [self.align(image_bgr, f) for f in faces]
        embs = self.embed(crops) if embed and crops else None
        return [FaceResult(face=f, crop=c, embedding=None if embs is None else embs[i],
                           quality=self.quality(f, c))
                for i, (f, c) in enumerate(zip(faces, crops, strict=True))]
