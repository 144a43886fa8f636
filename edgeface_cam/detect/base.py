"""What every detector is: ``Face``, the ``Detector`` interface and the registry of backends.

Every detector returns ``Face`` objects in full-image pixel coordinates with the landmarks the
aligner needs, named so that the aligner picks the matching template points; boxes lie inside
the image and the largest face comes first. Detectors keep every face they find: how small a
face may be to count is the recognizer's decision (``Recognizer.min_face``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..align import POINT_NAMES
from .tiling import MARGIN, origins, overlap_fraction, pyramid, touches_cut

# A face found again by a finer tile (its box mostly inside a kept face's box) is the same face.
SAME_FACE = 0.5


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


class DetectorError(ValueError):
    """A detector that cannot be built from the given settings (one-line message)."""


def clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """An x, y, w, h box cut to the image: detectors place boxes of faces at the edge partly
    outside it (x = -3), which crops, IoU and the size check must not see."""
    x0, x1 = np.clip([box[0], box[0] + box[2]], 0, width)
    y0, y1 = np.clip([box[1], box[1] + box[3]], 0, height)
    return np.array([x0, y0, x1 - x0, y1 - y0], np.float32)


def finish(faces: list[Face], shape: tuple[int, ...]) -> list[Face]:
    """Boxes clipped to the image (faces left with no area dropped), largest face first."""
    h, w = shape[:2]
    out = []
    for f in faces:
        f.box = clip_box(f.box, w, h)
        if f.box[2] > 0 and f.box[3] > 0:
            out.append(f)
    return sorted(out, key=lambda f: -float(f.box[2] * f.box[3]))


class Detector:
    """The interface: ``detect(image_bgr) -> list[Face]`` (see the module docstring).

    Backends implement ``_detect(image)`` (faces in image pixels, any order) and, to look closer
    at photos bigger than their input (``detect_still``), set ``tile_size`` (the side they run at
    without shrinking; 0: never tile), ``smallest_face`` (the smallest face, in input pixels,
    they find reliably) and ``input_scale`` (how much ``detect`` shrinks an image).
    """

    name = "detector"
    default_score = 0.8
    tile_size = 0
    smallest_face = 32.0

    def detect(self, image: np.ndarray) -> list[Face]:
        """The fast path (video frames): one pass at the backend's input size."""
        return finish(self._detect(image), image.shape)

    def detect_still(self, image: np.ndarray, min_face: float) -> list[Face]:
        """Every face of ``min_face`` pixels or more in a still photo however large it is.

        ``detect`` finds the large faces; where it shrinks the photo so far that a ``min_face``
        face falls below ``smallest_face``, tiles at finer scales (a pyramid, each level finding
        the faces too small for the next coarser one) find the rest. Faces the fast path found
        are kept exactly as it found them."""
        faces = self.detect(image)
        if self.tile_size <= 0:
            return faces
        h, w = image.shape[:2]
        target = min(1.0, self.smallest_face / max(float(min_face), 1.0))
        overlap = min(self.tile_size // 2, math.ceil(2 * self.smallest_face * MARGIN))
        step = max(1.1, overlap / (self.smallest_face * MARGIN))
        found: list[Face] = []
        for scale in pyramid(self.input_scale(h, w), target, step):
            found += self._detect_tiles(image, scale, overlap)
        for f in sorted(found, key=lambda f: -f.score):
            if all(overlap_fraction(f.box, k.box) < SAME_FACE for k in faces):
                faces.append(f)
        return finish(faces, image.shape)

    def input_scale(self, height: int, width: int) -> float:
        """The factor ``detect`` resizes an image of this size by (1: full size)."""
        return 1.0

    def _detect(self, image: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def _detect_native(self, image: np.ndarray) -> list[Face]:
        """Faces in a ``tile_size`` tile, found at the tile's own size (no shrinking)."""
        return self._detect(image)

    def _detect_tiles(self, image: np.ndarray, scale: float, overlap: int) -> list[Face]:
        """The faces in ``image`` seen at ``scale``, ``tile_size`` tiles at a time."""
        h, w = image.shape[:2]
        lw, lh = max(1, round(w * scale)), max(1, round(h * scale))
        t = self.tile_size
        faces = []
        for ty in origins(lh, t, overlap):
            for tx in origins(lw, t, overlap):
                faces += self._detect_tile(image, (tx / scale, ty / scale),
                                           (min(t, lw), min(t, lh)), scale)
        return faces

    def _detect_tile(self, image: np.ndarray, origin: tuple[float, float],
                     size: tuple[int, int], scale: float) -> list[Face]:
        h, w = image.shape[:2]
        x0, y0 = round(origin[0]), round(origin[1])
        x1 = min(w, round(origin[0] + size[0] / scale))
        y1 = min(h, round(origin[1] + size[1] / scale))
        tile = cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
        back = np.array([(x1 - x0) / size[0], (y1 - y0) / size[1]], np.float32)
        offset = np.array([x0, y0], np.float32)
        cut = (x0 > 0, y0 > 0, x1 < w, y1 < h)
        return [Face(box=np.concatenate([f.box[:2] * back + offset, f.box[2:] * back]),
                     landmarks=f.landmarks * back + offset, score=f.score,
                     landmark_names=f.landmark_names)
                for f in self._detect_native(tile) if not touches_cut(f.box, size, cut)]


# The backends by name, each a Detector class's
# ``from_settings(model, input_width, score_threshold, num_threads)``.
_REGISTRY: dict[str, Callable[..., Detector]] = {}
DEFAULT_BACKEND = "yunet"


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: makes a backend buildable by ``make_detector(cls.name)``."""
    _REGISTRY[cls.name] = cls.from_settings  # type: ignore[attr-defined]
    return cls


def backends() -> tuple[str, ...]:
    """The registered backend names, the default first."""
    return (DEFAULT_BACKEND, *sorted(n for n in _REGISTRY if n != DEFAULT_BACKEND))


def make_detector(backend: str = DEFAULT_BACKEND, model: str | None = None,
                  input_width: int | None = None, score_threshold: float | None = None,
                  num_threads: int | None = None) -> Detector:
    """A detector by backend name. ``model``: YuNet's .onnx path; for BlazeFace/MediaPipe
    "short" (default), "full", "full_sparse" or a .tflite path. ``input_width`` applies to YuNet
    only (BlazeFace's input size is fixed by its model); None, like ``score_threshold`` None,
    means the backend's own default. Raises ``DetectorError``."""
    backend = (backend or DEFAULT_BACKEND).lower()
    build = _REGISTRY.get(backend)
    if build is None:
        raise DetectorError(f"unknown detector backend {backend!r}; "
                            f"choose one of {', '.join(backends())}")
    try:
        return build(model, input_width, score_threshold, num_threads)
    except (FileNotFoundError, ValueError) as e:
        if isinstance(e, DetectorError):
            raise
        raise DetectorError(f"{backend} detector: {str(e).splitlines()[0]}") from None
    except cv2.error as e:
        raise DetectorError(f"{backend} detector: OpenCV cannot load the model "
                            f"({str(e).strip().splitlines()[-1]})") from None
