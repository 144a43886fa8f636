"""What prepare, evaluate, export and train share: unit vectors, torch batch embedding, and
finding and aligning the main face of a photo the device's way.

torch is imported only inside ``torch_embed``: evaluating an exported ``.tflite`` needs none.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from edgeface_cam.align import align_face, normalize
from edgeface_cam.detect import Detector, Face, make_detector
from edgeface_cam.embed import l2_normalize

PICKS = ("largest", "centre")
# Smallest face side (pixels) for crops that prepare, export and training data make; evaluation
# measures every face the detector is sure of (its --min-face defaults to 0).
DEFAULT_MIN_FACE = 20.0


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine between two (N, D) arrays."""
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


def torch_embed(model: Any, crops_bgr: np.ndarray, batch: int = 32,
                device: Any = None) -> np.ndarray:
    """(N, 112, 112, 3) BGR uint8 crops -> (N, D) float32 raw embeddings of a torch model,
    ``batch`` crops at a time, without gradients (``device``: where the model lives)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(crops_bgr), batch):
            x = torch.from_numpy(normalize(crops_bgr[i:i + batch], "NCHW"))
            if device is not None:
                x = x.to(device)
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out)


def open_detector(name: str = "yunet", score: float = 0.8) -> Detector:
    """A device detector by name with this score threshold, one thread. Detectors keep every
    face; ``MainFace`` applies ``min_face``. Raises ``edgeface_cam.detect.DetectorError``."""
    return make_detector(name, score_threshold=score, num_threads=1)


def pick_face(faces: list[Face], image_shape: tuple[int, ...], pick: str = "largest") -> Face:
    """The main face: the largest box, or the one whose centre is nearest the image centre
    (LFW's pictures are centred on their subject; a bystander may be larger)."""
    if pick == "largest":
        return max(faces, key=lambda f: float(f.box[2] * f.box[3]))
    if pick != "centre":
        raise ValueError(f"pick must be one of {', '.join(PICKS)}, not {pick!r}")
    centre = np.array([image_shape[1], image_shape[0]], np.float64) / 2
    return min(faces, key=lambda f: float(np.hypot(*(f.box[:2] + f.box[2:4] / 2 - centre))))


class MainFace:
    """Photo -> its main face and aligned crop: pad -> detect -> drop faces smaller than
    ``min_face`` -> pick (``pick_face``) -> align with ``edgeface_cam.align``.

    ``pad`` (a fraction of the longer side, per border) replicates the edge pixels first: YuNet
    misses a face that fills a tight crop (UTKFace, CelebA aligned) because it never saw one so
    large relative to the frame.
    """

    def __init__(self, detector: Detector, pad: float = 0.0, min_face: float = 0.0,
                 pick: str = "largest") -> None:
        if pick not in PICKS:
            raise ValueError(f"pick must be one of {', '.join(PICKS)}, not {pick!r}")
        self.detector = detector
        self.pad = float(pad)
        self.min_face = float(min_face)
        self.pick = pick

    def _detect(self, image: np.ndarray) -> tuple[Face | None, np.ndarray, int]:
        """(main face in padded coordinates or None, the padded image, the padding)."""
        p = round(self.pad * max(image.shape[:2]))
        if p > 0:
            image = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_REPLICATE)
        faces = [f for f in self.detector.detect(image) if f.size >= self.min_face]
        return (pick_face(faces, image.shape, self.pick) if faces else None), image, p

    def find(self, image: np.ndarray) -> Face | None:
        """The main face in ``image``'s own coordinates (``align_face`` replicates the border
        too, so aligning it on ``image`` gives the padded crop)."""
        f, _, p = self._detect(image)
        if f is None or p == 0:
            return f
        shift = np.float32(p)
        return Face(f.box - np.array([shift, shift, 0, 0], np.float32), f.landmarks - shift,
                    f.score, f.landmark_names)

    def crop(self, image: np.ndarray) -> np.ndarray | None:
        """The aligned 112x112 crop of the main face, or None."""
        f, padded, _ = self._detect(image)
        return None if f is None else align_face(padded, f.landmarks, f.landmark_names)
