"""The whole-path self-test: detection -> alignment -> embedding on a bundled face.

The model card's self-test vector checks the embedder alone. A numpy, BLAS or OpenCV that
computes wrongly passes it and still ruins every crop: under qemu's default ``max`` CPU, PyPI's
numpy 2.5 returned wrong numbers for the 2x5 @ 5x2 product in ``align.estimate_similarity`` and
every score fell by 0.2-0.34 while the embedder's own check passed. So at load each stage is
checked on ``assets/selftest/face.jpg`` against ``face.json`` (written by ``write_reference``
on x86, tolerances measured against emulated arm64; BENCHMARKS.md "Cross-CPU agreement"):

1. alignment: the similarity fit of the recorded landmarks equals the recorded matrix (numpy);
2. warp: OpenCV's warp of the photo with that matrix equals the recorded crop;
3. detector: the detector finds the face where it was recorded (YuNet, pixels);
4. embedding: the crop the whole path makes embeds like the recorded crop (cosine).

A failure names the stage; ``check`` raises ``SelfTestFailed`` (the CLI reports it in one line,
the service stops), ``stages`` returns every result for ``doctor``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from .align import CROP_SIZE, POINT_NAMES, align_face, alignment_matrix
from .detect import Detector, Face
from .embed import SelfTestFailed
from .paths import ASSETS

SELFTEST_DIR = ASSETS / "selftest"
IMAGE = SELFTEST_DIR / "face.jpg"
REFERENCE = SELFTEST_DIR / "face.json"

# Bounds, each well above the CPU-to-CPU differences measured (x86 vs emulated arm64, figures in
# BENCHMARKS.md) and well below what a broken library gives: the Trixie-under-max product was off
# by whole pixels in the matrix's translation and cost 0.2-0.34 of cosine.
MATRIX_ATOL = 1e-3  # the fit is float64 arithmetic on 5 points: CPUs agree to ~1e-12
WARP_MEAN_ABS = 1.0  # grey levels; bilinear rounding may differ by 1 on a few pixels
LANDMARK_PX = 2.0  # YuNet's landmarks on the 224-pixel photo
# A detector other than YuNet places its points its own way (BlazeFace: four, mouth centre):
# its eyes need only be near the recorded ones, as a share of the eye distance.
OTHER_DETECTOR_EYES = 0.35  # measured: BlazeFace short 0.19, full 0.04
MIN_COSINE = {"yunet": 0.98, "other": 0.80}


class SupportsEmbed(Protocol):
    def embed(self, crops_bgr: list[np.ndarray] | np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Stage:
    name: str  # alignment, warp, detector, embedding
    ok: bool
    detail: str


@dataclass(frozen=True)
class Reference:
    image: np.ndarray
    landmarks: np.ndarray  # 5x2, YuNet on the x86 reference machine
    matrix: np.ndarray  # 2x3
    crop: np.ndarray  # 112x112 BGR


def _png(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def load_reference(image: Path = IMAGE, reference: Path = REFERENCE) -> Reference:
    try:
        raw = json.loads(reference.read_text(encoding="utf-8"))
        photo = cv2.imdecode(np.fromfile(image, np.uint8), cv2.IMREAD_COLOR)
        crop = cv2.imdecode(np.frombuffer(base64.b64decode(raw["crop_png_base64"]), np.uint8),
                            cv2.IMREAD_COLOR)
    except (OSError, ValueError, KeyError) as e:
        raise SelfTestFailed(f"self-test files in {SELFTEST_DIR} are missing or damaged ({e}); "
                             "reinstall edgeface-cam") from None
    if photo is None or crop is None:
        raise SelfTestFailed(f"self-test images in {SELFTEST_DIR} do not decode; reinstall")
    return Reference(photo, np.asarray(raw["landmarks"], np.float64),
                     np.asarray(raw["matrix"], np.float64), crop)


def _main_face(detector: Detector, image: np.ndarray) -> Face | None:
    faces = detector.detect(image)
    return max(faces, key=lambda f: f.size) if faces else None


def _eyes(face: Face) -> np.ndarray:
    names = list(face.landmark_names)
    return np.asarray([face.landmarks[names.index(n)] for n in POINT_NAMES[:2]], np.float64)


def check_alignment(ref: Reference) -> Stage:
    got = alignment_matrix(ref.landmarks)
    err = float(np.abs(got - ref.matrix).max())
    ok = err <= MATRIX_ATOL
    return Stage("alignment", ok, f"similarity fit off by {err:.2g} (numpy/BLAS computes "
                 "wrongly)" if not ok else f"similarity fit within {err:.1g}")


def _warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The warp ``align.align_face`` makes, from a given matrix."""
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def check_warp(ref: Reference) -> Stage:
    crop = _warp(ref.image, ref.matrix)
    diff = float(np.abs(crop.astype(np.int16) - ref.crop.astype(np.int16)).mean())
    ok = diff <= WARP_MEAN_ABS
    return Stage("warp", ok, f"OpenCV's warp differs by {diff:.2f} grey levels on average"
                 + (" (OpenCV computes wrongly)" if not ok else ""))


