"""YuNet (the default detector): OpenCV's FaceDetectorYN with the 2023mar ONNX (MIT, 232 KB)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..compat import opencv_errors_only
from ..paths import ASSETS
from .base import Detector, Face, register

YUNET_MODEL = ASSETS / "face_detection_yunet_2023mar.onnx"
INPUT_WIDTH = 640  # YuNet's own default (input_width None); the config's detector.input_width wins


@register
class YuNetDetector(Detector):
    """OpenCV's FaceDetectorYN (4.5.4+ and 5.x) with the 2023mar YuNet ONNX.

    ``input_width`` bounds the detection resolution: frames are downscaled to it (keeping the
    aspect), so a 1080p frame costs what a 640-wide one does; boxes are mapped back. 0: full size.
    """

    name = "yunet"
    default_score = 0.8
    # Measured on the fixture faces pasted at each size into a 640 canvas (score 0.8): found
    # 10/16 at 20 px, 15/16 at 24, all from 28.
    smallest_face = 32.0

    def __init__(self, model: str | Path = YUNET_MODEL, input_width: int | None = None,
                 score_threshold: float | None = None, nms_threshold: float = 0.3,
                 top_k: int = 50) -> None:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"detector model not found: {model}")
        self.input_width = INPUT_WIDTH if input_width is None else int(input_width)
        self.tile_size = max(0, self.input_width)
        score = self.default_score if score_threshold is None else float(score_threshold)
        # OpenCV 5 warns on every create that its new DNN engine ignores the (default) target:
        # noise in every log, nothing to act on. Silence warnings for this call only.
        with opencv_errors_only():
            self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score,
                                                  float(nms_threshold), int(top_k))
        self._size: tuple[int, int] | None = None

    @classmethod
    def from_settings(cls, model: str | None, input_width: int | None,
                      score_threshold: float | None, num_threads: int | None) -> YuNetDetector:
        return cls(model or YUNET_MODEL, input_width=input_width, score_threshold=score_threshold)

    def input_scale(self, height: int, width: int) -> float:
        return min(1.0, self.input_width / width) if self.input_width > 0 else 1.0

    def _detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        scale = self.input_scale(h, w)
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
        return faces
