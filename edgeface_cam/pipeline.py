"""The running system: one capture thread per camera feeding its own bounded queue (newest
wins), and one worker that serves the cameras in turn: motion gate, detect, align, track, embed
(only when a tracker asks; the faces of one round of cameras in one call), match, and one event
per track (a second when a stranger turns out to be enrolled).

Threads: ``run()`` starts the capture threads and does the work in the thread that called it
(the CLI's main thread). That keeps the OpenCV/Qt preview on the main thread, where GUI toolkits
want it, and keeps the gallery's SQLite connection in the thread that opened it. Sinks that talk
to the network (MQTT, webhooks) run their own threads; the pipeline only calls ``emit``.

Several cameras: the worker takes at most one frame from each camera per round, so a busy
camera cannot starve the others; the detector, the embedder and the gallery are shared, each
camera keeps its own tracker, shot-cut and motion state, snapshots and event ``source``. A live
camera that fails reconnects on its own (``sources.LiveSource``) while the others go on; with
several cameras, one that raises is logged and retried (live) or ends (a file), and the others
go on; with one, its error is raised from ``run()`` as before.

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
from .motion import MotionGate
from .recognize import Recognizer
from .shotcut import ShotCutDetector
from .track import Track, Tracker

log = logging.getLogger(__name__)

STAGES = ("capture_wait", "read", "motion", "detect", "align", "embed", "embed_face", "match",
          "events", "preview", "total", "latency")
_END = object()  # a capture thread's "source ended" marker
RETRY_S = 1.0  # a live camera whose read() raised is read again after this long (several cameras)


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
class CameraStats:
    """One camera's share of a run."""

    frames: int
    dropped: int
    skipped: int  # frames the motion gate kept from the detector
    fps: float
    tracks: int
    events: int
    reconnects: int = 0

    def line(self, name: str) -> str:
        return (f"{name}: {self.frames} frames, {self.fps:.1f} fps, {self.dropped} dropped, "
                f"{self.skipped} skipped, {self.tracks} tracks, {self.events} events"
                + (f", {self.reconnects} reconnects" if self.reconnects else ""))


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
    skipped: int = 0  # frames the motion gate kept from the detector (all cameras)
    cameras: dict[str, CameraStats] = field(default_factory=dict)  # per camera, by name

    def summary(self) -> str:
        lines = [f"frames {self.frames}  dropped {self.dropped}  skipped {self.skipped}  "
                 f"fps {self.fps:.1f}  faces {self.faces}  embeddings {self.embeddings}  "
                 f"tracks {self.tracks}  events {self.events}"]
        if len(self.cameras) > 1:
            lines += ["  " + c.line(name) for name, c in self.cameras.items()]
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




