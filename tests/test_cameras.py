"""Several cameras in one process: `cameras:` in the config, one capture thread and queue per
camera, a round-robin worker over one shared detector and embedder, per-camera events; a camera
that fails does not stop the others; SIGTERM stops every capture thread promptly."""

from __future__ import annotations

import os
import signal
import threading
import time

import cv2
import numpy as np
import pytest
import yaml

from edgeface_cam import config as configmod
from edgeface_cam.app import App
from edgeface_cam.config import ConfigError
from edgeface_cam.detect import YuNetDetector
from edgeface_cam.gallery import Gallery
from edgeface_cam.pipeline import Camera, Pipeline, PipelineOptions
from edgeface_cam.recognize import Recognizer
from edgeface_cam.service import install_signal_handlers
from edgeface_cam.sources import Frame, SourceError
from edgeface_cam.track import Tracker

from .conftest import ASSETS, PEOPLE, VIDEO
from .test_pipeline import MemorySource as FramesInMemory

pytestmark = pytest.mark.device

CLIP = VIDEO / "lin_manuel_miranda_clip.mp4"
LIN = PEOPLE / "lin_manuel_miranda" / "lin_manuel_miranda_1.png"
FILES = PipelineOptions(realtime=False)


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgeface")]


@pytest.fixture(scope="module")
def clip_frames(shared) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while len(frames) < 60:  # Lin-Manuel Miranda, alone, facing the camera
        ok, img = cap.read()
        assert ok
        frames.append(img)
    cap.release()
    return frames


class MemorySource(FramesInMemory):
    """Frames from memory, ``n`` of them (None: forever), ``delay`` s apart, named."""

    def __init__(self, name: str, images: list[np.ndarray], n: int | None,
                 delay: float = 0.0) -> None:
        super().__init__(images, n)
        self.name, self.delay = name, delay

    def read(self) -> Frame | None:
        time.sleep(self.delay)
        return super().read()


class FlakyCamera(MemorySource):
    """A live camera whose driver raises for a while (unplugged), then works again."""

    live = True

    def __init__(self, name: str, images: list[np.ndarray], fail: range) -> None:
        super().__init__(name, images, None, delay=0.01)
        self.fail, self.calls = fail, 0

    def read(self) -> Frame | None:
        self.calls += 1
        if self.calls in self.fail:
            raise SourceError(f"{self.name}: device vanished")
        return super().read()


class DeadFile(MemorySource):
    def read(self) -> Frame | None:
        if self.i == 3:
            raise SourceError("corrupt file")
        return super().read()


class NoFaces(Recognizer):
    """The real aligner, no detection: the pipeline's threading at full speed."""

    def __init__(self) -> None:
        super().__init__(YuNetDetector(input_width=160), None)

    def detect(self, image):
        return []


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    from edgeface_cam.embed import Embedder

    return Recognizer(YuNetDetector(), Embedder(ASSETS / "edgeface_xs.tflite", num_threads=1),
                      min_face=40)


def test_three_cameras_each_name_the_enrolled_person(recognizer, clip_frames, tmp_path):
    g = Gallery(tmp_path / "g.db", recognizer.embedder.fingerprint)
    (r,) = recognizer.analyze(cv2.imread(str(LIN)))[:1]
    g.enroll("Lin-Manuel Miranda", r.embedding[None], crops=[r.crop], sources=[str(LIN)],
             qualities=[r.quality])
    events: list[dict] = []
    calls: list[int] = []

    class Sink:
        def emit(self, ev: dict) -> None:
            events.append(ev)

    embed = recognizer.embed
    recognizer.embed = lambda crops: (calls.append(len(crops)), embed(crops))[1]
    try:
        cams = [Camera(MemorySource(n, clip_frames, 40), Tracker()) for n in ("a", "b", "c")]
        stats = Pipeline(cams, recognizer, g, [Sink()], options=FILES).run()
    finally:
        del recognizer.embed
        g.close()
    assert {n: c.frames for n, c in stats.cameras.items()} == {"a": 40, "b": 40, "c": 40}
    per_camera = {n: [(e["track_id"], e["event"], e["name"], e["frame"]) for e in events
                      if e["source"] == n] for n in "abc"}
    assert ("Lin-Manuel Miranda", "recognized") in {(n, k) for _, k, n, _ in per_camera["a"]}
    assert all(0 <= f < 40 for *_, f in per_camera["a"])
    assert per_camera["a"] == per_camera["b"] == per_camera["c"]  # the same frames, the same
    assert max(calls) >= 2  # faces of several cameras in one call (when their frames meet)
    # One round with a frame from each camera: its new faces are embedded in one call.
    calls.clear()
    cams = [Camera(MemorySource(n, clip_frames, 1), Tracker()) for n in ("a", "b", "c")]
    p = Pipeline(cams, recognizer, None, options=FILES)
    recognizer.embed = lambda crops: (calls.append(len(crops)), embed(crops))[1]
    try:
        p._process_round([(c, c.source.read()) for c in cams])
    finally:
        del recognizer.embed
    faces = len(recognizer.detect(clip_frames[0]))
    assert faces >= 1 and calls == [3 * min(faces, 2)]


