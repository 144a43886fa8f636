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
# Still photos are searched in tiles of up to this side (detect_still): one pass for most photos,
# bounded memory for huge ones (~0.3 GB peak at 2048x2048).
STILL_TILE = 2048


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
    smallest_face = 28.0

    def __init__(self, model: str | Path = YUNET_MODEL, input_width: int | None = None,
                 score_threshold: float | None = None, nms_threshold: float = 0.3,
                 top_k: int = 50) -> None:
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(f"detector model not found: {model}")
        self.input_width = INPUT_WIDTH if input_width is None else int(input_width)
        self.tile_size = max(STILL_TILE, self.input_width) if self.input_width > 0 else 0
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
        if scale >= 1.0:
            return self._detect_native(image)
        small = cv2.resize(image, (round(w * scale), round(h * scale)),
                           interpolation=cv2.INTER_AREA)
        s = np.float32(scale)
        return [Face(box=f.box / s, landmarks=f.landmarks / s, score=f.score)
                for f in self._detect_native(small)]

    def _detect_native(self, image: np.ndarray) -> list[Face]:
        size = (image.shape[1], image.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, rows = self._net.detect(image)
        return [Face(box=r[0:4].astype(np.float32), landmarks=r[4:14].astype(np.float32)
                     .reshape(5, 2), score=float(r[14]))
                for r in ([] if rows is None else rows)]