class Camera:
    """One camera's parts and running state in a ``Pipeline``.

    ``source`` (a ``sources.FrameSource``), ``tracker`` (default: its own defaults), ``cuts``
    (a ``shotcut.ShotCutDetector``: a cut makes the tracker re-check who each track holds;
    None: off), ``motion`` (a ``motion.MotionGate``: no detection while nothing moves and no
    track lives; None: detect every frame), ``snapshots`` (where each event's picture goes),
    ``recognizer`` (this camera's own min_face / detector input width; None: the pipeline's).
    """

    def __init__(self, source: Any, tracker: Tracker | None = None, *,
                 cuts: ShotCutDetector | None = None, motion: MotionGate | None = None,
                 snapshots: SnapshotStore | None = None,
                 recognizer: Recognizer | None = None) -> None:
        self.source = source
        self.name = str(getattr(source, "name", "source"))
        self.tracker = tracker if tracker is not None else Tracker()
        self.cuts, self.motion, self.snapshots = cuts, motion, snapshots
        self.recognizer = recognizer
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.ended = False
        self.frames = self.dropped = self.faces = self.embeddings = self.events = 0
        self.shot_cuts = self.skipped_before = 0
        self.t_first: float | None = None
        self.t_last: float | None = None
        # Source index of the last processed frames (tracker frame numbers -> frame in source):
        # an event names the frame its track was last seen in.
        self._indices: deque[int] = deque(maxlen=self.tracker.max_age + 2)
        self._seen = 0
        self.index_offset = 0  # a live source reopened by a reload counts on

    @property
    def skipped(self) -> int:
        return self.skipped_before + (self.motion.skipped if self.motion is not None else 0)

    def remember(self, index: int) -> None:
        self._indices.append(int(index) + self.index_offset)
        self._seen += 1

    def index_of(self, frame_no: int) -> int | None:
        """The source index of this camera's processed frame number ``frame_no``."""
        if not self._indices:
            return None
        pos = frame_no - (self._seen - len(self._indices))
        return self._indices[min(max(pos, 0), len(self._indices) - 1)]

    def fps(self) -> float:
        if self.t_first is None or self.t_last is None or self.t_last <= self.t_first:
            return 0.0
        return self.frames / (self.t_last - self.t_first)

    def continue_from(self, old: Camera) -> None:
        """Take over ``old``'s tracks and counts (the same camera, rebuilt by a reload)."""
        self.tracker.take_over(old.tracker)
        self.frames, self.dropped, self.faces = old.frames, old.dropped, old.faces
        self.embeddings, self.events, self.shot_cuts = old.embeddings, old.events, old.shot_cuts
        self.skipped_before = old.skipped
        self.t_first = old.t_first
        self._indices = deque(old._indices, maxlen=self._indices.maxlen)
        self._seen = old._seen
        if getattr(self.source, "live", False) and old._indices:
            self.index_offset = old._indices[-1] + 1  # a camera's new frames come after the old

    def stats(self) -> CameraStats:
        return CameraStats(frames=self.frames, dropped=self.dropped, skipped=self.skipped,
                           fps=self.fps(), tracks=self.tracker.created, events=self.events,
                           reconnects=int(getattr(self.source, "reconnects", 0) or 0))


@dataclass
class _Work:
    """One frame of one camera within a round."""

    cam: Camera
    frame: Any
    faces: list[Any]
    tracks: list[Track]
    todo: list[tuple[Track, np.ndarray, float]]  # (track, aligned crop, quality) to embed
    spent: float  # seconds of this frame's own work (motion, detect, align, events)


