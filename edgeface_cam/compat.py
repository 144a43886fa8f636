"""Calls whose spelling differs across the library versions the device supports.

Pi OS Bookworm pins numpy 1.24, with which pip picks opencv-python 4.11; PyPI's current wheels are
numpy 2.x with OpenCV 5.x. Everything version-dependent goes through here, so the rest of the code
reads the same on all of them (CI runs the device tests on each stack: scripts/test-matrix.sh).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2


def _opencv_logging() -> Any | None:
    """``cv2.utils.logging``: present in OpenCV 5.x and some 4.x builds, absent in 4.11's wheel."""
    return getattr(getattr(cv2, "utils", None), "logging", None)


def quiet_opencv() -> None:
    """Keep OpenCV's own C++ warnings (the DNN engine's notices, FFMPEG's "[ERROR:...]" lines) off
    stderr: a user can act on none of them. A no-op where the build has no logging API."""
    api = _opencv_logging()
    if api is not None:
        api.setLogLevel(api.LOG_LEVEL_ERROR)


@contextmanager
def opencv_errors_only(silent: bool = False) -> Iterator[None]:
    """Silence OpenCV's warnings (``silent``: its error lines too) for one call, then restore
    the previous level."""
    api = _opencv_logging()
    if api is None:
        yield
        return
    level = api.getLogLevel()
    api.setLogLevel(api.LOG_LEVEL_SILENT if silent else api.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        api.setLogLevel(level)
