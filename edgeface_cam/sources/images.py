"""Still images as a source: a folder (natural sort order) or a single image file."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..align import to_bgr
from .base import Frame, FrameSource, SourceError, _Pacer

log = logging.getLogger(__name__)

# Suffixes sent to the image reader rather than the video decoder (single-image specs).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm",
                  ".pbm", ".pnm", ".jp2", ".exr", ".hdr", ".pic", ".sr", ".ras", ".avif"}


class ImageFolderSource(FrameSource):
    """Still images from a folder (natural sort order: img2 before img10) or a single file."""

    def __init__(self, path: str | Path, fps: float | None = None, loop: bool = False) -> None:
        path = Path(path)
        super().__init__(str(path))
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.is_file()), key=_natural_key)
        else:
            files = [path]
        self.paths: list[Path] = []
        for p in files:
            # haveImageReader checks the file's signature, not its name.
            if cv2.haveImageReader(str(p)):
                self.paths.append(p)
            else:
                log.warning("skipping %s: not an image OpenCV can read", p)
        if not self.paths:
            raise SourceError(f"no readable images in {path}")
        self.loop = loop
        self._pos = 0
        self._file: str | None = None
        self._pacer = _Pacer(fps, self._closed)

    def read(self) -> Frame | None:
        """The next image as a frame; ``frame.file`` is its path (events and sightings carry
        it). ``frame.scene_ends``: the next frame is another image, so the pipeline ends every
        track here (no track spans two images); one image looped stands for a camera."""
        frame = super().read()
        if frame is not None:
            frame.file = self._file  # type: ignore[attr-defined]
            frame.scene_ends = len(self.paths) > 1  # type: ignore[attr-defined]
        return frame

    def _next_image(self) -> np.ndarray | None:
        failures = 0
        while failures < len(self.paths):  # with loop=True, stop if no image decodes at all
            if self._pos >= len(self.paths):
                if not self.loop:
                    return None
                self._pos = 0
            p = self.paths[self._pos]
            self._pos += 1
            image = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if image is None or image.dtype != np.uint8:
                log.warning("skipping %s: cannot decode it as an 8-bit image", p)
                failures += 1
                continue
            self._pacer.wait()
            self._file = str(p)
            return to_bgr(image)
        return None


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]