def check_detector(detector: Detector, ref: Reference, face: Face | None) -> Stage:
    if face is None:
        return Stage("detector", False, f"{detector.name} finds no face in {IMAGE.name}")
    if detector.name == "yunet" and len(face.landmarks) == len(ref.landmarks):
        err = float(np.abs(np.asarray(face.landmarks, np.float64) - ref.landmarks).max())
        ok = err <= LANDMARK_PX
        return Stage("detector", ok, f"landmarks {err:.2f} px from the recorded ones"
                     + (" (the detector computes wrongly)" if not ok else ""))
    eye_dist = float(np.linalg.norm(ref.landmarks[1] - ref.landmarks[0]))
    err = float(np.linalg.norm(_eyes(face) - ref.landmarks[:2], axis=1).max()) / eye_dist
    ok = err <= OTHER_DETECTOR_EYES
    return Stage("detector", ok, f"{detector.name}'s eyes {err:.2f} eye distances from the "
                 "recorded ones" + ("" if ok else " (the detector computes wrongly)"))


def check_embedding(embedder: SupportsEmbed, ref: Reference, face: Face | None,
                    detector_name: str) -> Stage:
    if face is None:
        return Stage("embedding", False, "not checked: no face detected")
    crop = align_face(ref.image, face.landmarks, face.landmark_names)
    got, want = embedder.embed([crop, ref.crop])
    cos = float(got @ want)
    need = MIN_COSINE["yunet" if detector_name == "yunet" else "other"]
    ok = cos >= need
    return Stage("embedding", ok, f"whole-path crop embeds at cosine {cos:.4f} to the recorded"
                 f" one (need >= {need})")


def stages(detector: Detector, embedder: SupportsEmbed, ref: Reference | None = None
           ) -> list[Stage]:
    """Every stage's result, for doctor (an embedder of any model: both crops use it)."""
    ref = ref or load_reference()
    face = _main_face(detector, ref.image)
    return [check_alignment(ref), check_warp(ref), check_detector(detector, ref, face),
            check_embedding(embedder, ref, face, detector.name)]


def check(detector: Detector, embedder: SupportsEmbed) -> None:
    """Raise SelfTestFailed naming the first stage that computes wrongly."""
    for stage in stages(detector, embedder):
        if not stage.ok:
            raise SelfTestFailed(f"self-test failed at the {stage.name} stage: {stage.detail}; "
                                 "this numpy/OpenCV/LiteRT build computes wrongly here "
                                 "(`edgeface-cam doctor` shows every stage)")


def write_reference(detector: Detector, image: Path = IMAGE, reference: Path = REFERENCE
                    ) -> dict[str, Any]:
    """Record the reference from a trusted machine (x86, the versions CI tests)."""
    photo = cv2.imdecode(np.fromfile(image, np.uint8), cv2.IMREAD_COLOR)
    face = _main_face(detector, photo)
    if face is None:
        raise ValueError(f"no face in {image}")
    landmarks = np.asarray(face.landmarks, np.float64).round(4)
    matrix = alignment_matrix(landmarks)
    raw = {"image": image.name, "detector": detector.name, "landmarks": landmarks.tolist(),
           "matrix": matrix.tolist(), "crop_png_base64": _png(_warp(photo, matrix))}
    reference.write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    return raw
