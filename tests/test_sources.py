"""Frame sources: the fixture clip, image folders, a fake picamera2, a flaky camera stub."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import types
from typing import ClassVar

import cv2
import numpy as np
import pytest

from edgeface_cam import sources
from edgeface_cam.sources import (
    Frame,
    OpenCVCameraSource,
    SourceError,
    VideoFileSource,
    open_source,
)
from tests.conftest import FIXTURES, PEOPLE, ROOT, VIDEO

pytestmark = pytest.mark.device

CLIP = VIDEO / "lin_manuel_miranda_clip.mp4"
CLIP_FRAMES = 275  # fixtures/README.md


def test_video_file_gives_every_frame_then_none(shared):
    with open_source(str(CLIP)) as src:
        frames = list(src)
        assert src.read() is None
    assert len(frames) == CLIP_FRAMES
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    f0 = frames[0]
    assert isinstance(f0, Frame) and f0.image.shape == (360, 640, 3) and f0.image.dtype == np.uint8
    assert f0.source == str(CLIP)
    ts = [f.t for f in frames]
    assert all(b >= a for a, b in itertools.pairwise(ts))
    assert abs(ts[-1] - time.monotonic()) < 5


def test_video_file_loop_restarts_at_the_first_frame(shared):
    first = cv2.VideoCapture(str(CLIP)).read()[1]
    with open_source(str(CLIP), loop=True) as src:
        frames = [src.read() for _ in range(CLIP_FRAMES + 3)]
    assert all(f is not None for f in frames)
    assert frames[CLIP_FRAMES].index == CLIP_FRAMES  # the index keeps counting
    assert np.array_equal(frames[CLIP_FRAMES].image, first)
    assert np.array_equal(frames[0].image, first)


def test_video_file_fps_paces_playback(shared):
    with open_source(str(CLIP), fps=20) as src:
        t0 = time.monotonic()
        for _ in range(6):
            src.read()
        elapsed = time.monotonic() - t0
    assert elapsed >= 5 / 20 * 0.9  # 6 frames at 20 fps: 5 periods between them


def test_image_folder_in_natural_order_skipping_non_images(shared, tmp_path, caplog):
    picks = {
        "img10.jpg": PEOPLE / "obama" / "obama_5.jpg",
        "img2.png": PEOPLE / "lin_manuel_miranda" / "lin_manuel_miranda_1.png",
        "img1.jpg": PEOPLE / "biden" / "biden_2.jpg",
    }
    for name, src in picks.items():
        shutil.copy(src, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "fake.jpg").write_text("a text file with an image name\n")
    with caplog.at_level(logging.WARNING, logger="edgeface_cam.sources"):
        src = open_source(str(tmp_path))
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, name in zip(frames, ["img1.jpg", "img2.png", "img10.jpg"], strict=True):
        assert np.array_equal(frame.image, cv2.imread(str(picks[name])))
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "notes.txt" in skipped and "fake.jpg" in skipped
    assert src.read() is None


def test_rgba_and_grey_images_become_bgr(shared, tmp_path):
    rgba = FIXTURES / "edge" / "rgba_32bit.png"
    assert cv2.imread(str(rgba), cv2.IMREAD_UNCHANGED).shape[2] == 4
    grey = cv2.imread(str(PEOPLE / "obama" / "obama_5.jpg"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    for spec in (rgba, tmp_path / "grey.png"):
        (frame,) = list(open_source(str(spec)))
        assert frame.image.ndim == 3 and frame.image.shape[2] == 3
    assert np.array_equal(frame.image[:, :, 0], grey) and np.array_equal(frame.image[:, :, 2], grey)


def test_image_folder_loop(shared, tmp_path):
    shutil.copy(PEOPLE / "obama" / "obama_5.jpg", tmp_path / "a.jpg")
    shutil.copy(PEOPLE / "biden" / "biden_2.jpg", tmp_path / "b.jpg")
    src = open_source(str(tmp_path), loop=True)
    shapes = [src.read().image.shape for _ in range(5)]
    assert shapes[0] == shapes[2] == shapes[4] != shapes[1]


@pytest.mark.parametrize("spec, match", [
    ("", "empty source"),
    ("no/such/file.mp4", "no such file"),
    ("/dev/video987", "no such camera device"),
    ("ftp://example.invalid/cam", "unsupported URL scheme"),
])
def test_bad_spec_is_a_one_line_source_error(spec, match):
    with pytest.raises(SourceError, match=match) as e:
        open_source(spec)
    assert "\n" not in str(e.value)


def test_unreadable_files_and_empty_folders_are_source_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no readable images"):
        open_source(str(tmp_path / "empty"))
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="cannot decode video"):
        open_source(str(bogus))


def test_url_password_is_not_in_the_name():
    assert sources._redact("rtsp://admin:s3cret@10.0.0.5:554/stream") == \
        "rtsp://admin:***@10.0.0.5:554/stream"


# --- a fake picamera2 --------------------------------------------------------------------------

class _FakePicamera2:
    instances: ClassVar[list[_FakePicamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config = None
        self.started = self.stopped = self.closed = False
        self.n = 0
        _FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, controls=None, **kw):
        return {"main": dict(main), "controls": dict(controls or {})}

    def configure(self, config) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        assert self.started and not self.stopped and name == "main"
        w, h = self.config["main"]["size"]
        self.n += 1
        # "RGB888" means [B, G, R] bytes: a pure blue frame has its 255 in channel 0.
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = 255
        img[0, 0, 1] = self.n % 256
        return img

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


def test_picamera2_source_with_a_fake_module(monkeypatch):
    _FakePicamera2.instances.clear()
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=_FakePicamera2))
    with open_source("picamera2", width=320, height=240, fps=15) as src:
        frames = [src.read() for _ in range(3)]
        assert src.live
    (cam,) = _FakePicamera2.instances
    assert cam.config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert cam.config["controls"] == {"FrameRate": 15.0}
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].image.shape == (240, 320, 3)
    assert frames[0].image[5, 5].tolist() == [255, 0, 0]  # BGR order, no swap applied
    # Capture 1 is the check at open (dropped); read() gives the captures after it, in order.
    assert [int(f.image[0, 0, 1]) for f in frames] == [2, 3, 4]
    assert cam.stopped and cam.closed
    assert frames[0].source == "picamera2:0"


def test_picamera2_without_a_camera_is_a_clear_source_error(monkeypatch):
    def no_camera(camera_num: int = 0):
        raise IndexError("list index out of range")  # what picamera2 raises with no camera

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=no_camera))
    with pytest.raises(SourceError, match="no Pi camera number 1 detected"):
        open_source("picamera2:1")


def test_picamera2_missing_is_a_source_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail
    with pytest.raises(SourceError, match="picamera2 is not installed"):
        open_source("picamera2")


# --- a flaky OpenCV camera ---------------------------------------------------------------------

class _Device:
    """A simulated camera shared by every VideoCapture opened on it: it can be 'unplugged'."""

    def __init__(self, frames_before_drop: int | None = None, fail_opens: int = 0) -> None:
        self.plugged = True
        self.frames_before_drop = frames_before_drop
        self.fail_opens = fail_opens
        self.opens = 0
        self.served = 0
        self.returned_at: float | None = None
        self.lock = threading.Lock()

    def factory(self, target, api=cv2.CAP_ANY, params=None):
        return _StubCapture(self)


class _StubCapture:
    def __init__(self, dev: _Device) -> None:
        self.dev = dev
        with dev.lock:
            dev.opens += 1
            if not dev.plugged and dev.returned_at is not None and \
                    time.monotonic() >= dev.returned_at:
                dev.plugged = True
            self.ok = dev.plugged and dev.fail_opens <= 0
            if dev.plugged and dev.fail_opens > 0:
                dev.fail_opens -= 1
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:
        return self.ok

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def read(self):
        dev = self.dev
        with dev.lock:
            if dev.frames_before_drop is not None and dev.served >= dev.frames_before_drop:
                dev.plugged, dev.frames_before_drop = False, None
            if not (self.ok and dev.plugged):
                return False, None
            dev.served += 1
            img = np.full((48, 64, 3), dev.served % 256, np.uint8)
        return True, img

    def release(self) -> None:
        self.ok = False


def test_camera_reopens_after_a_drop_with_warning_once_and_info(caplog):
    dev = _Device(frames_before_drop=4, fail_opens=0)  # the first is read (and dropped) at open
    with caplog.at_level(logging.INFO, logger="edgeface_cam.sources"):
        src = OpenCVCameraSource(0, capture_factory=dev.factory, backoff=(0.01, 0.05))
        got = [src.read() for _ in range(3)]
        # The 4th read finds the camera gone; it comes back after 4 failed reopen attempts.
        dev.fail_opens = 4
        dev.returned_at = time.monotonic()
        frame = src.read()
        src.close()
    assert all(f is not None for f in got) and frame is not None
    assert [f.index for f in got] + [frame.index] == [0, 1, 2, 3]
    assert src.reconnects == 1
    assert dev.opens == 1 + 4 + 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "back after" in r.message]
    assert len(warnings) == 1 and "camera 0" in warnings[0].getMessage()
    assert len(infos) == 1


def test_camera_back_within_the_backoff_cap_of_its_return():
    """Unplugged for a while: once it returns, a frame comes within the maximum backoff."""
    dev = _Device(frames_before_drop=2)
    cap_s = 0.05  # uncapped doubling from 0.01 s would try at 0.63 s and then 1.27 s
    src = OpenCVCameraSource("/dev/video0", capture_factory=dev.factory, backoff=(0.01, cap_s))
    assert src.read() is not None
    dev.returned_at = time.monotonic() + 1.0  # plugged back in one second from now
    frame = src.read()
    late = time.monotonic() - dev.returned_at
    src.close()
    assert frame is not None
    assert 0 <= late < cap_s + 0.1
    assert sources.BACKOFF_MAX_S <= 5.0  # the product promise: back within 5 s of its return


def test_close_during_backoff_returns_promptly():
    dev = _Device(frames_before_drop=2)
    src = OpenCVCameraSource(0, capture_factory=dev.factory)  # default backoff 0.5 .. 5 s
    assert src.read() is not None
    result: list = []
    reader = threading.Thread(target=lambda: result.append(src.read()))
    reader.start()
    time.sleep(2.0)  # well into the backoff (0.5 + 1 s, now waiting 2 s more)
    assert reader.is_alive()
    t0 = time.monotonic()
    src.close()
    reader.join(timeout=3)
    assert not reader.is_alive()
    assert time.monotonic() - t0 < 0.3
    assert result == [None]
    assert src.read() is None


def test_camera_that_never_opens_is_a_source_error():
    dev = _Device()
    dev.plugged = False
    with pytest.raises(SourceError, match="cannot open camera 3"):
        OpenCVCameraSource(3, capture_factory=dev.factory)


def test_camera_that_opens_but_gives_no_frame_is_a_source_error():
    dev = _Device(frames_before_drop=0)
    with pytest.raises(SourceError, match="opened but gave no frame"):
        OpenCVCameraSource("/dev/video1", cv2.CAP_V4L2, capture_factory=dev.factory)


def test_stream_asks_for_a_one_frame_buffer_and_the_requested_size():
    dev = _Device()
    src = OpenCVCameraSource("rtsp://cam/stream", cv2.CAP_FFMPEG, 1280, 720, 15,
                             capture_factory=dev.factory)
    props = src._cap.props
    assert props[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert (props[cv2.CAP_PROP_FRAME_WIDTH], props[cv2.CAP_PROP_FRAME_HEIGHT]) == (1280, 720)
    assert props[cv2.CAP_PROP_FPS] == 15
    src.close()


def test_close_from_another_thread_while_reading_a_file(shared):
    src = VideoFileSource(CLIP, loop=True)
    count = [0]

    def run() -> None:
        while src.read() is not None:
            count[0] += 1

    reader = threading.Thread(target=run)
    reader.start()
    time.sleep(0.3)
    src.close()
    reader.join(timeout=2)
    assert not reader.is_alive() and count[0] > 0


# --- OpenCV's and FFmpeg's own stderr lines ----------------------------------------------------

OPEN_MISSING = r"""
import logging, sys
from edgeface_cam.sources import SourceError, open_source
if sys.argv[1] == "debug":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stdout)
for spec in sys.argv[2:]:
    try:
        open_source(spec)
    except SourceError as e:
        print("SourceError:", e)
"""


def _open_in_subprocess(level: str, *specs: str) -> subprocess.CompletedProcess:
    # Without what this process's own opens put in the environment (FFmpeg's log level).
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    return subprocess.run([sys.executable, "-c", OPEN_MISSING, level, *specs], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_missing_cameras_and_streams_leave_stderr_clean(tmp_path):
    """A missing /dev/video9, camera index 9 (OpenCV: "[ERROR:0@0.017] ... Camera index out of
    range"), a refused stream (FFmpeg: "[tcp @ 0x...] Connection ... failed") and a file that is
    not a video ("moov atom not found"): one SourceError line each, nothing raw on stderr."""
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    specs = ["/dev/video9", "9", "rtsp://127.0.0.1:9/stream", str(junk)]
    out = _open_in_subprocess("warning", *specs)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("SourceError:") == len(specs), out.stdout
    assert out.stderr == ""
    # With DEBUG logging they are left where a developer looks for them.
    debug = _open_in_subprocess("debug", "rtsp://127.0.0.1:9/stream")
    assert "127.0.0.1" in debug.stderr and "SourceError:" in debug.stdout
