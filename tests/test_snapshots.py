"""Event snapshots: the picture around the face, the capped folder, a full disk, and the
pipeline attaching a picture of the right face to each event (real clip, real detector)."""

from __future__ import annotations

import errno
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam import config as configmod
from edgeface_cam.detect import YuNetDetector
from edgeface_cam.events.snapshots import SnapshotStore, context_crop

from .conftest import ASSETS, PEOPLE, VIDEO

pytestmark = pytest.mark.device


def test_context_crop_grows_clips_and_shrinks():
    img = np.zeros((480, 640, 3), np.uint8)
    assert context_crop(img, np.array([300, 200, 40, 50])).shape == (150, 120, 3)  # 3x the box
    # At the top-left corner the margin is cut by the frame.
    assert context_crop(img, np.array([0, 0, 40, 50])).shape == (100, 80, 3)
    # A big face: the longest side is capped.
    big = context_crop(img, np.array([200, 100, 200, 300]), max_side=320)
    assert max(big.shape[:2]) == 320
    with pytest.raises(ValueError, match="outside"):
        context_crop(img, np.array([700, 500, 40, 50]))


def test_store_writes_jpegs_and_keeps_the_newest(tmp_path):
    (tmp_path / "notes.txt").write_text("not a snapshot")
    store = SnapshotStore(tmp_path, max_files=3)
    pic = np.full((60, 40, 3), 200, np.uint8)
    paths = [store.save(pic, track_id=i, event="unknown") for i in range(5)]
    assert all(paths)
    kept = sorted(p.name for p in tmp_path.glob("*.jpg"))
    assert kept == sorted(Path(p).name for p in paths[-3:])
    assert cv2.imread(paths[-1]).shape == (60, 40, 3)
    assert (tmp_path / "notes.txt").exists()
    # A new store on the same folder counts what is there already.
    again = SnapshotStore(tmp_path, max_files=3)
    again.save(pic, track_id=9, event="recognized")
    assert len(list(tmp_path.glob("*.jpg"))) == 3 and Path(paths[2]).name not in {
        p.name for p in tmp_path.glob("*.jpg")}


def test_a_full_disk_costs_the_picture_not_the_event(tmp_path, monkeypatch, caplog):
    store = SnapshotStore(tmp_path)

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    assert store.save(np.zeros((8, 8, 3), np.uint8), 1, "unknown") is None
    assert store.failed == 1 and not list(tmp_path.iterdir())
    assert "No space left" in caplog.text


def test_config_section_and_relative_dir(tmp_path):
    cfg_file = tmp_path / "conf" / "config.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text("snapshots:\n  dir: pictures\n  max_files: 50\n")
    cfg = configmod.load(cfg_file)
    assert cfg.snapshots_dir() == cfg_file.parent.resolve() / "pictures"
    assert cfg.snapshots.max_files == 50
    assert configmod.Config().snapshots_dir() is None  # off by default
    cfg_file.write_text("snapshots:\n  max_files: 0\n")
    with pytest.raises(configmod.ConfigError, match=r"snapshots\.max_files"):
        configmod.load(cfg_file)


@pytest.mark.slow
def test_pipeline_events_carry_a_picture_of_their_face(tmp_path, shared):
    from edgeface_cam.embed import Embedder
    from edgeface_cam.gallery import Gallery
    from edgeface_cam.pipeline import Pipeline, PipelineOptions
    from edgeface_cam.recognize import Recognizer
    from edgeface_cam.shotcut import ShotCutDetector
    from edgeface_cam.sources import open_source

    rec = Recognizer(YuNetDetector(), Embedder(ASSETS / "edgeface_xs.tflite", num_threads=1),
                     min_face=40)
    lin = PEOPLE / "lin_manuel_miranda" / "lin_manuel_miranda_1.png"
    (r,) = rec.analyze(cv2.imread(str(lin)))[:1]
    events = []

    class Sink:
        def emit(self, ev):
            events.append(ev)

    with Gallery(tmp_path / "g.db", rec.embedder.fingerprint) as g:
        g.enroll("Lin-Manuel Miranda", r.embedding[None], crops=[r.crop], sources=[str(lin)],
                 qualities=[r.quality])
        with open_source(str(VIDEO / "lin_manuel_miranda_clip.mp4")) as src:
            Pipeline(src, rec, g, [Sink()], cuts=ShotCutDetector(),
                     options=PipelineOptions(realtime=False, max_frames=60),
                     snapshots=SnapshotStore(tmp_path / "snaps")).run()
    assert events and all(ev.get("snapshot") for ev in events)
    assert len(list((tmp_path / "snaps").glob("*.jpg"))) == len(events)
    for ev in events:
        pic = cv2.imread(ev["snapshot"])
        assert pic is not None and max(pic.shape[:2]) <= 320
    # (The audience's faces are dark and blurred: their pictures are right but too poor to
    # detect again.) His picture shows him: the face in it matches his enrolment photo.
    named = [ev for ev in events if ev["name"] == "Lin-Manuel Miranda"]
    assert named
    for ev in named:
        (face,) = rec.analyze(cv2.imread(ev["snapshot"]))[:1]
        assert float(face.embedding @ r.embedding) > 0.35