def test_one_camera_failing_does_not_stop_the_other_two(clip_frames):
    flaky = FlakyCamera("flaky", clip_frames, fail=range(5, 8))
    cams = [Camera(MemorySource("a", clip_frames, 30)), Camera(DeadFile("dead", clip_frames, 30)),
            Camera(flaky)]
    p = Pipeline(cams, NoFaces(), None, options=FILES)
    threading.Timer(3.5, p.stop).start()  # the flaky camera is retried after 1 s
    stats = p.run()  # no error: the others went on
    assert stats.cameras["a"].frames == 30
    assert stats.cameras["dead"].frames == 3
    assert stats.cameras["flaky"].frames > 6  # back after its driver recovered
    assert not pipeline_threads()


def test_a_busy_camera_cannot_starve_the_others(clip_frames):
    """Two cameras delivering as fast as they can and one at ~30 fps, a worker slower than
    all of them: newest wins per camera and the round-robin serves each in turn."""
    class Slow(NoFaces):
        def detect(self, image):
            time.sleep(0.01)
            return []

    cams = [Camera(MemorySource("fast1", clip_frames, None)),
            Camera(MemorySource("fast2", clip_frames, None)),
            Camera(MemorySource("paced", clip_frames, None, delay=0.033))]
    p = Pipeline(cams, Slow(), None, options=PipelineOptions(realtime=True, queue_size=1))
    threading.Timer(2.0, p.stop).start()
    frames = {n: c.frames for n, c in p.run().cameras.items()}
    assert abs(frames["fast1"] - frames["fast2"]) <= 0.2 * frames["fast1"]
    assert frames["paced"] >= 0.8 * 2.0 * 30 * 0.7  # it got (nearly) every frame it had


def test_sigterm_stops_every_capture_thread_promptly(clip_frames):
    cams = [Camera(MemorySource(n, clip_frames, None, delay=0.01)) for n in ("a", "b", "c")]
    p = Pipeline(cams, NoFaces(), None)
    restore = install_signal_handlers(p.stop)
    try:
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        t0 = time.monotonic()
        stats = p.run()
        assert time.monotonic() - t0 < 1.5
    finally:
        restore()
    assert all(c.frames > 0 for c in stats.cameras.values())
    assert not pipeline_threads()


def test_camera_names_must_differ_and_parts_go_in_the_cameras(clip_frames):
    with pytest.raises(ValueError, match="names must differ"):
        Pipeline([Camera(MemorySource("a", clip_frames, 1)),
                  Camera(MemorySource("a", clip_frames, 1))], NoFaces(), None)
    with pytest.raises(ValueError, match="in its Camera"):
        Pipeline([Camera(MemorySource("a", clip_frames, 1))], NoFaces(), None, tracker=Tracker())


# --- config --------------------------------------------------------------------------------------
def load(text: str):
    return configmod.from_dict(yaml.safe_load(text), "c.yaml")


def test_cameras_list_in_the_config():
    cfg = load("cameras:\n  - {name: front, source: 0}\n"
               "  - {name: garage, source: /dev/video2, min_face: 24, input_width: 960}\n")
    assert [c.name for c in cfg.camera_list()] == ["front", "garage"]
    assert cfg.camera.name == "front"  # what enrol and doctor default to
    assert cfg.cameras[1].min_face == 24 and cfg.cameras[1].input_width == 960
    assert load("camera:\n  source: 1\ncameras: []\n").camera_list() == (cfg.camera.__class__(
        source="1"),)
    # run --source X: that one camera
    one = configmod.replace(cfg, camera={"source": "clip.mp4"})
    assert [c.source for c in one.camera_list()] == ["clip.mp4"] and one.camera.name is None


@pytest.mark.parametrize("text, message", [
    ("camera: {source: 1}\ncameras:\n  - {name: a, source: 2}\n",
     "c.yaml: camera and cameras: give one of them"),
    ("cameras:\n  - {source: 2}\n", "c.yaml: cameras[0].name: each camera needs a name"),
    ("cameras:\n  - {name: a}\n  - {name: A}\n", "c.yaml: cameras[1].name: 'A' is given twice"),
    ("cameras:\n  - {name: a, fps: 0}\n", r"c.yaml: cameras[0].fps: 0 is out of range"),
    ("cameras:\n  - {name: a, sorce: 1}\n", "c.yaml: cameras[0].sorce: not a known key "
                                            "(did you mean 'source'?)"),
    ("cameras: {name: a}\n", "c.yaml: cameras: must be a list of camera mappings"),
    ("cameras:\n  - front\n", "c.yaml: cameras[0]: must be a mapping of keys"),
    ("motion:\n  threshold: 2\n", "c.yaml: motion.threshold: 2 is out of range [0, 1]"),
])
def test_cameras_mistakes_are_one_line_errors(text, message):
    with pytest.raises(ConfigError) as e:
        load(text)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_set_refuses_the_cameras_list_and_camera_keys_under_cameras():
    cfg = load("cameras:\n  - {name: a, source: 2}\n")
    with pytest.raises(ConfigError, match="cameras is a list"):
        configmod.override(cfg, ["cameras.name=x"])
    with pytest.raises(ConfigError, match="this config lists cameras"):
        configmod.override(cfg, ["camera.fps=15"])


