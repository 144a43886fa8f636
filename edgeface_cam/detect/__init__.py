"""Face detectors: YuNet (default, OpenCV), BlazeFace (LiteRT) and MediaPipe (optional).

``base`` holds ``Face``, the ``Detector`` interface and ``make_detector``; one module per backend.
Importing the package registers every backend (mediapipe itself is imported only when used).
"""

from .base import Detector, DetectorError, Face, backends, clip_box, make_detector
from .blazeface import (
    BLAZEFACE_FILES,
    BLAZEFACE_POINTS,
    BlazeFaceDetector,
    blazeface_model_path,
    ssd_anchors,
    weighted_nms,
)
from .mediapipe import MediaPipeDetector, with_mediapipe_metadata
from .yunet import YUNET_MODEL, YuNetDetector

BACKENDS = backends()
# Each backend's own score threshold (detector.score_threshold null means this).
DEFAULT_SCORE = {cls.name: cls.default_score
                 for cls in (YuNetDetector, BlazeFaceDetector, MediaPipeDetector)}

__all__ = [
    "BACKENDS", "BLAZEFACE_FILES", "BLAZEFACE_POINTS", "DEFAULT_SCORE", "YUNET_MODEL",
    "BlazeFaceDetector", "Detector", "DetectorError", "Face", "MediaPipeDetector",
    "YuNetDetector", "backends", "blazeface_model_path", "clip_box", "make_detector", "ssd_anchors",
    "weighted_nms", "with_mediapipe_metadata",
]