class Pipeline:
    """camera(s) -> capture thread each -> queue each -> one worker -> sinks.

    Built parts: ``source`` (a ``sources.FrameSource``: ``read() -> Frame | None``,
    ``close()``, ``name``; or a list of ``Camera`` for several cameras), ``recognizer``
    (detect, align, embed, quality; it applies ``min_face``), ``gallery`` (a
    ``gallery.Gallery`` or None: everyone unknown), ``sinks``, and for a single source its
    ``tracker``, ``cuts``, ``motion`` and ``snapshots`` (see ``Camera``), ``preview``,
    ``options``. ``on_frame(FrameReport)`` after every processed frame; ``heartbeat()`` for
    watchdog pings.
    """

    def __init__(self, source: Any, recognizer: Recognizer, gallery: SupportsGallery | None,
                 sinks: Sequence[EventSink] = (), *, tracker: Tracker | None = None,
                 cuts: ShotCutDetector | None = None, motion: MotionGate | None = None,
                 preview: SupportsPreview | None = None, snapshots: SnapshotStore | None = None,
                 options: PipelineOptions | None = None,
                 on_frame: Callable[[FrameReport], None] | None = None,
                 heartbeat: Callable[[], None] | None = None) -> None:
        self._created = time.monotonic()
        if isinstance(source, (list, tuple)):
            if not source or any(x is not None for x in (tracker, cuts, motion, snapshots)):
                raise ValueError("several cameras: give each its tracker, cuts, motion and "
                                 "snapshots in its Camera")
            self.cameras: list[Camera] = list(source)
        else:
            self.cameras = [Camera(source, tracker, cuts=cuts, motion=motion,
                                   snapshots=snapshots)]
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must differ, got {names}")
        self.recognizer = recognizer
        self.gallery = gallery
        self.sinks = list(sinks)
        self.sightings: Any = None  # a gallery.sightings.SightingRecorder (app sets it): each
        # decided track is stored, its event carries sighting_id (and file, ignored)
        self.preview = preview
        self.options = opts = options if options is not None else PipelineOptions()
        for cam in self.cameras:
            cam.queue = queue.Queue(maxsize=opts.queue_size)
        self.on_frame = on_frame
        self.heartbeat = heartbeat
        self.timer = StageTimer()
        self._stop = threading.Event()
        self._ready = threading.Event()  # a capture thread queued something
        self._keep_tracks = False
        self._running = False
        self.events = self.sink_errors = 0
        self.first_frame_latency_s: float | None = None
        self._t_first: float | None = None
        self._t_last: float | None = None

    # The first camera's parts, for callers that run one.
    @property
    def source(self) -> Any:
        return self.cameras[0].source

    @property
    def tracker(self) -> Tracker:
        return self.cameras[0].tracker

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.cameras)

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.cameras)

    @property
    def shot_cuts(self) -> int:
        return sum(c.shot_cuts for c in self.cameras)

    # --- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask ``run()`` to finish; safe from any thread and from signal handlers."""
        self._stop.set()

    def stop_for_reload(self) -> None:
        """Stop without deciding the live tracks: the next pipeline takes them over
        (``continue_from``), so people in view keep their track and are not announced again."""
        self._keep_tracks = True
        self._stop.set()

    def continue_from(self, old: Pipeline) -> None:
        """Carry ``old``'s tracks, track ids and counts over (cameras matched by name); call
        before ``run()``."""
        previous = {c.name: c for c in old.cameras}
        for cam in self.cameras:
            if cam.name in previous:
                cam.continue_from(previous[cam.name])
        self.events += old.events
        self.sink_errors += old.sink_errors
        self.timer = old.timer
        self.first_frame_latency_s = old.first_frame_latency_s
        self._t_first = old._t_first

    # --- capture threads ---------------------------------------------------------------------
    def _put(self, cam: Camera, item: Any, drop: bool = True) -> bool:
        """Queue ``item``; in realtime mode the newest frame wins. False if stopped meanwhile."""
        q = cam.queue
        while not self._stop.is_set():
            if self.options.realtime and drop:
                try:
                    q.put_nowait(item)
                except queue.Full:
                    try:
                        q.get_nowait()
                        cam.dropped += 1  # only this camera's thread writes it
                    except queue.Empty:
                        pass
                    continue
            else:
                try:
                    q.put(item, timeout=0.1)
                except queue.Full:
                    continue
            self._ready.set()
            return True
        return False

    def _read(self, cam: Camera) -> Any:
        """The camera's next frame; with several cameras a live one that raises is retried."""
        while True:
            try:
                return cam.source.read()
            except Exception as e:
                if len(self.cameras) == 1 or not getattr(cam.source, "live", False):
                    raise
                log.warning("%s: %s; trying again in %.0f s (the other cameras go on)",
                            cam.name, e, RETRY_S)
                if self._stop.wait(RETRY_S):
                    return None

    def _capture_loop(self, cam: Camera) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                frame = self._read(cam)
                if frame is None:
                    break
                self.timer.add("read", time.monotonic() - t0)
                if not self._put(cam, frame):
                    return
        except Exception as e:  # one camera: run() re-raises it; several: the others go on
            cam.error = e
            if len(self.cameras) > 1:
                log.error("%s stopped: %s (the other cameras go on)", cam.name, e)
        self._put(cam, _END, drop=False)  # never drop the last frame to make room for the marker

    # --- worker ------------------------------------------------------------------------------
    def run(self) -> PipelineStats:
        """Process frames until every source has ended, ``max_frames`` is reached, the preview
        is closed or ``stop()`` is called. No pipeline thread is alive when it returns."""
        if self._running:
            raise RuntimeError("Pipeline.run() is already running")
        self._running = True
        for i, cam in enumerate(self.cameras):
            cam.thread = threading.Thread(target=self._capture_loop, args=(cam,), daemon=True,
                                          name="edgeface-capture" + (f"-{i}" if i else ""))
            cam.thread.start()
        try:
            self._work()
            if not self._keep_tracks:
                for cam in self.cameras:
                    self._emit(cam, cam.tracker.flush())
        finally:
            self._stop.set()
            self._join_capture()
            self._running = False
        if len(self.cameras) == 1 and self.cameras[0].error is not None:
            raise self.cameras[0].error
        return self.stats()

    def _work(self) -> None:
        last_refresh, last_beat = time.monotonic(), float("-inf")
        waiting_since: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            if self.heartbeat and now - last_beat >= self.options.heartbeat_interval:
                self.heartbeat()
                last_beat = now
            if self.gallery is not None and now - last_refresh >= self.options.refresh_interval:
                last_refresh = now
                if self.gallery.refresh():
                    for cam in self.cameras:
                        cam.tracker.reschedule()
            waiting_since = now if waiting_since is None else waiting_since
            batch = self._take_round()
            if batch is None:
                return  # every source has ended
            if not batch:
                continue
            self.timer.add("capture_wait", time.monotonic() - waiting_since)
            if self._t_first is None:
                self._t_first = waiting_since
            waiting_since = None
            self._process_round(batch)
            if self.options.max_frames is not None and self.frames >= self.options.max_frames:
                return

    def _take_round(self, timeout: float = 0.1) -> list[tuple[Camera, Any]] | None:
        """At most one frame from each camera (round-robin: a busy camera cannot starve the
        others); waits up to ``timeout`` when none has one; None once every source ended."""
        self._ready.clear()
        got = []
        for cam in self.cameras:
            if cam.ended:
                continue
            try:
                item = cam.queue.get_nowait()
            except queue.Empty:
                continue
            if item is _END:
                cam.ended = True
            else:
                got.append((cam, item))
        if not got:
            if all(c.ended for c in self.cameras):
                return None
            self._ready.wait(timeout)
        return got

    def _join_capture(self) -> None:
        """Join every capture thread: 2 s of grace in all, then close the sources still stuck
        in ``read()`` (a live camera reconnecting), which interrupts them."""
        deadline = time.monotonic() + 2.0
        for cam in self.cameras:
            assert cam.thread is not None
            cam.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [cam for cam in self.cameras if cam.thread is not None and cam.thread.is_alive()]
        for cam in stuck:
            log.info("capture is blocked in %s; closing the source", cam.name)
            try:
                cam.source.close()
            except Exception as e:
                log.warning("closing the source failed: %s", e)
        for cam in stuck:
            assert cam.thread is not None
            cam.thread.join(timeout=5.0)
            if cam.thread.is_alive():
                log.warning("the capture thread of %s did not end; it is a daemon and dies "
                            "with us", cam.name)

    def _process_round(self, batch: list[tuple[Camera, Any]]) -> None:
        work = [self._detect_and_track(cam, frame) for cam, frame in batch]
        per_frame = self._embed_round(work) / len(work)
        for w in work:
            self._finish_frame(w, per_frame)

    def _detect_and_track(self, cam: Camera, frame: Any) -> _Work:
        image = frame.image
        recognizer = cam.recognizer or self.recognizer
        t_start = time.monotonic()
        if cam.cuts is not None and cam.cuts.is_cut(image):
            cam.shot_cuts += 1
            cam.tracker.scene_changed()
            log.debug("%s: shot cut at frame %d (change %.3f)", cam.name, cam.frames,
                      cam.cuts.last_change)
        run = True
        if cam.motion is not None:
            run = cam.motion.check(image, busy=bool(cam.tracker.tracks), now=t_start)
            self.timer.add("motion", time.monotonic() - t_start)
        t0 = time.monotonic()
        faces = recognizer.detect(image) if run else []
        t_det = time.monotonic()
        cam.remember(frame.index)
        tracks = cam.tracker.update(faces, cam.frames)
        todo: list[tuple[Track, np.ndarray, float]] = []
        for tr in tracks:
            crop = recognizer.align(image, tr.face)
            q = recognizer.quality(tr.face, crop)
            if cam.tracker.wants_embedding(tr, q):
                todo.append((tr, crop, q))
        cap = self.options.max_embeds_per_frame
        if cap is not None and len(todo) > cap:
            # Spread a burst (a group walking in) over the next frames instead of stalling this
            # one: tracks never embedded first, then the best faces. The rest still want an
            # embedding and are asked again next frame.
            todo.sort(key=lambda x: (x[0].last_embed_frame is not None, -x[2]))
            todo = todo[:cap]
        t_align = time.monotonic()
        if run:
            self.timer.add("detect", t_det - t0)
        self.timer.add("align", t_align - t_det)
        return _Work(cam, frame, faces, tracks, todo, t_align - t_start)

    def _embed_round(self, work: list[_Work]) -> float:
        """Embed and match the faces the trackers asked for, all cameras' in one call; the
        seconds it took."""
        todo = [(w, tr, crop, q) for w in work for tr, crop, q in w.todo]
        if not todo:
            return 0.0
        t0 = time.monotonic()
        embs = self.recognizer.embed([crop for _, _, crop, _ in todo])
        t_emb = time.monotonic()
        matches = (self.gallery.match_many(embs) if self.gallery is not None
                   else [_Unknown()] * len(todo))
        for (w, tr, crop, q), m, e in zip(todo, matches, embs, strict=True):
            now = w.cam.tracker.observe(tr, m.name, float(m.score), q, e, crop=crop,
                                        file=getattr(w.frame, "file", None))
            if now is not tr:  # a different person took over the box: a new track
                w.tracks[w.tracks.index(tr)] = now
            if w.cam.snapshots is not None and q >= now.best_quality:  # a new best face
                now.snapshot = context_crop(w.frame.image, now.face.box)
            w.cam.embeddings += 1
        t_match = time.monotonic()
        self.timer.add("embed", t_emb - t0)
        self.timer.add("embed_face", (t_emb - t0) / len(todo))
        self.timer.add("match", t_match - t_emb)
        return t_match - t0

    def _finish_frame(self, w: _Work, embed_share: float) -> None:
        cam, frame = w.cam, w.frame
        t_ev = time.monotonic()
        self._emit(cam, cam.tracker.pop_decisions(), frame)
        if getattr(frame, "scene_ends", False):  # a still image is a scene of its own
            self._emit(cam, cam.tracker.end_scene(), frame)
        done = time.monotonic()
        self.timer.add("events", done - t_ev)
        cam.frames += 1
        cam.faces += len(w.faces)
        if cam.t_first is None:
            cam.t_first = t_ev - w.spent - embed_share
        cam.t_last = self._t_last = done
        total = w.spent + embed_share + (done - t_ev)
        self.timer.add("total", total)
        if getattr(frame, "t", None) is not None:
            self.timer.add("latency", done - frame.t)
        if self.first_frame_latency_s is None:
            self.first_frame_latency_s = done - self._created
            log.info("first frame processed (%d faces)", len(w.faces))  # start-up time in the log
        if self.preview is not None:
            t_pre = time.monotonic()
            if not self.preview.show(frame, w.tracks, cam.fps(), self.timer.medians_ms()):
                self.stop()
            self.timer.add("preview", time.monotonic() - t_pre)
        if self.on_frame is not None:
            self.on_frame(FrameReport(frame, w.tracks, total))

    # --- events ------------------------------------------------------------------------------
    def _emit(self, cam: Camera, decided: list[Track], frame: Any = None) -> None:
        """The one place events are built and sent: each decided track of ``cam``."""
        src = getattr(frame, "source", None) or cam.name
        for tr in decided:
            seen = datetime.now(timezone.utc)
            if frame is not None and getattr(frame, "t", None) is not None:
                # The capture time, not the emit time: that is when the face was seen.
                seen -= timedelta(seconds=time.monotonic() - frame.t)
            # The frame (index in its source) the track was last seen in.
            extra: dict[str, Any] = {"frame": cam.index_of(tr.last_frame)}
            if cam.snapshots is not None:
                extra["snapshot"] = (cam.snapshots.save(tr.snapshot, tr.id, tr.event, seen)
                                     if tr.snapshot is not None else None)
            if self.sightings is not None:
                extra.update(self.sightings.record(tr, src, seen, extra))
            ev = make_event(src, tr.event, tr.id, tr.box, tr.name, tr.score, time=seen, **extra)
            self.events += 1
            cam.events += 1
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
        cams = self.cameras
        return PipelineStats(frames=self.frames, dropped=self.dropped, fps=self.fps(),
                             wall_s=wall, first_frame_latency_s=self.first_frame_latency_s,
                             events=self.events, faces=sum(c.faces for c in cams),
                             embeddings=sum(c.embeddings for c in cams),
                             tracks=sum(c.tracker.created for c in cams),
                             sink_errors=self.sink_errors, timings=self.timer.summary(),
                             skipped=sum(c.skipped for c in cams),
                             cameras={c.name: c.stats() for c in cams})