def test_the_app_builds_each_camera_with_its_own_parts(tmp_path, shared):
    cfg = load(f"cameras:\n  - {{name: one, source: '{CLIP}'}}\n"
               f"  - {{name: two, source: '{CLIP}', min_face: 80, input_width: 320}}\n"
               f"snapshots:\n  dir: '{tmp_path}/snaps'\n")
    with App(cfg, str(tmp_path / "g.db")) as app:
        one, two = app.cameras()
        assert (one.source.name, two.source.name) == ("one", "two")
        assert one.recognizer is None  # the shared one
        assert two.recognizer.min_face == 80 and two.recognizer.embedder is app.embedder
        assert two.recognizer.detector is not app.recognizer.detector  # its own input width
        assert one.tracker is not two.tracker and one.motion is not two.motion
        assert one.snapshots.folder != two.snapshots.folder  # track ids would collide
        p = app.pipeline([one, two], None, [], max_frames=20)
        stats = p.run()
    assert stats.frames >= 20 and set(stats.cameras) == {"one", "two"}


def test_doctor_checks_each_camera(shared):
    from edgeface_cam import doctor

    cfg = load(f"cameras:\n  - {{name: door, source: '{CLIP}'}}\n"
               "  - {name: garage, source: /no/such/clip.mp4}\n")
    checks = {c.name: c for c in doctor.main_checks(cfg) if c.name.startswith("camera")}
    assert list(checks) == ["camera door", "camera garage"]
    assert checks["camera door"].status == doctor.OK
    assert checks["camera garage"].status == doctor.FAIL
    assert "/no/such/clip.mp4" in checks["camera garage"].detail


def test_the_readme_two_camera_config_loads():
    import re

    from .conftest import ROOT

    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if "cameras:" in b)
    cfg = configmod.from_dict(yaml.safe_load(block), "README.md")
    assert len(cfg.camera_list()) == 2 and cfg.motion.enabled


def test_the_service_status_names_each_camera(clip_frames):
    from edgeface_cam.service import _describe

    cams = [Camera(MemorySource(n, clip_frames, 5)) for n in ("door", "garage")]
    p = Pipeline(cams, NoFaces(), None, options=FILES)
    p.run()
    status = _describe(p)
    assert status.startswith("running: door ") and "; garage " in status
    assert "5 frames" in status and status.endswith("0 events")


def test_a_camera_missing_at_start_does_not_stop_the_others(tmp_path, shared):
    from edgeface_cam.app import LateCamera

    cfg = load(f"cameras:\n  - {{name: one, source: '{CLIP}'}}\n"
               "  - {name: usb, source: /dev/video99}\n")
    with App(cfg, str(tmp_path / "g.db")) as app:
        one, usb = app.cameras()
        assert isinstance(usb.source, LateCamera) and usb.source.live
        p = app.pipeline([one, usb], None, [])
        threading.Timer(2.0, p.stop).start()
        t0 = time.monotonic()
        stats = p.run()
        # stop(), the 2 s join grace, then close() ends the missing camera's wait at once
        assert time.monotonic() - t0 < 4.5
    assert stats.cameras["one"].frames > 0 and stats.cameras["usb"].frames == 0
    assert not pipeline_threads()
    # A file that is not there is a mistake to fix, not a camera to wait for.
    bad = load(f"cameras:\n  - {{name: one, source: '{CLIP}'}}\n"
               "  - {name: two, source: /no/such/clip.mp4}\n")
    with App(bad, str(tmp_path / "g.db")) as app, pytest.raises(SourceError, match="no such"):
        app.cameras()


def test_three_cameras_stuck_reconnecting_stop_within_one_grace_period(clip_frames):
    class Stuck(MemorySource):
        """A live camera gone: read() waits (reconnecting) until close()."""

        live = True

        def __init__(self, name: str) -> None:
            super().__init__(name, clip_frames, None)
            self.gone = threading.Event()

        def read(self):
            if self.i < 2:
                return super().read()
            self.gone.wait()
            return None

        def close(self) -> None:
            self.gone.set()

    p = Pipeline([Camera(Stuck(n)) for n in ("a", "b", "c")], NoFaces(), None)
    threading.Timer(0.5, p.stop).start()
    t0 = time.monotonic()
    stats = p.run()
    assert time.monotonic() - t0 < 0.5 + 2.0 + 1.0  # one 2 s grace for all, not one each
    assert all(c.frames + c.dropped == 2 for c in stats.cameras.values())
    assert not pipeline_threads()
