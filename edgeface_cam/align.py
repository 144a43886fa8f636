"""The one truth of preprocessing: 5-point template, similarity fit, warp, pixel normalisation.

Training, evaluation, export and the device all import this module; change it here only.
numpy + OpenCV, nothing else (runs on a Pi with numpy 1.24+ or 2.x and OpenCV 4.x or 5.x).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

CROP_SIZE = 112
EMBEDDING_SIZE = 512

# The standard ArcFace 112x112 template (pixels), in image terms: the eye on the image's left first.
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye (subject's right)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float32,
)
POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# Points a detector may give instead of the five (BlazeFace gives the mouth centre only).
EXTRA_POINTS = {"mouth_center": (TEMPLATE[3] + TEMPLATE[4]) / 2}

# Pixel normalisation of the model input: RGB, (x / 255 - 0.5) / 0.5, i.e. [-1, 1].
PIXEL_MEAN = 127.5
PIXEL_STD = 127.5


def template_points(names: Sequence[str] = POINT_NAMES, size: int = CROP_SIZE) -> np.ndarray:
    """Template coordinates of the named points, scaled to a ``size`` x ``size`` crop."""
    pts = []
    for n in names:
        if n in POINT_NAMES:
            pts.append(TEMPLATE[POINT_NAMES.index(n)])
        elif n in EXTRA_POINTS:
            pts.append(EXTRA_POINTS[n])
        else:
            raise ValueError(f"unknown landmark {n!r}; known: {POINT_NAMES + tuple(EXTRA_POINTS)}")
    return np.asarray(pts, dtype=np.float32) * (size / CROP_SIZE)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` onto ``dst``; 2x3 float.

    Written out rather than cv2.estimateAffinePartial2D because that one is RANSAC/LMEDS-based
    (not the exact least-squares fit the ArcFace-family models were trained with) and its
    behaviour differs across OpenCV versions.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need >= 2 matching point pairs, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide)")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def alignment_matrix(landmarks: np.ndarray, names: Sequence[str] = POINT_NAMES,
                     size: int = CROP_SIZE) -> np.ndarray:
    """2x3 matrix taking image coordinates to the aligned ``size`` crop."""
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 2)
    if len(landmarks) != len(names):
        raise ValueError(f"got {len(landmarks)} landmarks for {len(names)} names")
    return estimate_similarity(landmarks, template_points(names, size))


def align_face(image: np.ndarray, landmarks: np.ndarray, names: Sequence[str] = POINT_NAMES,
               size: int = CROP_SIZE) -> np.ndarray:
    """Warp ``image`` (H x W x 3 uint8, any channel order) to the aligned ``size`` x ``size`` crop.

    Borders are replicated: tight crops (and faces cut by the frame) must not get black wedges
    the model never saw in training.
    """
    m = alignment_matrix(landmarks, names, size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """BGR, BGRA or greyscale uint8 -> 3-channel BGR uint8 (the device keeps BGR until
    ``normalize``)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"unsupported image shape {image.shape}")


def normalize(crops_bgr: np.ndarray, layout: str = "NHWC") -> np.ndarray:
    """Aligned BGR uint8 crop(s) -> float32 model input in [-1, 1], RGB, batch first.

    ``layout`` is the model's input layout ("NHWC" for LiteRT exports, "NCHW" for torch).
    """
    x = np.asarray(crops_bgr)
    if x.ndim == 3:
        x = x[None]
    x = (x[..., ::-1].astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    elif layout != "NHWC":
        raise ValueError(f"layout must be NHWC or NCHW, got {layout!r}")
    return np.ascontiguousarray(x)


def denormalize(x: np.ndarray, layout: str = "NHWC") -> np.ndarray:
    """Inverse of ``normalize``: model input -> BGR uint8 crops."""
    x = np.asarray(x, dtype=np.float32)
    if layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    img = np.clip(np.rint(x * PIXEL_STD + PIXEL_MEAN), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[..., ::-1])
