"""The one preprocessing truth: template, similarity fit, warp and normalisation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeface_cam.align import (
    TEMPLATE,
    align_face,
    alignment_matrix,
    denormalize,
    estimate_similarity,
    normalize,
    template_points,
    to_bgr,
)
from tests.conftest import FIXTURES, PEOPLE

pytestmark = pytest.mark.device

# The ArcFace template as published (REFERENCE.md), typed in here, not read from the code.
ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [41.5493, 92.3655], [70.7299, 92.2041]])


def test_template_is_the_published_arcface_template() -> None:
    np.testing.assert_allclose(TEMPLATE, ARCFACE, atol=1e-4)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize("angle,scale", [(0, 1), (17, 2.5), (-40, 0.7), (170, 3.1)])
def test_similarity_fit_recovers_a_known_transform(angle: float, scale: float) -> None:
    m = _similarity(angle, scale, 123.0, -45.0)
    src = np.random.default_rng(0).uniform(0, 200, (5, 2))
    np.testing.assert_allclose(estimate_similarity(src, _apply(m, src)), m, atol=1e-9)


def _dot_centroids(img: np.ndarray, bgr: tuple[int, int, int]) -> np.ndarray:
    mask = np.all(np.abs(img.astype(int) - bgr) < 40, axis=2)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, f"no {bgr} pixels in the crop"
    return np.array([xs.mean(), ys.mean()])


def test_warp_puts_the_eyes_of_a_real_photo_on_the_template() -> None:
    """Mark the eyes of a real photo with coloured dots at known points; warp; find the dots."""
    img = cv2.imread(str(PEOPLE / "obama" / "obama_1.jpg"))
    # Known landmarks: the template put on this face (eyes near x 437/553, y 206) by a similarity
    # we choose (12 degrees, x3.28), so an exact warp must bring them back onto the template.
    m = _similarity(12, 3.28, 0, 0)
    m[:, 2] = np.array([495.0, 262.0]) - m[:, :2] @ ARCFACE.mean(0)
    pts = _apply(m, ARCFACE).astype(np.float32)
    scale = 3.28
    r = 3 * scale  # a dot about 6 px wide in the crop
    colours = [(255, 0, 255), (0, 255, 255)]
    for (x, y), c in zip(pts[:2], colours, strict=True):  # sub-pixel centres (shift=4)
        cv2.circle(img, (round(x * 16), round(y * 16)), round(r * 16), c, -1,
                   lineType=cv2.LINE_AA, shift=4)
    crop = align_face(img, pts)
    assert crop.shape == (112, 112, 3)
    for target, c in zip(ARCFACE[:2], colours, strict=True):
        found = _dot_centroids(crop, c)
        assert np.linalg.norm(found - target) < 1.0, (found, target)


def test_four_points_with_mouth_centre_align_like_five() -> None:
    m = _similarity(8, 2.0, 300, 150)
    inv = cv2.invertAffineTransform(m)
    five = _apply(inv, ARCFACE)  # a face whose points match the template exactly
    four = np.vstack([five[:3], five[3:].mean(0)])
    m5 = alignment_matrix(five)
    m4 = alignment_matrix(four, ("left_eye", "right_eye", "nose", "mouth_center"))
    np.testing.assert_allclose(m4, m5, atol=1e-3)  # the template is float32
    np.testing.assert_allclose(m5, m, atol=1e-3)


def test_template_scales_with_crop_size() -> None:
    np.testing.assert_allclose(template_points(size=224), ARCFACE * 2, atol=1e-4)


def test_border_is_replicated_not_black() -> None:
    img = cv2.imread(str(FIXTURES / "aligned" / "tom_hanks_aligned_112.png"))
    small = cv2.resize(img, (56, 56))
    crop = align_face(small, ARCFACE / 2 * 0.5 + 14)  # the face smaller still: crop sees outside
    assert crop.min(axis=2).max() > 0
    assert (crop.sum(axis=2) == 0).mean() < 0.01


def test_normalize_is_rgb_minus_one_to_one_and_round_trips() -> None:
    img = cv2.imread(str(FIXTURES / "aligned" / "tom_hanks_aligned_112.png"))
    x = normalize(img)
    assert x.shape == (1, 112, 112, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_array_equal(denormalize(x)[0], img)
    nchw = normalize(img, "NCHW")
    assert nchw.shape == (1, 3, 112, 112)
    np.testing.assert_array_equal(denormalize(nchw, "NCHW")[0], img)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 2] = 255  # pure red in OpenCV's BGR order
    np.testing.assert_allclose(normalize(red)[0, 0, 0], [1.0, -1.0, -1.0])
    with pytest.raises(ValueError, match="layout"):
        normalize(img, "CHW")


def test_to_bgr_handles_grey_and_alpha() -> None:
    rgba = cv2.imread(str(FIXTURES / "edge" / "rgba_32bit.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape[2] == 4
    assert to_bgr(rgba).shape == (*rgba.shape[:2], 3)
    grey = cv2.cvtColor(to_bgr(rgba), cv2.COLOR_BGR2GRAY)
    assert to_bgr(grey).shape == (*rgba.shape[:2], 3)


def test_degenerate_landmarks_raise() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        estimate_similarity(np.zeros((5, 2)), ARCFACE)
