"""The live view: each camera's latest picture, who is in view, the recent events, and the
figures for the status page and /metrics.

The pipeline's worker calls ``LiveHub.on_frame`` after every frame: it keeps a reference to the
frame and a copy of the few track fields the overlay needs (microseconds; nothing is drawn or
encoded there). Drawing and JPEG encoding happen in the web server's threads, only while a
stream or snapshot asks, at most ``live_fps`` times a second per camera, and a picture is
encoded once however many browsers watch it. Importing this module costs no web stack: ``run``
builds the hub at once and starts the server beside the camera.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import cv2

from ..events import EventSink
from ..preview import draw_overlay

RECENT_EVENTS = 50
BOUNDARY = "frame"


@dataclass
class _Latest:
    image: Any  # BGR picture (not copied: sources hand out a new array per frame)
    tracks: list[SimpleNamespace]
    seq: int
    jpeg: bytes | None = None  # annotated JPEG of ``seq`` (encoded on demand)
    jpeg_seq: int = -1


def encode_jpeg(image: Any, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a picture of shape {image.shape} as JPEG")
    return buf.tobytes()


def _track_view(t: Any) -> SimpleNamespace:
    return SimpleNamespace(box=tuple(float(v) for v in t.box), name=t.name,
                           score=float(t.score), id=int(t.id),
                           embeddings=int(getattr(t, "embeddings", 0)))


class LiveHub(EventSink):
    """What the web server shows of a running pipeline. Also an event sink: the pipeline emits
    into it, and it keeps the recent events and counts them by kind."""

    def __init__(self, live_fps: float = 5.0) -> None:
        self.live_fps = float(live_fps)
        self.pipeline: Any = None
        self.cameras: list[str] = []
        self.events_by_kind: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._latest: dict[str, _Latest] = {}
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self.closed = threading.Event()
        self.watchers = 0
        self.encoded = 0  # JPEGs encoded (the benchmark's count)

    # --- the pipeline side -------------------------------------------------------------------
    def attach(self, pipeline: Any) -> Any:
        """Show ``pipeline`` (a rebuilt one after a reload replaces the last); returns it."""
        previous = getattr(pipeline, "on_frame", None)

        def on_frame(report: Any) -> None:
            self.on_frame(report)
            if previous is not None:
                previous(report)

        pipeline.on_frame = on_frame
        if self not in pipeline.sinks:
            pipeline.sinks.append(self)
        self.pipeline = pipeline
        self.cameras = [c.name for c in getattr(pipeline, "cameras", [])]
        return pipeline

    def on_frame(self, report: Any) -> None:
        frame = report.frame
        name = str(getattr(frame, "source", None) or (self.cameras or ["camera"])[0])
        tracks = [_track_view(t) for t in report.tracks]
        with self._lock:
            old = self._latest.get(name)
            self._latest[name] = _Latest(frame.image, tracks, (old.seq + 1) if old else 0,
                                         old.jpeg if old else None,
                                         old.jpeg_seq if old else -1)

    def emit(self, event: dict) -> None:
        self.events_by_kind[str(event.get("event"))] += 1
        self.recent.appendleft(dict(event))

    def close(self) -> None:
        """The pipeline closes its sinks; the hub lives on across reloads (see ``shutdown``)."""

    def shutdown(self) -> None:
        self.closed.set()

    # --- the web side ------------------------------------------------------------------------
    def camera_names(self) -> list[str]:
        with self._lock:
            seen = list(self._latest)
        return list(dict.fromkeys([*self.cameras, *seen]))

    def in_view(self, camera: str) -> list[dict[str, Any]]:
        with self._lock:
            latest = self._latest.get(camera)
        if latest is None:
            return []
        return [{"track_id": t.id, "name": t.name, "score": round(t.score, 4) if t.name else None,
                 "box": [round(v) for v in t.box]} for t in latest.tracks]

    def jpeg(self, camera: str, annotated: bool = True) -> bytes | None:
        """The latest picture of ``camera`` as JPEG (None before its first frame); an
        annotated one is encoded once per new frame."""
        with self._lock:
            latest = self._latest.get(camera)
        if latest is None:
            return None
        if not annotated:
            return encode_jpeg(latest.image, 90)
        with self._encode_lock:
            if latest.jpeg_seq != latest.seq or latest.jpeg is None:
                latest.jpeg = encode_jpeg(draw_overlay(latest.image, latest.tracks))
                latest.jpeg_seq = latest.seq
                self.encoded += 1
            return latest.jpeg

    def latest_seq(self, camera: str) -> int:
        with self._lock:
            latest = self._latest.get(camera)
        return -1 if latest is None else latest.seq

    async def mjpeg(self, camera: str) -> AsyncIterator[bytes]:
        """multipart/x-mixed-replace parts: a new JPEG at most ``live_fps`` times a second,
        only when the camera has a new frame; ends when the server shuts down."""
        from starlette.concurrency import run_in_threadpool  # the hub itself needs no web stack

        period = 1.0 / self.live_fps
        sent = -2
        self.watchers += 1
        try:
            while not self.closed.is_set():
                t0 = time.monotonic()
                seq = self.latest_seq(camera)
                if seq != sent:
                    data = await run_in_threadpool(self.jpeg, camera)
                    if data is not None:
                        sent = seq
                        yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                               f"Content-Length: {len(data)}\r\n\r\n").encode() + data + b"\r\n"
                await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))
        finally:
            self.watchers -= 1

    def stats(self) -> Any:
        p = self.pipeline
        return p.stats() if p is not None and hasattr(p, "stats") else None
