"""OpenCV sources: video files, camera indices, /dev/videoN (V4L2) and stream URLs (FFMPEG)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..align import to_bgr
from ..compat import opencv_errors_only
from .base import BACKOFF_MAX_S, BACKOFF_MIN_S, FrameSource, LiveSource, SourceError, _Pacer

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
STREAM_TIMEOUT_MS = 5000  # FFMPEG's own default waits ~30 s on a dead stream
# FFmpeg's av_log level for OpenCV's FFMPEG backend (AV_LOG_QUIET): read from the environment
# once, when the backend first opens something in this process.
FFMPEG_QUIET = "-8"

log = logging.getLogger(__name__)


@contextmanager
def quiet_open() -> Iterator[None]:
    """Opening a capture without OpenCV's and FFmpeg's own stderr lines ("[ERROR:0@0.017] ...
    Camera index out of range", "[tcp @ 0x...] Connection refused", "moov atom not found"): the
    SourceError says what failed. With DEBUG logging on they are left on stderr."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_QUIET)
    with opencv_errors_only(silent=True):
        yield


class VideoFileSource(FrameSource):
    """A video file through OpenCV (FFMPEG); the end of the file ends the source unless ``loop``."""

    def __init__(self, path: str | Path, fps: float | None = None, loop: bool = False,
                 capture_factory: Callable[..., Any] = cv2.VideoCapture) -> None:
        super().__init__(str(path))
        self.path = str(path)
        self.loop = loop
        self._factory = capture_factory
        self._cap = self._open()
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.file_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._pacer = _Pacer(fps, self._closed)

    def _open(self) -> Any:
        with quiet_open():
            cap = self._factory(self.path)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot decode video file {self.path} (not a video OpenCV reads?)")
        return cap

    def _next_image(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if not ok and self.loop:
            # Reopening is more reliable than seeking to frame 0 across codecs and containers.
            self._cap.release()
            self._cap = self._open()
            ok, image = self._cap.read()
        if not ok or image is None:
            return None
        self._pacer.wait()
        return to_bgr(image)

    def _release(self) -> None:
        self._cap.release()


class OpenCVCameraSource(LiveSource):
    """A camera index, a /dev/videoN device (V4L2) or a network stream URL (FFMPEG)."""

    def __init__(self, target: int | str, api: int = cv2.CAP_ANY, width: int | None = None,
                 height: int | None = None, fps: float | None = None,
                 capture_factory: Callable[..., Any] = cv2.VideoCapture,
                 backoff: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S)) -> None:
        self.target, self.api = target, api
        self.width, self.height, self.fps = width, height, fps
        self._factory = capture_factory
        self._cap: Any = None
        super().__init__(_redact(target) if isinstance(target, str) else str(target), backoff)

    def describe(self) -> str:
        return f"camera {self.target}" if isinstance(self.target, int) else self.name

    def _open_device(self) -> bool:
        if self.api == cv2.CAP_FFMPEG:
            # Bounded open/read waits so a dead stream is noticed in seconds (OpenCV >= 4.6).
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            with quiet_open():
                self._cap = self._factory(self.target, self.api, params)
        else:
            with quiet_open():
                self._cap = self._factory(self.target, self.api)
        if not self._cap.isOpened():
            self._last_error = "the device or stream did not open"
            return False
        # Newest frame, not a backlog: where the backend supports it (V4L2, some FFMPEG builds).
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(self.width))
        if self.height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(self.height))
        if self.fps:
            self._cap.set(cv2.CAP_PROP_FPS, float(self.fps))
        return True

    def _grab(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            self._last_error = "read failed"
            return None
        return image

    def _close_device(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _redact(url: str) -> str:
    """A stream URL without its password, for names and logs."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)
