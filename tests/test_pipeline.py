"""The threaded pipeline on the real clips (real detector, model and gallery), plus its threading:
newest-frame-wins dropping, stop() from another thread, a source stuck reconnecting, errors."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam.detect import YuNetDetector
from edgeface_cam.gallery import Gallery
from edgeface_cam.pipeline import Pipeline, PipelineOptions
from edgeface_cam.recognize import Recognizer
from edgeface_cam.shotcut import ShotCutDetector
from edgeface_cam.sources import Frame, SourceError, open_source

from .conftest import ASSETS, PEOPLE, VIDEO

pytestmark = pytest.mark.device

CLIP = VIDEO / "lin_manuel_miranda_clip.mp4"
STREET = VIDEO / "street_scene.mp4"
LIN = PEOPLE / "lin_manuel_miranda" / "lin_manuel_miranda_1.png"
EVENT_KEYS = {"time", "source", "event", "track_id", "box", "name", "score", "frame"}
FILES = PipelineOptions(realtime=False)  # every frame of a file, none dropped


class ListSink:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def emit(self, event: dict) -> None:
        self.events.append(event)


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgeface")]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    from edgeface_cam.embed import Embedder

    return Recognizer(YuNetDetector(), Embedder(ASSETS / "edgeface_xs.tflite", num_threads=1),
                      min_face=40)


@pytest.fixture
def gallery(recognizer, tmp_path: Path):
    g = Gallery(tmp_path / "gallery.db", recognizer.embedder.fingerprint)
    yield g
    g.close()


def enroll_lin(recognizer: Recognizer, gallery: Gallery) -> None:
    (r,) = recognizer.analyze(cv2.imread(str(LIN)))[:1]
    gallery.enroll("Lin-Manuel Miranda", r.embedding[None], crops=[r.crop], sources=[str(LIN)],
                   qualities=[r.quality])


def check_event_shape(ev: dict) -> None:
    assert set(ev) == EVENT_KEYS
    assert datetime.fromisoformat(ev["time"]).utcoffset().total_seconds() == 0
    assert ev["event"] in ("recognized", "unknown")
    assert isinstance(ev["track_id"], int) and isinstance(ev["score"], float)
    assert len(ev["box"]) == 4 and all(isinstance(v, int) for v in ev["box"])
    assert (ev["name"] is None) == (ev["event"] == "unknown")


@pytest.mark.slow
def test_clip_events_name_the_enrolled_person(recognizer, gallery, shared):
    enroll_lin(recognizer, gallery)
    sink = ListSink()
    with open_source(str(CLIP)) as src:
        stats = Pipeline(src, recognizer, gallery, [sink], cuts=ShotCutDetector(),
                         options=FILES).run()
    assert stats.frames == 275 and stats.dropped == 0
    for ev in sink.events:
        check_event_shape(ev)
    named = [e for e in sink.events if e["event"] == "recognized"]
    assert named, sink.events
    assert {e["name"] for e in named} == {"Lin-Manuel Miranda"}
    # One event per track, not one per frame (two when a track first called unknown is named).
    by_track: dict[int, list[str]] = {}
    for e in sink.events:
        by_track.setdefault(e["track_id"], []).append(e["event"])
    assert all(ev in (["recognized"], ["unknown"], ["unknown", "recognized"])
               for ev in by_track.values()), by_track
    assert len(sink.events) == stats.events
    assert len(by_track) <= stats.tracks < 40
    # He is on stage for most of the clip: one of his events comes from a long, named track
    # (scored well above the gallery's threshold), not a lucky single frame.
    assert max(e["score"] for e in named) > gallery.threshold + 0.1
    assert stats.embeddings < stats.faces / 3  # the tracker embeds new/improving tracks only
    assert not pipeline_threads()


@pytest.mark.slow
def test_a_cut_in_the_clip_starts_new_tracks(recognizer, gallery, shared):
    """The clip cuts between shots of different people at frames 82 and 211 (tests/test_shotcut.py)
    with face boxes overlapping across the cut: IoU alone would carry a track over."""

    def tracks_across_cuts(cut_threshold: float | None) -> tuple[Pipeline, dict[int, list[int]]]:
        seen: dict[int, set[int]] = {}

        def on_frame(report) -> None:
            for t in report.tracks:
                seen.setdefault(t.id, set()).add(report.frame.index)

        with open_source(str(CLIP)) as src:
            p = Pipeline(src, recognizer, gallery, [ListSink()], options=FILES,
                         cuts=ShotCutDetector(cut_threshold) if cut_threshold else None,
                         on_frame=on_frame)
            p.run()
        # A track seen before a cut and again more than 2 frames after it (the embeddings after
        # a cut are spread over two frames at most here).
        return p, {c: [i for i, f in seen.items() if min(f) < c and max(f) > c + 2]
                   for c in (82, 211)}

    p, across = tracks_across_cuts(0.08)
    assert p.shot_cuts == 3
    assert across == {82: [], 211: []}
    _, across_without = tracks_across_cuts(None)
    assert across_without[82] or across_without[211]  # the check above can fail


@pytest.mark.slow
def test_street_scene_with_an_empty_gallery_gives_only_unknowns(recognizer, gallery, shared):
    sink = ListSink()
    with open_source(str(STREET)) as src:
        stats = Pipeline(src, recognizer, gallery, [sink], cuts=ShotCutDetector(),
                         options=FILES).run()
    assert stats.frames == 105
    assert len(sink.events) >= 4  # 4 to 8 passers-by in every frame
    for ev in sink.events:
        check_event_shape(ev)
    assert {e["event"] for e in sink.events} == {"unknown"}
    assert all(0 <= e["box"][0] < 1920 and 0 <= e["box"][1] < 1080 for e in sink.events)


def test_max_frames_is_honoured_and_tracks_are_flushed(recognizer, gallery, shared):
    enroll_lin(recognizer, gallery)
    sink = ListSink()
    reports = []
    with open_source(str(CLIP)) as src:
        p = Pipeline(src, recognizer, gallery, [sink], cuts=ShotCutDetector(),
                     options=PipelineOptions(realtime=False, max_frames=12),
                     on_frame=reports.append)
        stats = p.run()
    assert stats.frames == 12 and len(reports) == 12
    assert [r.frame.index for r in reports] == list(range(12))
    # One face (his) in the first frames; its track was still open at frame 12: flushed.
    assert len(sink.events) == 1
    assert stats.first_frame_latency_s is not None and 0 < stats.first_frame_latency_s < 30
    for stage in ("capture_wait", "detect", "align", "embed", "match", "total"):
        t = stats.timings[stage]
        assert t.count > 0 and 0 <= t.median_ms <= t.p90_ms
    assert stats.fps > 0


# --- threading, with small stand-ins so these run in a blink -------------------------------------
@pytest.fixture(scope="module")
def clip_frames(shared) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while len(frames) < 8:
        ok, img = cap.read()
        assert ok
        frames.append(img)
    cap.release()
    return frames


class MemorySource:
    """Frames from memory, as fast as asked, ``n`` of them (None: forever)."""

    name = "memory"
    live = False

    def __init__(self, images: list[np.ndarray], n: int | None) -> None:
        self.images, self.n, self.i = images, n, 0
        self.closed = False

    def read(self) -> Frame | None:
        if self.closed or (self.n is not None and self.i >= self.n):
            return None
        f = Frame(self.images[self.i % len(self.images)], time.monotonic(), self.i, self.name)
        self.i += 1
        return f

    def close(self) -> None:
        self.closed = True


class StuckSource(MemorySource):
    """A live source whose camera vanished: read() waits until close() (as sources.py does)."""

    def __init__(self, images: list[np.ndarray]) -> None:
        super().__init__(images, None)
        self._closed = threading.Event()

    def read(self) -> Frame | None:
        if self.i < 3:
            return super().read()
        self._closed.wait()  # reconnecting with backoff...
        return None

    def close(self) -> None:
        self._closed.set()


class SlowRecognizer(Recognizer):
    """The real detector/aligner, plus a fixed delay: a worker slower than the camera."""

    def __init__(self, delay: float) -> None:
        super().__init__(YuNetDetector(input_width=160), None)
        self.delay = delay

    def detect(self, image):
        time.sleep(self.delay)
        return []


def test_realtime_drops_stale_frames_and_file_mode_keeps_all(clip_frames):
    seen: list[int] = []
    src = MemorySource(clip_frames, 200)
    stats = Pipeline(src, SlowRecognizer(0.01), None,
                     options=PipelineOptions(realtime=True, queue_size=1),
                     on_frame=lambda r: seen.append(r.frame.index)).run()
    assert stats.dropped > 0 and stats.frames + stats.dropped == 200
    assert seen == sorted(seen) and seen[-1] == 199  # newest wins; the last frame is seen
    seen.clear()
    stats = Pipeline(MemorySource(clip_frames, 60), SlowRecognizer(0.002), None, options=FILES,
                     on_frame=lambda r: seen.append(r.frame.index)).run()
    assert stats.dropped == 0 and seen == list(range(60))


def test_stop_from_another_thread_ends_run_promptly(clip_frames):
    before = set(threading.enumerate())
    p = Pipeline(MemorySource(clip_frames, None), SlowRecognizer(0.005), None)
    out: dict = {}
    runner = threading.Thread(target=lambda: out.setdefault("stats", p.run()))
    runner.start()
    time.sleep(0.5)
    assert runner.is_alive()
    t0 = time.monotonic()
    p.stop()
    runner.join(timeout=5)
    assert not runner.is_alive() and time.monotonic() - t0 < 1.0
    assert out["stats"].frames > 0
    assert set(threading.enumerate()) <= before
    assert not pipeline_threads()


def test_stop_while_the_source_is_stuck_reconnecting(clip_frames):
    src = StuckSource(clip_frames)
    beats = []
    p = Pipeline(src, SlowRecognizer(0.0), None, heartbeat=lambda: beats.append(1),
                 options=PipelineOptions(heartbeat_interval=0.05))
    threading.Timer(0.6, p.stop).start()
    t0 = time.monotonic()
    stats = p.run()
    assert time.monotonic() - t0 < 4.0  # the 2 s join grace, then close() frees the read
    assert stats.frames + stats.dropped == 3
    assert len(beats) >= 5  # the watchdog hook keeps beating while no frame comes
    assert not pipeline_threads()


def test_source_error_is_raised_from_run_with_no_thread_left(clip_frames):
    class Broken(MemorySource):
        def read(self):
            if self.i == 2:
                raise SourceError("camera unplugged for good")
            return super().read()

    with pytest.raises(SourceError, match="unplugged"):
        Pipeline(Broken(clip_frames, None), SlowRecognizer(0.0), None).run()
    assert not pipeline_threads()


def test_a_broken_sink_does_not_stop_recognition(recognizer, clip_frames):
    class Broken:
        def emit(self, event):
            raise ConnectionError("broker down")

    good = ListSink()
    stats = Pipeline(MemorySource(clip_frames, 8), recognizer, None, [Broken(), good],
                     cuts=ShotCutDetector(), options=FILES).run()
    assert stats.frames == 8 and good.events  # the face in the clip's first frames: unknown
    assert stats.sink_errors == len(good.events)


def test_preview_closing_stops_the_run(clip_frames):
    class Preview:
        shown = 0

        def show(self, frame, tracks, fps, timings):
            self.shown += 1
            return self.shown < 5  # the user presses q on the 5th frame

    pv = Preview()
    stats = Pipeline(MemorySource(clip_frames, None), SlowRecognizer(0.0), None,
                     preview=pv).run()
    assert pv.shown == 5 and stats.frames == 5
    assert not pipeline_threads()


def test_gallery_is_refreshed_about_every_interval(clip_frames):
    class CountingGallery:
        refreshes = 0

        def refresh(self):
            self.refreshes += 1
            return False

        def match_many(self, embs):
            raise AssertionError("nothing is embedded here")

    g = CountingGallery()
    p = Pipeline(MemorySource(clip_frames, None), SlowRecognizer(0.01), g,
                 options=PipelineOptions(refresh_interval=0.1))
    threading.Timer(1.05, p.stop).start()
    p.run()
    assert 6 <= g.refreshes <= 12


def test_bad_settings_are_refused(clip_frames):
    with pytest.raises(ValueError):
        Pipeline(MemorySource(clip_frames, 1), SlowRecognizer(0), None,
                 options=PipelineOptions(queue_size=5))
    with pytest.raises(ValueError):
        Pipeline(MemorySource(clip_frames, 1), SlowRecognizer(0), None,
                 options=PipelineOptions(max_frames=0))


def test_a_burst_of_new_faces_is_embedded_over_the_next_frames(recognizer, shared):
    from .conftest import SCENES

    group = cv2.imread(str(SCENES / "group_6_faces.jpg"))
    calls: list[int] = []
    embed = recognizer.embed

    class Counting(Recognizer):
        def embed(self, crops):
            calls.append(len(crops))
            return embed(crops)

    rec = Counting(recognizer.detector, recognizer.embedder, min_face=40)
    stats = Pipeline(MemorySource([group], 4), rec, None, cuts=ShotCutDetector(),
                     options=PipelineOptions(realtime=False, max_embeds_per_frame=2)).run()
    assert stats.faces == 4 * 6
    assert calls == [2, 2, 2]  # every new face once, two a frame; none is due again by frame 4
    stats = Pipeline(MemorySource([group], 1), rec, None, cuts=ShotCutDetector(),
                     options=PipelineOptions(realtime=False, max_embeds_per_frame=None)).run()
    assert calls[-1] == 6
