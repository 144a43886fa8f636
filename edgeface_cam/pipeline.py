"""The running system: a capture thread feeding a bounded queue, and a worker that detects,
aligns, tracks, embeds (only when the tracker asks), matches and emits one event per track (a
second when a stranger turns out to be enrolled).

Threads: ``run()`` starts the capture thread and does the work in the thread that called it
(the CLI's main thread). That keeps the OpenCV/Qt preview on the main thread, where GUI toolkits
want it, and keeps the gallery's SQLite connection in the thread that opened it. Sinks that talk
to the network (MQTT, webhooks) run their own threads; the pipeline only calls ``emit``.

Every stage is timed into rolling samples; ``PipelineStats`` reports median and p90.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import numpy as np

from .events.base import EventSink, make_event
from .events.snapshots import SnapshotStore, context_crop
from .recognize import Recognizer
from .shotcut import ShotCutDetector
from .track import Track, Tracker

log = logging.getLogger(__name__)

STAGES = ("capture_wait", "read", "detect", "align", "embed", "embed_face", "match", "events",
          "preview", "total", "latency")
_END = object()  # the capture thread's "source ended" marker


class SupportsGallery(Protocol):
    def match_many(self, embeddings: np.ndarray) -> list[Any]: ...
    def refresh(self) -> bool: ...


class SupportsPreview(Protocol):
    def show(self, frame: Any, tracks: list[Track], fps: float,
             timings: dict[str, float]) -> bool: ...


@dataclass
class StageTiming:
    median_ms: float
    p90_ms: float
    count: int


class StageTimer:
    """Rolling per-stage samples (seconds in, milliseconds out); safe to read from any thread."""

    def __init__(self, window: int = 4096) -> None:
        self._window = window
        self._samples: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, deque(maxlen=self._window)).append(seconds)

    def summary(self) -> dict[str, StageTiming]:
        with self._lock:
            snap = {k: np.asarray(v) for k, v in self._samples.items() if v}
        return {k: StageTiming(float(np.median(v) * 1e3), float(np.percentile(v, 90) * 1e3),
                               len(v)) for k, v in snap.items()}

    def medians_ms(self) -> dict[str, float]:
        return {k: t.median_ms for k, t in self.summary().items()}


@dataclass
class PipelineStats:
    frames: int  # frames processed
    dropped: int  # frames the capture thread dropped because the worker was busy
    fps: float  # processed frames per second, first frame received to last frame done
    wall_s: float
    first_frame_latency_s: float | None  # Pipeline() constructed -> first frame processed
    events: int
    faces: int  # face detections, summed over frames
    embeddings: int
    tracks: int
    sink_errors: int = 0
    timings: dict[str, StageTiming] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"frames {self.frames}  dropped {self.dropped}  fps {self.fps:.1f}  "
                 f"faces {self.faces}  embeddings {self.embeddings}  tracks {self.tracks}  "
                 f"events {self.events}"]
        if self.first_frame_latency_s is not None:
            lines.append(f"first frame after {self.first_frame_latency_s * 1e3:.0f} ms")
        for name in STAGES:
            t = self.timings.get(name)
            if t:
                lines.append(f"  {name:<13} median {t.median_ms:7.2f} ms  p90 {t.p90_ms:7.2f} ms"
                             f"  (n={t.count})")
        return "\n".join(lines)


@dataclass
class FrameReport:
    """What ``on_frame`` receives after each processed frame."""

    frame: Any  # sources.Frame
    tracks: list[Track]
    total_s: float


class _Unknown:
    """The match result used when there is no gallery: nobody is known."""

    name = None
    score = 0.0
    person_id = None


@dataclass(frozen=True)
class PipelineOptions:
    """How the worker runs (the tracker's knobs live in the ``Tracker`` it is given).

    ``realtime``: drop stale frames, newest wins (cameras); False processes every frame (files,
    tests, bench). ``queue_size``: 1 or 2 frames between capture and worker.
    ``max_embeds_per_frame``: caps the embedding work of one frame (None: no cap).
    ``refresh_interval``: seconds between checks for gallery changes. ``heartbeat_interval``:
    ``heartbeat()`` is called at least this often while the worker is alive, frames or not.
    """

    max_frames: int | None = None
    realtime: bool = True
    queue_size: int = 2
    max_embeds_per_frame: int | None = 2
    refresh_interval: float = 1.0
    heartbeat_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.queue_size not in (1, 2):
            raise ValueError(f"queue_size must be 1 or 2 (newest frame wins), got "
                             f"{self.queue_size}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.max_embeds_per_frame is not None and self.max_embeds_per_frame < 1:
            raise ValueError(f"max_embeds_per_frame must be >= 1 or None, got "
                             f"{self.max_embeds_per_frame}")


class Pipeline:
    """source -> capture thread -> queue -> detect, align, track, embed, match -> sinks.

    Built parts: ``source`` (a ``sources.FrameSource``: ``read() -> Frame | None``, ``close()``,
    ``name``), ``recognizer`` (detect, align, embed, quality; it applies ``min_face``),
    ``gallery`` (a ``gallery.Gallery`` or None: everyone unknown), ``sinks``, ``tracker`` (a
    ``track.Tracker``; default: its own defaults), ``cuts`` (a ``shotcut.ShotCutDetector`` that
    makes the tracker re-check who each track holds; None: off), ``preview``, ``snapshots``
    (where each event's picture goes; its path is the event's ``snapshot``), ``options``.
    ``on_frame(FrameReport)`` after every processed frame; ``heartbeat()`` for watchdog pings.
    """

    def __init__(self, source: Any, recognizer: Recognizer, gallery: SupportsGallery | None,
                 sinks: Sequence[EventSink] = (), *, tracker: Tracker | None = None,
                 cuts: ShotCutDetector | None = None, preview: SupportsPreview | None = None,
                 snapshots: SnapshotStore | None = None, options: PipelineOptions | None = None,
                 on_frame: Callable[[FrameReport], None] | None = None,
                 heartbeat: Callable[[], None] | None = None) -> None:
        self._created = time.monotonic()
        self.source = source
        self.recognizer = recognizer
        self.gallery = gallery
        self.sinks = list(sinks)
        self.tracker = tracker if tracker is not None else Tracker()
        self.cuts = cuts
        self.preview = preview
        self.snapshots = snapshots
        self.options = opts = options if options is not None else PipelineOptions()
        self.on_frame = on_frame
        self.heartbeat = heartbeat
        self.shot_cuts = 0
        self.timer = StageTimer()
        self._queue: queue.Queue = queue.Queue(maxsize=opts.queue_size)
        self._stop = threading.Event()
        self._capture: threading.Thread | None = None
        self._capture_error: BaseException | None = None
        self._running = False
        self.frames = self.dropped = self.events = self.faces = self.embeddings = 0
        self.sink_errors = 0
        self.first_frame_latency_s: float | None = None
        self._t_first: float | None = None
        self._t_last: float | None = None

    # --- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask ``run()`` to finish; safe from any thread and from signal handlers."""
        self._stop.set()

    # --- capture thread ----------------------------------------------------------------------
    def _put(self, item: Any, drop: bool = True) -> bool:
        """Queue ``item``; in realtime mode the newest frame wins. False if stopped meanwhile."""
        if self.options.realtime and drop:
            while not self._stop.is_set():
                try:
                    self._queue.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1  # only this thread writes it
                    except queue.Empty:
                        pass
            return False
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _capture_loop(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                frame = self.source.read()
                if frame is None:
                    break
                self.timer.add("read", time.monotonic() - t0)
                if not self._put(frame):
                    return
        except Exception as e:  # the worker re-raises it from run()
            self._capture_error = e
        self._put(_END, drop=False)  # never drop the last frame to make room for the marker

    # --- worker ------------------------------------------------------------------------------
    def run(self) -> PipelineStats:
        """Process frames until the source ends, ``max_frames`` is reached, the preview is closed
        or ``stop()`` is called. No pipeline thread is alive when it returns."""
        if self._running:
            raise RuntimeError("Pipeline.run() is already running")
        self._running = True
        self._capture = threading.Thread(target=self._capture_loop, name="edgeface-capture",
                                         daemon=True)
        self._capture.start()
        last_refresh, last_beat = time.monotonic(), float("-inf")
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self.heartbeat and now - last_beat >= self.options.heartbeat_interval:
                    self.heartbeat()
                    last_beat = now
                if self.gallery is not None and now - last_refresh >= self.options.refresh_interval:
                    last_refresh = now
                    if self.gallery.refresh():
                        self.tracker.reschedule()
                t0 = time.monotonic()
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                self.timer.add("capture_wait", time.monotonic() - t0)
                if self._t_first is None:
                    self._t_first = t0
                self._process(item)
                if self.options.max_frames is not None and self.frames >= self.options.max_frames:
                    break
            self._emit(self.tracker.flush())
        finally:
            self._stop.set()
            self._join_capture()
            self._running = False
        if self._capture_error is not None:
            raise self._capture_error
        return self.stats()

    def _join_capture(self) -> None:
        assert self._capture is not None
        self._capture.join(timeout=2.0)
        if self._capture.is_alive():
            # Blocked inside source.read() (a live camera reconnecting): close() interrupts it.
            log.info("capture is blocked in %s; closing the source", getattr(self.source, "name",
                                                                             "the source"))
            try:
                self.source.close()
            except Exception as e:
                log.warning("closing the source failed: %s", e)
            self._capture.join(timeout=5.0)
            if self._capture.is_alive():
                log.warning("the capture thread did not end; it is a daemon and dies with us")

    def _process(self, frame: Any) -> None:
        image = frame.image
        t_start = time.monotonic()
        if self.cuts is not None and self.cuts.is_cut(image):
            self.shot_cuts += 1
            self.tracker.scene_changed()
            log.debug("shot cut at frame %d (change %.3f)", self.frames, self.cuts.last_change)
        faces = self.recognizer.detect(image)
        t_det = time.monotonic()
        tracks = self.tracker.update(faces, self.frames)
        todo: list[tuple[Track, np.ndarray, float]] = []
        for tr in tracks:
            crop = self.recognizer.align(image, tr.face)
            q = self.recognizer.quality(tr.face, crop)
            if self.tracker.wants_embedding(tr, q):
                todo.append((tr, crop, q))
        cap = self.options.max_embeds_per_frame
        if cap is not None and len(todo) > cap:
            # Spread a burst (a group walking in) over the next frames instead of stalling this
            # one: tracks never embedded first, then the best faces. The rest still want an
            # embedding and are asked again next frame.
            todo.sort(key=lambda x: (x[0].last_embed_frame is not None, -x[2]))
            todo = todo[:cap]
        t_align = time.monotonic()
        self.timer.add("detect", t_det - t_start)
        self.timer.add("align", t_align - t_det)
        if todo:
            embs = self.recognizer.embed([c for _, c, _ in todo])
            t_emb = time.monotonic()
            matches = (self.gallery.match_many(embs) if self.gallery is not None
                       else [_Unknown()] * len(todo))
            for (tr, _, q), m, e in zip(todo, matches, embs, strict=True):
                now = self.tracker.observe(tr, m.name, float(m.score), q, e)
                if now is not tr:  # a different person took over the box: a new track
                    tracks[tracks.index(tr)] = now
                if self.snapshots is not None and q >= now.best_quality:  # a new best face
                    now.snapshot = context_crop(image, now.face.box)
            t_match = time.monotonic()
            self.timer.add("embed", t_emb - t_align)
            self.timer.add("embed_face", (t_emb - t_align) / len(todo))
            self.timer.add("match", t_match - t_emb)
            self.embeddings += len(todo)
        t_ev = time.monotonic()
        self._emit(self.tracker.pop_decisions(), frame)
        self.timer.add("events", time.monotonic() - t_ev)
        self.frames += 1
        self.faces += len(faces)
        done = time.monotonic()
        self._t_last = done
        self.timer.add("total", done - t_start)
        if getattr(frame, "t", None) is not None:
            self.timer.add("latency", done - frame.t)
        if self.first_frame_latency_s is None:
            self.first_frame_latency_s = done - self._created
            log.info("first frame processed (%d faces)", len(faces))  # start-up time in the log
        if self.preview is not None:
            t_pre = time.monotonic()
            if not self.preview.show(frame, tracks, self.fps(), self.timer.medians_ms()):
                self.stop()
            self.timer.add("preview", time.monotonic() - t_pre)
        if self.on_frame is not None:
            self.on_frame(FrameReport(frame, tracks, done - t_start))

    # --- events ------------------------------------------------------------------------------
    def _emit(self, decided: list[Track], frame: Any = None) -> None:
        src = getattr(frame, "source", None) or getattr(self.source, "name", "source")
        for tr in decided:
            seen = datetime.now(timezone.utc)
            if frame is not None and getattr(frame, "t", None) is not None:
                # The capture time, not the emit time: that is when the face was seen.
                seen -= timedelta(seconds=time.monotonic() - frame.t)
            extra: dict[str, Any] = {}  # optional event fields (events.EXTRA_FIELDS)
            if self.snapshots is not None:
                extra["snapshot"] = (self.snapshots.save(tr.snapshot, tr.id, tr.event, seen)
                                     if tr.snapshot is not None else None)
            ev = make_event(src, tr.event, tr.id, tr.box, tr.name, tr.score, time=seen, **extra)
            self.events += 1
            for sink in self.sinks:
                try:
                    sink.emit(ev)
                except Exception as e:  # one broken sink must not stop recognition
                    self.sink_errors += 1
                    log.warning("event sink %s failed: %s", type(sink).__name__, e)

    # --- figures -----------------------------------------------------------------------------
    def fps(self) -> float:
        if self._t_first is None or self._t_last is None or self._t_last <= self._t_first:
            return 0.0
        return self.frames / (self._t_last - self._t_first)

    def stats(self) -> PipelineStats:
        wall = 0.0
        if self._t_first is not None and self._t_last is not None:
            wall = self._t_last - self._t_first
        return PipelineStats(frames=self.frames, dropped=self.dropped, fps=self.fps(),
                             wall_s=wall, first_frame_latency_s=self.first_frame_latency_s,
                             events=self.events, faces=self.faces, embeddings=self.embeddings,
                             tracks=self.tracker.created, sink_errors=self.sink_errors,
                             timings=self.timer.summary())
