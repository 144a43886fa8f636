"""``open_source(spec)``: the source a spec string names."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2

from .base import FrameSource, SourceError
from .images import IMAGE_SUFFIXES, ImageFolderSource
from .opencv import URL_SCHEMES, OpenCVCameraSource, VideoFileSource, _redact
from .picamera2 import Picamera2Source


def open_source(spec: str, width: int | None = None, height: int | None = None,
                fps: float | None = None, loop: bool = False) -> FrameSource:
    """A source from its spec: "picamera2" (or "picamera2:1"), a camera index ("0"),
    "/dev/videoN", an rtsp/http(s)/... URL, a video file, an image folder or a single image.

    ``width``/``height``/``fps`` are requests to cameras (the driver may pick the nearest mode);
    for files and folders ``fps`` paces playback (None: as fast as frames decode) and ``loop``
    restarts them at the end. Raises ``SourceError`` with a one-line message.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceError("empty source: give a camera index, /dev/videoN, picamera2, URL or path")
    m = re.fullmatch(r"picamera2(?::(\d+))?", spec, flags=re.IGNORECASE)
    if m:
        return Picamera2Source(int(m.group(1) or 0), width, height, fps)
    if spec.isdigit():
        return OpenCVCameraSource(int(spec), cv2.CAP_ANY, width, height, fps)
    if spec.lower().startswith(URL_SCHEMES):
        return OpenCVCameraSource(spec, cv2.CAP_FFMPEG, width, height, fps)
    if spec.startswith("/dev/"):
        if not os.path.exists(spec):
            raise SourceError(f"no such camera device: {spec} (is it plugged in? "
                              "try: v4l2-ctl --list-devices)")
        return OpenCVCameraSource(spec, cv2.CAP_V4L2, width, height, fps)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, fps=fps, loop=loop)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFolderSource(path, fps=fps, loop=loop)
        return VideoFileSource(path, fps=fps, loop=loop)
    if "://" in spec:
        raise SourceError(f"unsupported URL scheme in {_redact(spec)!r}; "
                          f"use one of {', '.join(s[:-3] for s in URL_SCHEMES)}")
    raise SourceError(f"no such file, folder or camera: {spec!r} "
                      "(give a path, a camera index like 0, /dev/videoN, picamera2 or a URL)")
