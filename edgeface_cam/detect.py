"""Face detectors: YuNet (default, OpenCV), BlazeFace (LiteRT) and MediaPipe (optional).

Every detector returns ``Face`` objects in full-image pixel coordinates with the landmarks the
aligner needs, named so that the aligner picks the matching template points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .align import POINT_NAMES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
YUNET_MODEL = ASSETS / "face_detection_yunet_2023mar.onnx"


@dataclass
class Face:
    box: np.ndarray  # x, y, w, h in image pixels (float32)
    landmarks: np.ndarray  # (K, 2) image pixels
    score: float
    landmark_names: tuple[str, ...] = field(default=POINT_NAMES)

    @property
    def size(self) -> float:
        """The shorter side of the box: what ``min_face`` is compared with."""
        return float(min(self.box[2], self.box[3]))


class Detector:
    """The interface: ``detect(image_bgr) -> list[Face]``, largest face first."""

    name = "detector"

    def detect(self, image: np.ndarray) -> list[Face]:
        raise NotImplementedError


def _largest_first(faces: list[Face], min_face: float) -> list[Face]:
    faces = [f for f in faces if f.size >= min_face]
    return sorted(faces, key=lambda f: -float(f.box[2] * f.box[3]))


class YuNetDetector(Detector):
    """OpenCV's FaceDetectorYN (4.5.4+ and 5.x) with the 2023mar YuNet ONNX (MIT, 232 KB).

    ``input_width`` bounds the detection resolution: frames are downscaled to it (keeping the
    aspect), so a 1080p frame costs what a 640-wide one does; boxes are mapped back.
    """

    name = "yunet"

    def __init__(self, model: str | Path = YUNET_MODEL, input_width: int = 640,
                 score_threshold: float = 0.8, nms_threshold: float = 0.3,
                 min_face: float = 40, top_k: int = 50) -> None:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"detector model not found: {model}")
        self.input_width = int(input_width)
        self.min_face = float(min_face)
        self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), float(score_threshold),
                                              float(nms_threshold), int(top_k))
        self._size: tuple[int, int] | None = None

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        scale = min(1.0, self.input_width / w) if self.input_width > 0 else 1.0
        if scale < 1.0:
            image = cv2.resize(image, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA)
        size = (image.shape[1], image.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, rows = self._net.detect(image)
        faces = []
        for r in [] if rows is None else rows:
            xy = r[:14].astype(np.float32) / np.float32(scale)
            faces.append(Face(box=xy[0:4], landmarks=xy[4:14].reshape(5, 2), score=float(r[14])))
        return _largest_first(faces, self.min_face)
