"""What every frame source is: ``Frame``, ``FrameSource``, the reconnecting ``LiveSource``.

Every source yields ``Frame`` objects from ``read()`` until it returns None (a file or folder has
ended; live sources never end on their own). Live sources (cameras, streams) reopen themselves
with backoff inside ``read()`` so a camera unplugged and plugged back, or a stream that drops,
resumes without the caller's help.

Threading: ``read()`` runs on one capture thread; ``close()`` may come from any other thread and
makes a ``read()`` that is waiting to reconnect return None promptly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..align import to_bgr

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0  # a camera that comes back is picked up within this long


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
