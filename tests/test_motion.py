"""The motion gate on scenes made for it (a still room with sensor and JPEG noise, a slow
brightness ramp, a person walking in after 10 s of nothing) and on the real clips: it skips the
still and ramp frames, catches the person within a few frames, and the gated demo recognises
the same people no more than 3 frames later than without it."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from edgeface_cam.detect import YuNetDetector
from edgeface_cam.gallery import Gallery
from edgeface_cam.motion import MotionGate
from edgeface_cam.pipeline import Pipeline, PipelineOptions
from edgeface_cam.recognize import Recognizer
from edgeface_cam.shotcut import ShotCutDetector
from edgeface_cam.sources import Frame, open_source

from . import scenes
from .conftest import ASSETS, PEOPLE, VIDEO

pytestmark = pytest.mark.device

FPS = 30.0
OBAMA = PEOPLE / "obama" / "obama_1.jpg"
LIN = PEOPLE / "lin_manuel_miranda" / "lin_manuel_miranda_1.png"
FILES = PipelineOptions(realtime=False)


def gate_decisions(frames, gate: MotionGate | None = None) -> list[bool]:
    """The gate's answer for each frame, on a 30 fps clock, with no track alive."""
    gate = gate or MotionGate()
    return [gate.check(f, busy=False, now=i / FPS) for i, f in enumerate(frames)]


def periodic(n: int, every_s: float = 2.0) -> int:
    """How many of ``n`` frames at 30 fps the every-``every_s`` check runs on."""
    return len(range(0, n, round(every_s * FPS)))


@pytest.mark.parametrize("make", [
    lambda: scenes.still(300, sigma=4.0, jpeg=75),
    lambda: scenes.still(300, sigma=8.0, jpeg=40),  # a noisy, badly compressed camera
    lambda: scenes.ramp(300, levels=60.0),  # 60 grey levels brighter over 10 s
], ids=["still", "noisy-still", "slow-ramp"])
def test_still_and_ramp_frames_are_skipped(make):
    gate = MotionGate()
    ran = gate_decisions(make(), gate)
    assert sum(ran) == periodic(300)  # only the first frame and the 2-second checks
    assert gate.skipped == 300 - periodic(300)


def test_a_sudden_whole_scene_brightness_change_is_not_motion():
    frames = list(scenes.still(20))
    brighter = [np.clip(f.astype(int) + 40, 0, 255).astype(np.uint8) for f in frames[10:]]
    gate = MotionGate()
    moved = [gate.moving(f) for f in frames[:10] + brighter]
    assert moved == [True] + [False] * 19


def test_a_person_walking_in_after_10_s_of_nothing_is_caught_at_once():
    idle = round(10 * FPS)
    frames = list(scenes.walk_in(OBAMA, idle=idle))
    ran = gate_decisions(frames)
    assert sum(ran[:idle]) == periodic(idle)
    first = ran.index(True, idle - 1 if ran[idle - 1] else idle)
    assert first <= idle + 2  # a few columns of the photo are in view: motion
    assert all(ran[idle + 3:idle + 20])  # and while the person keeps moving in


def test_a_person_standing_still_is_looked_for_every_check_every_seconds():
    frames = list(scenes.still(2))
    gate = MotionGate(check_every=0.5)
    ran = [gate.check(frames[i % 2], busy=False, now=t) for i, t in
           enumerate(np.arange(0, 2.01, 0.1))]
    assert [round(0.1 * i, 1) for i, r in enumerate(ran) if r] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert gate.check(frames[0], busy=True, now=2.05)  # a live track: always detect


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        MotionGate(threshold=1.5)
    with pytest.raises(ValueError, match="check_every"):
        MotionGate(check_every=0)


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    from edgeface_cam.embed import Embedder

    return Recognizer(YuNetDetector(), Embedder(ASSETS / "edgeface_xs.tflite", num_threads=1),
                      min_face=40)


class ListSource:
    """Frames from memory, in order, once."""

    name = "scene"
    live = False

    def __init__(self, images) -> None:
        self.images, self.i = list(images), 0

    def read(self) -> Frame | None:
        if self.i >= len(self.images):
            return None
        self.i += 1
        return Frame(self.images[self.i - 1], time.monotonic(), self.i - 1, self.name)

    def close(self) -> None:
        pass


def first_face_frame(source, recognizer, motion: MotionGate | None) -> tuple[int | None, int]:
    seen: list[int] = []
    stats = Pipeline(source, recognizer, None, motion=motion, options=FILES,
                     on_frame=lambda r: seen.extend([r.frame.index] if r.tracks else [])).run()
    return (seen[0] if seen else None), stats.skipped


def test_the_gated_pipeline_finds_the_walker_as_soon_as_the_ungated_one(recognizer, shared):
    idle = round(10 * FPS)
    frames = list(scenes.walk_in(OBAMA, idle=idle))
    without, skipped_without = first_face_frame(ListSource(frames), recognizer, None)
    with_gate, skipped = first_face_frame(ListSource(frames), recognizer, MotionGate())
    assert without is not None and without >= idle and skipped_without == 0
    assert with_gate is not None and with_gate <= without + 3
    assert skipped >= idle - periodic(idle) - 2  # the empty room cost no detection
    assert skipped < idle + 3


def test_the_street_scene_is_all_motion(recognizer, shared):
    with open_source(str(VIDEO / "street_scene.mp4")) as src:
        _, skipped = first_face_frame(src, recognizer, MotionGate())
    assert skipped == 0  # people walk through every frame (and are tracked)


def recognitions(recognizer, gallery, motion: MotionGate | None) -> tuple[dict, int]:
    """Name -> frame of its first 'recognized' event on the demo clip; frames skipped."""
    events: list[dict] = []

    class Sink:
        def emit(self, ev: dict) -> None:
            events.append(ev)

    with open_source(str(ASSETS / "demo" / "lin_manuel_miranda_clip.mp4")) as src:
        stats = Pipeline(src, recognizer, gallery, [Sink()], cuts=ShotCutDetector(),
                         motion=motion, options=FILES).run()
    first: dict[str, int] = {}
    for ev in events:
        if ev["name"] is not None:
            first[ev["name"]] = min(first.get(ev["name"], ev["frame"]), ev["frame"])
    return first, stats.skipped


@pytest.mark.slow
def test_the_gated_demo_recognises_the_same_people_no_more_than_3_frames_later(
        recognizer, tmp_path, shared):
    g = Gallery(tmp_path / "g.db", recognizer.embedder.fingerprint)
    try:
        (r,) = recognizer.analyze(cv2.imread(str(LIN)))[:1]
        g.enroll("Lin-Manuel Miranda", r.embedding[None], crops=[r.crop], sources=[str(LIN)],
                 qualities=[r.quality])
        off, _ = recognitions(recognizer, g, None)
        on, _ = recognitions(recognizer, g, MotionGate())
    finally:
        g.close()
    assert set(on) == set(off) == {"Lin-Manuel Miranda"}
    for name, frame in off.items():
        assert frame <= on[name] <= frame + 3
