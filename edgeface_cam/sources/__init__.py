"""Frame sources: Pi camera (picamera2), OpenCV cameras and streams, video files, image folders.

``open_source(spec)`` (``factory``) picks one from a string; ``base`` holds ``Frame``, the
``FrameSource`` interface and the reconnecting ``LiveSource``; one module per kind of source.
picamera2 is imported only when a Pi camera is opened.
"""

from .base import BACKOFF_MAX_S, BACKOFF_MIN_S, Frame, FrameSource, LiveSource, SourceError
from .factory import open_source
from .images import IMAGE_SUFFIXES, ImageFolderSource
from .opencv import STREAM_TIMEOUT_MS, URL_SCHEMES, OpenCVCameraSource, VideoFileSource, _redact
from .picamera2 import Picamera2Source

__all__ = [
    "BACKOFF_MAX_S", "BACKOFF_MIN_S", "IMAGE_SUFFIXES", "STREAM_TIMEOUT_MS", "URL_SCHEMES",
    "Frame", "FrameSource", "ImageFolderSource", "LiveSource", "OpenCVCameraSource",
    "Picamera2Source", "SourceError", "VideoFileSource", "_redact", "open_source",
]
