"""A Raspberry Pi camera through picamera2 (imported when one is opened: Pi OS only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import BACKOFF_MAX_S, BACKOFF_MIN_S, LiveSource, SourceError


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
