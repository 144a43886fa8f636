"""Frame sources: Pi camera (picamera2), OpenCV cameras and streams, video files, image folders.

``open_source(spec)`` picks one from a string; every source yields ``Frame`` objects from
``read()`` until it returns None (a file or folder has ended; live sources never end on their
own). Live sources (cameras, streams) reopen themselves with backoff inside ``read()`` so a
camera unplugged and plugged back, or a stream that drops, resumes without the caller's help.

Threading: ``read()`` runs on one capture thread; ``close()`` may come from any other thread and
makes a ``read()`` that is waiting to reconnect return None promptly.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .align import to_bgr

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# Suffixes sent to the image reader rather than the video decoder (single-image specs).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm",
                  ".pbm", ".pnm", ".jp2", ".exr", ".hdr", ".pic", ".sr", ".ras", ".avif"}
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0  # a camera that comes back is picked up within this long
STREAM_TIMEOUT_MS = 5000  # FFMPEG's own default waits ~30 s on a dead stream


class SourceError(ValueError):
    """A source that cannot be opened; the message is one line, fit for the user."""


@dataclass
class Frame:
    image: np.ndarray  # H x W x 3 BGR uint8
    t: float  # time.monotonic() when the frame was captured
    index: int  # 0, 1, 2, ... per source (keeps counting across loops and reconnects)
    source: str  # the source's name


class FrameSource:
    """The interface. Subclasses implement ``_next_image()`` and ``_release()``."""

    name = "source"
    live = False  # True for cameras and streams (they reconnect; files and folders end)

    def __init__(self, name: str) -> None:
        self.name = name
        self._index = 0
        self._closed = threading.Event()
        # Held around every use of the underlying capture: a VideoCapture released by close()
        # while another thread is inside read() can crash the process.
        self._lock = threading.Lock()
        self._released = False

    def read(self) -> Frame | None:
        """The next frame, or None when the source has ended for good (or was closed)."""
        if self._closed.is_set():
            return None
        with self._lock:
            try:
                image = None if self._released else self._next_image()
            finally:
                if self._closed.is_set():
                    self._release_once()
        if image is None:
            return None
        frame = Frame(image=image, t=time.monotonic(), index=self._index, source=self.name)
        self._index += 1
        return frame

    def close(self) -> None:
        """Stop the source; safe from any thread and more than once."""
        self._closed.set()
        # If read() holds the lock it releases the capture itself when it sees _closed.
        if self._lock.acquire(blocking=False):
            try:
                self._release_once()
            finally:
                self._lock.release()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _release_once(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def _next_image(self) -> np.ndarray | None:
        raise NotImplementedError

    def _release(self) -> None:
        pass


class _Pacer:
    """Sleeps so that files and folders play at ``fps`` (None: as fast as they decode)."""

    def __init__(self, fps: float | None, stop: threading.Event) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._next = 0.0
        self._stop = stop

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self._next > now:
            self._stop.wait(self._next - now)
        self._next = max(now, self._next) + self.period


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
        self._pacer = _Pacer(fps, self._closed)

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
            return to_bgr(image)
        return None


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


class LiveSource(FrameSource):
    """A camera or stream: opens in the constructor, reopens with backoff when frames stop.

    Subclasses implement ``_open_device()`` (raise or return False on failure),
    ``_grab()`` (an image, or None on failure) and ``_close_device()``.
    """

    live = True

    def __init__(self, name: str, backoff: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S)
                 ) -> None:
        super().__init__(name)
        self.backoff = backoff
        self.reconnects = 0
        self._open_now = False
        self._last_error: str | None = None
        if not self._try_open():
            raise SourceError(f"cannot open {self.describe()} ({self._last_error or 'no frames'})")
        # One frame now, so a wrong device (a USB camera's metadata node, a stream path with no
        # video) is a clear error at start, not an endless reconnect loop. The frame is dropped:
        # it would be stale by the first read(), and cameras' first frames are often dark.
        if self._safe_grab() is None:
            self._release_once()
            raise SourceError(f"{self.describe()} opened but gave no frame "
                              f"({self._last_error or 'read failed'})")

    def describe(self) -> str:
        return self.name

    def _try_open(self) -> bool:
        try:
            ok = self._open_device()
        except Exception as e:  # drivers raise anything; the message is what matters here
            ok, self._last_error = False, str(e).splitlines()[0] if str(e) else type(e).__name__
        self._open_now = bool(ok)
        if not self._open_now:
            self._safe_close_device()
        return self._open_now

    def _safe_close_device(self) -> None:
        try:
            self._close_device()
        except Exception as e:  # closing a vanished device may fail; nothing left to do
            log.debug("closing %s: %s", self.name, e)

    def _next_image(self) -> np.ndarray | None:
        image = self._safe_grab() if self._open_now else None
        if image is not None:
            return image
        return self._reconnect()

    def _safe_grab(self) -> np.ndarray | None:
        try:
            image = self._grab()
        except Exception as e:  # a vanished device raises from inside the driver
            self._last_error = str(e).splitlines()[0] if str(e) else type(e).__name__
            return None
        return None if image is None else to_bgr(image)

    def _reconnect(self) -> np.ndarray | None:
        lost = time.monotonic()
        log.warning("%s: no frames (%s); reconnecting with backoff %.1f-%.1f s", self.describe(),
                    self._last_error or "read failed", *self.backoff)
        self._safe_close_device()
        self._open_now = False
        delay = self.backoff[0]
        while not self._closed.wait(delay):
            if self._try_open():
                image = self._safe_grab()
                if image is not None:
                    self.reconnects += 1
                    log.info("%s: back after %.1f s", self.describe(), time.monotonic() - lost)
                    return image
                self._safe_close_device()
                self._open_now = False
            delay = min(delay * 2, self.backoff[1])
        return None  # closed while waiting

    def _release(self) -> None:
        if self._open_now:
            self._safe_close_device()
            self._open_now = False

    def _open_device(self) -> bool:
        raise NotImplementedError

    def _grab(self) -> np.ndarray | None:
        raise NotImplementedError

    def _close_device(self) -> None:
        raise NotImplementedError


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
            self._cap = self._factory(self.target, self.api, params)
        else:
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


class Picamera2Source(LiveSource):
    """A Raspberry Pi camera through picamera2 (libcamera); ``cv2.VideoCapture`` cannot see it.

    The main stream is "RGB888", which picamera2 documents as [B, G, R] bytes per pixel:
    OpenCV's order, so no conversion is needed.
    """

    FORMAT = "RGB888"

    def __init__(self, camera_num: int = 0, width: int | None = None, height: int | None = None,
                 fps: float | None = None,
                 backoff: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S)) -> None:
        try:
            # Lazy: picamera2 exists only on Raspberry Pi OS (apt install python3-picamera2).
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError("picamera2 is not installed (on Raspberry Pi OS: sudo apt install "
                              "python3-picamera2, and create the venv with "
                              "--system-site-packages)") from None
        self._cls = Picamera2
        self.camera_num = camera_num
        self.size = (int(width or 640), int(height or 480))
        self.fps = fps
        self._cam: Any = None
        super().__init__(f"picamera2:{camera_num}", backoff)

    def _open_device(self) -> bool:
        try:
            self._cam = self._cls(self.camera_num)
        except IndexError:  # picamera2's way of saying "no such camera"
            raise RuntimeError(f"no Pi camera number {self.camera_num} detected (check the "
                               "ribbon cable; list them with: rpicam-hello --list-cameras)"
                               ) from None
        controls = {"FrameRate": float(self.fps)} if self.fps else {}
        config = self._cam.create_video_configuration(
            main={"size": self.size, "format": self.FORMAT}, controls=controls)
        self._cam.configure(config)
        self._cam.start()
        return True

    def _grab(self) -> np.ndarray | None:
        return self._cam.capture_array("main")

    def _close_device(self) -> None:
        if self._cam is not None:
            cam, self._cam = self._cam, None
            try:
                cam.stop()
            finally:
                cam.close()


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


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _redact(url: str) -> str:
    """A stream URL without its password, for names and logs."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)
