"""Collecting good faces for enrolment: from photos, folders, a camera or a clip.

A photo must hold one dominant face; camera frames must also pass the quality gate, be a few
frames apart and show the same person as the frames before. Nothing is written here: the
samples go to ``Gallery.enroll`` in one transaction, and the CLI reports.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .app import App, UserError
from .gallery import Gallery
from .recognize import FaceResult
from .sources import IMAGE_SUFFIXES, FrameSource, ImageFolderSource, open_source

# A second face at least this fraction of the largest face's size (shorter box side) makes a photo
# ambiguous for enrolment: we cannot tell whom the user means.
SIMILAR_SIZE = 0.6
# Camera enrolment keeps at most one frame in this many, so the shots differ a little.
FRAME_SPACING = 5
COUNTDOWN_S = 3


def read_image(path: str | Path) -> np.ndarray:
    """An image file as BGR uint8. IMREAD_COLOR converts greyscale and RGBA to BGR and applies
    the EXIF orientation (phone photos), so every caller sees the same 3-channel picture."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if not p.is_file():
        raise UserError(f"{path}: not a file")
    try:
        data = np.fromfile(p, np.uint8)  # imdecode, unlike imread, takes non-ASCII paths
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: not an image OpenCV can decode")
    return image


def expand_images(paths: list[str]) -> list[Path]:
    """Files as given; folders -> the images in them (sorted, not recursive)."""
    out: list[Path] = []
    for text in paths:
        p = Path(text).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{text}: no images in this folder "
                                f"({', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...)")
            out.extend(found)
        elif not p.exists():
            raise UserError(f"{text}: no such file or folder")
        else:
            out.append(p)
    return out


def dominant_face(results: list[FaceResult]) -> FaceResult | None:
    """The one face a photo is about: the largest, unless another is of similar size."""
    if not results:
        return None
    if len(results) > 1 and results[1].face.size >= SIMILAR_SIZE * results[0].face.size:
        return None
    return results[0]


def pick_face(results: list[FaceResult], label: str) -> FaceResult:
    face = dominant_face(results)
    if face is None:
        if not results:
            raise UserError(f"{label}: no face found (need a clear, frontal face of at least the "
                            "detector's min_face pixels)")
        raise UserError(f"{label}: {len(results)} faces of similar size; crop the photo to the "
                        "one person")
    return face


@dataclass
class Sample:
    """One enrolment image: the chosen face (embedded) and where it came from."""

    result: FaceResult
    source: str


def samples_from_images(app: App, paths: list[str] | list[Path]) -> list[Sample]:
    """Check every image before anything is written: a bad one stops the whole enrolment."""
    # Decode all first: a missing or broken file is reported before the model is even loaded.
    images = [(str(path), read_image(path)) for path in expand_images([str(p) for p in paths])]
    return [Sample(pick_face(app.recognizer.analyze(image), path), path)
            for path, image in images]


def samples_from_source(app: App, spec: str, count: int, min_quality: float, timeout: float,
                        say: Callable[[str], None] = lambda text: None) -> list[Sample]:
    """Up to ``count`` good frames from a camera, a file or a folder: one dominant face, quality
    >= ``min_quality``, the same person as the frames before (someone walking past the camera
    is not enrolled), video frames a few apart. A countdown first for a live camera, told
    through ``say``."""
    cam = app.cfg.camera
    source = open_source(spec, cam.width, cam.height, cam.fps)
    # Consecutive video frames are near duplicates; a folder's photos are not.
    spacing = 1 if isinstance(source, ImageFolderSource) else FRAME_SPACING
    samples: list[Sample] = []
    last = -spacing
    try:
        if source.live:
            _countdown(source, say)
        deadline = time.monotonic() + timeout
        # disable=None: no bar when stderr is not a terminal (logs stay clean).
        with tqdm(total=count, desc="good frames", unit="frame", file=sys.stderr,
                  leave=False, disable=None) as bar:
            while len(samples) < count and time.monotonic() < deadline:
                frame = source.read()
                if frame is None:
                    break
                if frame.index - last < spacing:
                    continue
                face = dominant_face(app.recognizer.analyze(frame.image, embed=False))
                if face is None or face.quality < min_quality:
                    bar.set_postfix_str("no single face" if face is None
                                        else f"quality {face.quality:.2f} < {min_quality}")
                    continue
                face.embedding = app.embedder.embed([face.crop])[0]
                if samples and not same_person(samples, face, app.cfg.recognizer.threshold):
                    bar.set_postfix_str("a different face: skipped")
                    continue
                samples.append(Sample(face, f"{source.name}#{frame.index}"))
                last = frame.index
                bar.set_postfix_str(f"quality {face.quality:.2f}")
                bar.update(1)
    finally:
        source.close()
    if len(samples) < count:
        raise UserError(f"only {len(samples)} of {count} good frames from {spec} "
                        f"(one clear face, quality >= {min_quality}); nothing written: face the "
                        "camera in good light, or lower --count / --min-quality")
    return samples


def same_person(samples: list[Sample], face: FaceResult, threshold: float) -> bool:
    """The face matches the mean of the samples so far at the recognition threshold."""
    mean = np.mean([s.result.embedding for s in samples], axis=0)
    return float(face.embedding @ mean) / max(float(np.linalg.norm(mean)), 1e-12) >= threshold


def _countdown(source: FrameSource, say: Callable[[str], None]) -> None:
    """Count down while reading (and dropping) frames, so the camera's buffer is fresh when
    collection starts."""
    for n in range(COUNTDOWN_S, 0, -1):
        say(f"look at the camera: {n}...")
        end = time.monotonic() + 1.0
        while time.monotonic() < end and source.read() is not None:
            pass


def enroll_samples(gallery: Gallery, name: str, samples: list[Sample],
                   notes: str | None = None) -> int:
    return gallery.enroll(name, np.stack([s.result.embedding for s in samples]).astype(np.float32),
                          crops=[s.result.crop for s in samples],
                          sources=[s.source for s in samples],
                          qualities=[float(s.result.quality) for s in samples], notes=notes)
