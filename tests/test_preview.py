"""The preview: a clear refusal without a display (no abort), and real drawing under Xvfb."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam import preview as pv
from edgeface_cam.detect import YuNetDetector
from edgeface_cam.track import Tracker

from .conftest import PEOPLE, ROOT

OBAMA = PEOPLE / "obama" / "obama_5.jpg"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _tracks(image: np.ndarray, name: str | None = "obama"):
    faces = YuNetDetector().detect(image)
    assert faces, "the fixture must show a face"
    tr = Tracker()
    tracks = tr.update(faces[:1])
    tr.observe(tracks[0], name, 0.7, 0.9)
    return tracks


PROBE = """
from edgeface_cam.preview import Preview, PreviewUnavailable, display_available
ok, why = display_available()
print("AVAILABLE", ok, why)
try:
    Preview("probe")
    print("OPENED")
except PreviewUnavailable as e:
    print("REFUSED", e)
"""


@pytest.mark.parametrize("extra", [{}, {"DISPLAY": ":87"}, {"WAYLAND_DISPLAY": "wayland-87"}],
                         ids=["nothing-set", "dead-x-display", "wayland-only"])
def test_no_display_is_a_clear_refusal_not_an_abort(extra, shared):
    # A subprocess: were the check wrong, Qt would abort the whole interpreter.
    r = subprocess.run([sys.executable, "-c", PROBE], env=_env(**extra), cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "AVAILABLE False" in r.stdout
    refused = [ln for ln in r.stdout.splitlines() if ln.startswith("REFUSED")]
    assert len(refused) == 1 and "cannot show a preview" in refused[0], r.stdout


def test_headless_opencv_build_is_refused(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:   NONE\n")
    ok, why = pv.display_available()
    assert not ok and "no GUI backend" in why


def test_draw_overlay_boxes_the_face_and_leaves_the_frame_alone(shared):
    image = cv2.imread(str(OBAMA))
    before = image.copy()
    tracks = _tracks(image)
    out = pv.draw_overlay(image, tracks, 24.5, {"detect": 9.0, "total": 14.0})
    np.testing.assert_array_equal(image, before)
    x, y, _w, h = (round(float(v)) for v in tracks[0].box)
    # The left edge of the box, away from the label, is the "known" colour.
    col = out[y + h // 3: y + h - 3, x].astype(int)
    assert np.abs(col - np.array(pv.COLOR_KNOWN)).max() <= 1
    # An unknown face is drawn in another colour.
    out_u = pv.draw_overlay(image, _tracks(image, name=None))
    assert np.abs(out_u[y + h // 2, x].astype(int) - np.array(pv.COLOR_UNKNOWN)).max() <= 1


def test_q_and_esc_end_the_preview(monkeypatch):
    keys = iter([-1, ord("q")])
    monkeypatch.setattr(pv, "display_available", lambda: (True, "TEST"))
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "imshow", lambda *a: None)
    monkeypatch.setattr(cv2, "waitKey", lambda *a: next(keys, 27))
    monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
    monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None)
    p = pv.Preview("t")
    img = np.zeros((60, 80, 3), np.uint8)
    assert p.show(img, []) is True
    assert p.show(img, []) is False  # q
    assert p.show(img, []) is False  # Esc
    p.close()
    assert p.show(img, []) is False


SHOW = """
import os, sys, time, cv2
from edgeface_cam.detect import YuNetDetector
from edgeface_cam.preview import Preview
from edgeface_cam.track import Tracker
img = cv2.imread(sys.argv[1])
tr = Tracker()
tracks = tr.update(YuNetDetector().detect(img)[:1])
tr.observe(tracks[0], "obama", 0.7, 0.9)
p = Preview("edgeface-test")
end = time.time() + 30
n = 0
while time.time() < end and not os.path.exists(sys.argv[2]):
    p.show(img, tracks, 25.0, {"detect": 8.0, "total": 12.0})
    n += 1
    if n == 20:
        print("SHOWN", flush=True)
p.close()
"""


@pytest.fixture
def xvfb():
    if not (shutil.which("Xvfb") and shutil.which("import")):
        pytest.skip("needs Xvfb and ImageMagick's import (apt install xvfb imagemagick)")
    # -displayfd: Xvfb picks a free display number and writes it to us (teammates run X too).
    rfd, wfd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp"], pass_fds=(wfd,), stderr=subprocess.DEVNULL)
    os.close(wfd)
    try:
        with os.fdopen(rfd) as f:
            num = f.readline().strip()
        assert num.isdigit(), "Xvfb did not start"
        yield f":{num}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_preview_draws_the_box_where_the_face_is_under_xvfb(xvfb, tmp_path: Path, shared):
    image = cv2.imread(str(OBAMA))
    (track,) = _tracks(image)
    flag = tmp_path / "done"
    env = _env(DISPLAY=xvfb)
    proc = subprocess.Popen([sys.executable, "-c", SHOW, str(OBAMA), str(flag)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "SHOWN", proc.stderr.read()
        time.sleep(0.3)
        shot_path = tmp_path / "screen.png"
        subprocess.run(["import", "-window", "root", str(shot_path)], env=env, check=True,
                       timeout=30)
    finally:
        flag.touch()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    shot = cv2.imread(str(shot_path))
    # Where is the frame on screen? Match the plain image (the overlay is a small part of it).
    res = cv2.matchTemplate(shot, image, cv2.TM_CCOEFF_NORMED)
    _, best, _, (ox, oy) = cv2.minMaxLoc(res)
    assert best > 0.9, f"the frame is not on screen (best match {best:.2f})"
    x, y, _w, h = (round(float(v)) for v in track.box)
    hits = 0
    rows = range(y + h // 3, y + h - 3, 4)
    for yy in rows:  # the box's left edge, under the label
        strip = shot[oy + yy, ox + x - 3: ox + x + 4].astype(int)
        if (np.abs(strip - np.array(pv.COLOR_KNOWN)).max(axis=1) <= 12).any():
            hits += 1
    assert hits >= 0.9 * len(rows), f"box colour found on {hits}/{len(rows)} rows"
    # ...and that colour is the overlay's, not the photo's.
    raw = image[y + h // 3: y + h - 3, x].astype(int)
    assert (np.abs(raw - np.array(pv.COLOR_KNOWN)).max(axis=1) > 12).mean() > 0.9


def test_several_cameras_share_one_window_as_a_grid():
    """Three cameras' pictures (different sizes) in a 2x2 grid at one height, each in its own
    cell, labelled; one camera is shown as it is."""
    img = cv2.imread(str(OBAMA))
    small = cv2.resize(img, (320, 240))
    wide = np.full((360, 640, 3), 200, np.uint8)
    assert pv.grid([img]) is img
    out = pv.grid([small, wide, small], tile_height=180, names=["front", "back", "garage"])
    assert out.shape == (360, 2 * 320, 3)  # 2 columns of the widest scaled tile (640x360 -> 320)
    assert (out[180:, 320:] == 0).all()  # the fourth cell is empty
    # The wide grey picture fills the top-right cell (below its label).
    assert np.abs(out[60:170, 330:630].astype(int) - 200).max() <= 1
    tile = cv2.resize(small, (240, 180), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out[40:180, 40:280], tile[40:])  # centred in its 320 px cell
    assert not np.array_equal(out[:30, 40:140], tile[:30, :100])  # under the camera's name
