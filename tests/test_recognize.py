"""Recognition of one frame (real photos, real YuNet, the shipped EdgeFace-XS) and face quality."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeface_cam.detect import Face, YuNetDetector
from edgeface_cam.recognize import (
    Recognizer,
    frontal_score,
    quality_score,
    sharpness_score,
    size_score,
)

from .conftest import ASSETS, PEOPLE, SCENES

pytestmark = pytest.mark.device

MODEL = ASSETS / "edgeface_xs.tflite"


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


@pytest.fixture(scope="module")
def recognizer(detector) -> Recognizer:
    if not MODEL.is_file():
        pytest.fail(f"the shipped model {MODEL} is missing")
    from edgeface_cam.embed import Embedder

    return Recognizer(detector, Embedder(MODEL, num_threads=1))


def read(path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def test_analyze_one_person(recognizer, shared):
    (r, *rest) = recognizer.analyze(read(PEOPLE / "obama" / "obama_1.jpg"))
    assert r.crop.shape == (112, 112, 3) and r.crop.dtype == np.uint8
    assert r.embedding.shape == (512,)
    assert np.linalg.norm(r.embedding) == pytest.approx(1.0, abs=1e-4)
    assert 0.5 < r.quality <= 1.0  # a large, sharp, frontal portrait
    # The largest face comes first (any others are smaller).
    assert all(o.face.box[2] * o.face.box[3] <= r.face.box[2] * r.face.box[3] for o in rest)


def test_same_person_scores_higher_than_another(recognizer, shared):
    def emb(path):
        return recognizer.analyze(read(path))[0].embedding

    o1, o2 = emb(PEOPLE / "obama" / "obama_1.jpg"), emb(PEOPLE / "obama" / "obama_3.jpg")
    biden = emb(PEOPLE / "biden" / "biden_1.jpg")
    assert float(o1 @ o2) > float(o1 @ biden) + 0.2


def test_scene_faces_largest_first_and_each_embedded(recognizer, shared):
    results = recognizer.analyze(read(SCENES / "obama_biden_1.jpg"))
    assert len(results) >= 2
    areas = [float(r.face.box[2] * r.face.box[3]) for r in results]
    assert areas == sorted(areas, reverse=True)
    embs = np.stack([r.embedding for r in results])
    sims = embs @ embs.T
    assert np.all(sims[~np.eye(len(results), dtype=bool)] < 0.5)  # different people


def test_detection_only_needs_no_embedder(detector, shared):
    rec = Recognizer(detector, None)
    results = rec.analyze(read(PEOPLE / "biden" / "biden_2.jpg"), embed=False)
    assert results and results[0].embedding is None and results[0].crop.shape == (112, 112, 3)
    with pytest.raises(RuntimeError):
        rec.analyze(read(PEOPLE / "biden" / "biden_2.jpg"), embed=True)


def test_min_face_drops_small_faces(detector, shared):
    image = read(SCENES / "group_6_faces.jpg")
    every = Recognizer(detector, None).analyze(image, embed=False)
    big = Recognizer(detector, None, min_face=110).analyze(image, embed=False)
    assert len(big) < len(every)
    assert all(r.face.size >= 110 for r in big)


def test_quality_prefers_sharp_large_frontal_faces(detector, shared):
    rec = Recognizer(detector, None)
    image = read(PEOPLE / "obama" / "obama_1.jpg")
    (sharp,) = rec.analyze(image, embed=False)[:1]
    blurred = rec.analyze(cv2.GaussianBlur(image, (0, 0), 6), embed=False)[0]
    assert sharpness_score(blurred.crop) < sharpness_score(sharp.crop) - 0.3
    assert blurred.quality < sharp.quality
    small_img = cv2.resize(image, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)
    small = Recognizer(YuNetDetector(), None).analyze(small_img, embed=False)[0]
    assert size_score(small.face) < size_score(sharp.face)
    assert small.quality < sharp.quality
    for r in (sharp, blurred, small):
        assert 0.0 <= r.quality <= 1.0


def _face(points: list[tuple[float, float]], names: tuple[str, ...]) -> Face:
    return Face(box=np.array([0, 0, 112, 112], np.float32),
                landmarks=np.array(points, np.float32), score=0.9, landmark_names=names)


FIVE = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def test_frontalness_from_landmarks():
    level = _face([(38, 52), (74, 52), (56, 72), (42, 92), (71, 92)], FIVE)
    turned = _face([(38, 52), (74, 52), (70, 72), (50, 92), (75, 92)], FIVE)  # nose by an eye
    profile = _face([(38, 52), (74, 52), (95, 72), (60, 92), (90, 92)], FIVE)  # nose outside
    tilted = _face([(38, 30), (60, 72), (30, 70), (10, 80), (30, 95)], FIVE)  # eye line ~62 deg
    assert frontal_score(level) > 0.95
    assert 0.0 < frontal_score(turned) < 0.7
    assert frontal_score(profile) == 0.0
    assert frontal_score(tilted) < 0.2
    # BlazeFace names its points differently and has no mouth corners: still scored.
    blaze = _face([(38, 52), (74, 52), (56, 72), (56, 92)],
                  ("left_eye", "right_eye", "nose", "mouth_center"))
    assert frontal_score(blaze) > 0.95
    # Without eye/nose points there is no evidence: neutral.
    assert frontal_score(_face([(1, 2), (3, 4)], ("a", "b"))) == 0.5


def test_quality_is_low_when_any_part_is_bad():
    crop = read(PEOPLE / "obama" / "obama_1.jpg")[100:400, 300:600]
    crop = cv2.resize(crop, (112, 112))
    good = _face([(38, 52), (74, 52), (56, 72), (42, 92), (71, 92)], FIVE)
    profile = _face([(38, 52), (74, 52), (95, 72), (60, 92), (90, 92)], FIVE)
    assert quality_score(profile, crop) == 0.0
    assert quality_score(good, crop) > 0.5
    flat = np.full((112, 112, 3), 128, np.uint8)
    assert quality_score(good, flat) == 0.0  # no detail at all
