"""doctor: each check on the real model, detector, clip and a real gallery, and on broken ones."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam import doctor
from edgeface_cam.config import from_dict
from edgeface_cam.doctor import FAIL, OK, WARN

from .conftest import ASSETS, PEOPLE, ROOT, VIDEO

pytestmark = pytest.mark.device

MODEL = ASSETS / "edgeface_xs.tflite"
CLIP = VIDEO / "lin_manuel_miranda_clip.mp4"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEFACE_CAM_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr("edgeface_cam.config.SYSTEM_CONFIG", tmp_path / "no-etc.yaml")
    # Tests must not depend on (or stop) a service that happens to run on this machine.
    monkeypatch.setattr(doctor, "active_services", lambda: [])


REAL_ACTIVE_SERVICES = doctor.active_services  # before the fixture above replaces it


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


@pytest.fixture(scope="module")
def embedder():
    from edgeface_cam.embed import Embedder

    return Embedder(MODEL, num_threads=1)


def real_embedding(embedder, photo: Path) -> tuple[np.ndarray, np.ndarray]:
    from edgeface_cam.align import align_face
    from edgeface_cam.detect import make_detector

    image = cv2.imread(str(photo))
    face = make_detector("yunet").detect(image)[0]
    crop = align_face(image, face.landmarks, face.landmark_names)
    return embedder.embed([crop]), crop


def enrolled_gallery(path: Path, embedder, fingerprint: str | None = None) -> Path:
    from edgeface_cam.gallery import Gallery

    emb, crop = real_embedding(embedder, PEOPLE / "obama" / "obama_1.jpg")
    with Gallery(path, fingerprint or embedder.fingerprint) as g:
        g.enroll("Barack Obama", emb, crops=[crop])
    return path


def broken_copy(tmp_path: Path, how: str) -> Path:
    """The shipped model copied beside its card, then damaged."""
    dst = tmp_path / "model" / MODEL.name
    dst.parent.mkdir()
    shutil.copy(MODEL.with_suffix(".json"), dst.with_suffix(".json"))
    data = bytearray(MODEL.read_bytes())
    if how == "truncated":  # a copy that stopped half-way
        data = data[: len(data) // 2]
    elif how == "garbage":
        data = bytearray(b"<html>404 Not Found</html>\n" * 100)
    dst.write_bytes(bytes(data))
    return dst


# --- all checks on a good setup -----------------------------------------------------------------
def test_all_checks_pass_on_the_real_assets_and_clip(tmp_path):
    cfg = from_dict({"camera": {"source": str(CLIP)}, "recognizer": {"threads": 1},
                     "gallery": {"path": str(tmp_path / "g" / "gallery.db")},
                     "preview": {"enabled": False}}, origin=str(tmp_path / "config.yaml"))
    checks = doctor.main_checks(cfg)
    got = by_name(checks)
    assert list(got) == ["config", "runtime", "model", "self-test", "detector", "full path",
                         "camera", "gallery", "threshold", "display"]
    assert all(c.status == OK for c in checks), doctor.report(checks)
    assert "640x360" in got["camera"].detail  # the clip's real frame size
    assert "finds the face" in got["detector"].detail  # the bundled demo photo
    assert doctor.exit_status(checks) == 0
    assert not (tmp_path / "g").exists()  # doctor creates nothing


def test_camera_can_be_skipped(tmp_path):
    cfg = from_dict({"gallery": {"path": str(tmp_path / "gallery.db")}})
    assert "camera" not in by_name(doctor.main_checks(cfg, camera=False))


def test_bad_config_fails_and_the_rest_still_runs():
    checks = doctor.main_checks(None, config_error="config.yaml: detector.backend: 'yunett' is "
                                "not one of yunet, blazeface, mediapipe", camera=False)
    got = by_name(checks)
    assert got["config"].status == FAIL and "yunett" in got["config"].detail
    assert got["config"].fix
    assert got["self-test"].status == OK  # on the built-in defaults
    assert doctor.exit_status(checks) == 1


# --- the model -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_broken_model_fails_with_a_fix(tmp_path, how):
    model = broken_copy(tmp_path, how)
    checks = by_name(doctor.main_checks(from_dict({"recognizer": {"model": str(model)},
                                                   "gallery": {"path": str(tmp_path / "g.db")}}),
                                        camera=False))
    assert checks["model"].status == FAIL and "sha256" in checks["model"].detail
    assert checks["self-test"].status == FAIL and "cannot load" in checks["self-test"].detail
    assert "reinstall" in checks["model"].fix and "reinstall" in checks["self-test"].fix
    assert checks["runtime"].status == OK and checks["detector"].status == OK


def test_model_whose_weights_changed_fails_the_self_test(tmp_path):
    """The card re-signed for a damaged file: only running the model shows it is wrong."""
    from edgeface_cam.embed import file_sha256

    model = broken_copy(tmp_path, "intact")
    data = bytearray(model.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 20000] = bytes(b ^ 0x5A for b in data[mid: mid + 20000])
    model.write_bytes(bytes(data))
    card = json.loads(model.with_suffix(".json").read_text())
    card["sha256"] = file_sha256(model)
    model.with_suffix(".json").write_text(json.dumps(card))
    assert doctor.check_model(model).status == OK
    st = doctor.check_self_test(model)
    assert st.status == FAIL and "self-test cosine" in st.detail and st.fix


def test_missing_model_and_missing_card(tmp_path):
    missing = doctor.check_model(tmp_path / "nope.tflite")
    assert missing.status == FAIL and "not found" in missing.detail and missing.fix
    lone = tmp_path / "lone.tflite"
    shutil.copy(MODEL, lone)
    no_card = doctor.check_model(lone)
    assert no_card.status == FAIL and "card" in no_card.detail


def test_self_test_reports_the_cosine():
    c = doctor.check_self_test(MODEL)
    assert c.status == OK
    assert float(c.detail.rsplit("cosine ", 1)[1]) >= 0.99


# --- detector ------------------------------------------------------------------------------------
def test_detector_missing_model_fails(tmp_path):
    c = doctor.check_detector("yunet", model=str(tmp_path / "missing.onnx"))
    assert c.status == FAIL and c.fix


def test_detector_must_find_the_face_in_a_face_photo(tmp_path):
    ok = doctor.check_detector("yunet", image=PEOPLE / "biden" / "biden_1.jpg")
    assert ok.status == OK
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 128, np.uint8))
    none = doctor.check_detector("yunet", image=blank)
    assert none.status == FAIL and "no face" in none.detail


# --- camera --------------------------------------------------------------------------------------
def test_source_missing_fails_with_a_fix(tmp_path):
    c = doctor.check_source(str(tmp_path / "no-such-clip.mp4"))
    assert c.status == FAIL and "no such file" in c.detail and "camera.source" in c.fix


def test_source_that_never_gives_a_frame_times_out(monkeypatch):
    closed = threading.Event()

    class Stuck:  # a camera that reconnects forever: read() waits until close()
        def read(self):
            closed.wait(30)
            return None

        def close(self):
            closed.set()

    monkeypatch.setattr("edgeface_cam.sources.open_source", lambda *a, **k: Stuck())
    c = doctor.check_source("0", timeout=0.5)
    assert c.status == FAIL and "no frame within 0.5 s" in c.detail
    assert closed.is_set()  # the wait was ended, no thread left spinning


def test_active_services_lists_the_main_unit_and_camera_instances(tmp_path, monkeypatch):
    """Parses what `systemctl list-units --plain --no-legend` prints (a stand-in systemctl that
    also records the patterns it was asked for)."""
    fake = tmp_path / "systemctl"
    fake.write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "args") + "\n"
                    "echo 'edgeface-cam.service loaded active running edgeface-cam face "
                    "recognition'\n"
                    "echo 'edgeface-cam@door.service loaded active running edgeface-cam face "
                    "recognition, camera door'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: str(fake))
    monkeypatch.setattr(doctor, "SYSTEMD_RUN", tmp_path)
    assert REAL_ACTIVE_SERVICES() == ["edgeface-cam.service", "edgeface-cam@door.service"]
    args = (tmp_path / "args").read_text().split()
    assert "edgeface-cam@*.service" in args and "--state=active" in args
    monkeypatch.setattr(doctor, "SYSTEMD_RUN", tmp_path / "not-booted-with-systemd")
    assert REAL_ACTIVE_SERVICES() == []


def test_camera_held_by_the_running_service_is_not_opened(monkeypatch):
    from edgeface_cam import sources

    opened: list[str] = []

    def spy(spec, *args, **kwargs):
        opened.append(spec)
        return real_open(spec, *args, **kwargs)

    real_open = sources.open_source
    monkeypatch.setattr(sources, "open_source", spy)
    monkeypatch.setattr(doctor, "active_services",
                        lambda: ["edgeface-cam.service", "edgeface-cam@door.service"])
    for device in ("/dev/video0", "0", "picamera2"):
        c = doctor.check_source(device)
        assert c.status == WARN
        assert c.fix.startswith("sudo systemctl stop edgeface-cam edgeface-cam@door,")
    assert opened == []
    assert doctor.check_source(str(CLIP)).status == OK  # files are not held
    assert opened == [str(CLIP)]


# --- gallery -------------------------------------------------------------------------------------
def test_gallery_real_enrolment_is_ok(tmp_path, embedder):
    db = enrolled_gallery(tmp_path / "gallery.db", embedder)
    before = sorted(p.name for p in tmp_path.iterdir())
    c = doctor.check_gallery(db, embedder.fingerprint)
    assert c.status == OK and "1 people" in c.detail and "WAL" in c.detail
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # read-only: no new files


def test_gallery_open_in_the_service_is_read_with_its_wal(tmp_path, embedder):
    """While the service holds the gallery, the last enrolment may live only in the WAL file."""
    from edgeface_cam.gallery import Gallery

    db = enrolled_gallery(tmp_path / "gallery.db", embedder)
    emb, crop = real_embedding(embedder, PEOPLE / "biden" / "biden_1.jpg")
    with Gallery(db, embedder.fingerprint) as running:
        running.enroll("Joe Biden", emb, crops=[crop])
        assert (tmp_path / "gallery.db-wal").stat().st_size > 0
        c = doctor.check_gallery(db, embedder.fingerprint)
    assert c.status == OK and "2 people" in c.detail


def test_gallery_embeddings_of_another_model_fail(tmp_path, embedder):
    """Faces enrolled with another model are all called unknown: that fails (issue 12 #2)."""
    db = enrolled_gallery(tmp_path / "gallery.db", embedder, fingerprint="0" * 64)
    c = doctor.check_gallery(db, embedder.fingerprint)
    assert c.status == FAIL and "1 face embedding(s) from another model" in c.detail
    assert "reembed" in c.fix


def test_gallery_of_somebody_else_fails_and_is_left_as_it_was(tmp_path):
    db = tmp_path / "gallery.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE notes(x)")
    before = db.read_bytes()
    c = doctor.check_gallery(db)
    assert c.status == FAIL and "not an edgeface-cam gallery" in c.detail
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [db.name]


def test_corrupt_gallery_fails(tmp_path, embedder):
    db = enrolled_gallery(tmp_path / "gallery.db", embedder)
    data = bytearray(db.read_bytes())
    page = 4096  # the second page onwards holds the tables: scribble over it
    data[page: page + 2048] = os.urandom(2048)
    db.write_bytes(bytes(data))
    c = doctor.check_gallery(db, embedder.fingerprint)
    assert c.status == FAIL and c.fix and "backup" in c.fix


def test_not_a_database_fails(tmp_path):
    db = tmp_path / "gallery.db"
    db.write_text("these are not the faces you are looking for\n" * 200)
    c = doctor.check_gallery(db)
    assert c.status == FAIL and "not a database" in c.detail


def test_no_gallery_yet_is_ok_when_the_folder_can_be_made(tmp_path):
    c = doctor.check_gallery(tmp_path / "new" / "gallery.db")
    assert c.status == OK and "none yet" in c.detail
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")
def test_gallery_files_of_another_owner_fail(tmp_path, embedder):
    folder = tmp_path / "state"
    folder.mkdir()
    db = enrolled_gallery(folder / "gallery.db", embedder)
    os.chown(folder, 65534, 65534)  # the service user's folder, a root-owned gallery in it
    c = doctor.check_gallery(db, embedder.fingerprint)
    assert c.status == FAIL and "chown" in c.fix
    os.chown(db, 65534, 65534)
    # Now all the service user's: doctor (root) reads it immutable, creating nothing.
    c = doctor.check_gallery(db, embedder.fingerprint)
    assert c.status == OK, c
    assert sorted(p.name for p in folder.iterdir()) == ["gallery.db"]


# --- display -------------------------------------------------------------------------------------
def test_snapshots_folder_is_checked_only_when_configured(tmp_path):
    base = {"gallery": {"path": str(tmp_path / "gallery.db")}}
    assert "snapshots" not in by_name(doctor.main_checks(from_dict(base), camera=False))
    cfg = from_dict({**base, "snapshots": {"dir": str(tmp_path / "pics")}})
    got = by_name(doctor.main_checks(cfg, camera=False))["snapshots"]
    assert got.status == OK and "will be created" in got.detail
    assert not (tmp_path / "pics").exists()  # doctor creates nothing
    (tmp_path / "file").write_text("x")
    bad = doctor.check_snapshots(tmp_path / "file" / "pics")
    assert bad.status == "fail" and "not a folder" in bad.detail and bad.fix


def test_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert doctor.check_display(False).status == OK
    assert doctor.check_display("auto").status == OK
    forced = doctor.check_display(True)
    assert forced.status == FAIL and "auto" in forced.fix


# --- output --------------------------------------------------------------------------------------
def test_report_shows_fixes_only_for_problems():
    checks = [doctor.Check("runtime", OK, "ai-edge-litert", "unused"),
              doctor.Check("camera", FAIL, "cannot open camera 0", "set camera.source")]
    lines = doctor.report(checks).splitlines()
    assert lines[0].startswith("OK") and "unused" not in lines[0]
    assert lines[1].startswith("FAIL") and lines[2].strip() == "fix: set camera.source"
    assert len(lines) == 3
    assert doctor.exit_status(checks) == 1
    assert doctor.exit_status(checks[:1]) == 0


def test_module_entry_point(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"gallery:\n  path: {tmp_path / 'gallery.db'}\nrecognizer:\n  threads: 1\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DISPLAY", None)
    r = subprocess.run([sys.executable, "-m", "edgeface_cam.doctor", "--config", str(cfg),
                        "--no-camera"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == f"OK    config     {cfg}"
    assert "Traceback" not in r.stderr


# --- event sinks: doctor refuses what run refuses ------------------------------------------------
HIDE_PAHO = "sys.modules.update(dict.fromkeys(['paho', 'paho.mqtt', 'paho.mqtt.client']))"


def cli_run(tmp_path: Path, args: list[str], hide_paho: bool = False
            ) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process; ``hide_paho``: as if paho-mqtt were not installed."""
    code = (f"import sys\n{HIDE_PAHO if hide_paho else ''}\n"
            "from edgeface_cam.cli import main\nraise SystemExit(main(sys.argv[1:]))")
    env = dict(os.environ, HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    env.pop("EDGEFACE_CAM_CONFIG", None)
    env.pop("DISPLAY", None)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def doctor_and_run(tmp_path: Path, sink: str, hide_paho: bool = False) -> tuple[str, str]:
    """(doctor's events line, run's error line) for a config with this one sink."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"recognizer:\n  threads: 1\ngallery:\n  path: {tmp_path / 'g.db'}\n"
                   f"camera:\n  source: {CLIP}\npreview:\n  enabled: false\n"
                   f"events:\n  - {sink}\n")
    doc = cli_run(tmp_path, ["doctor", "--config", str(cfg), "--no-camera"], hide_paho)
    assert doc.returncode == 1, doc.stdout + doc.stderr
    events = [line for line in doc.stdout.splitlines() if line.split()[1:2] == ["events"]]
    assert len(events) == 1 and events[0].startswith("FAIL"), doc.stdout
    run = cli_run(tmp_path, ["run", "--config", str(cfg), "--max-frames", "5"], hide_paho)
    assert run.returncode == 2, run.stdout + run.stderr
    error = [line for line in run.stderr.splitlines() if line.startswith("edgeface-cam: error:")]
    assert len(error) == 1, run.stderr
    return events[0].split(None, 2)[2], error[0].removeprefix("edgeface-cam: error: ")


@pytest.mark.parametrize("sink, words", [
    ("{type: mqtt, hots: broker.lan}", "unknown setting(s) hots"),  # misspelt key
    ("{type: mqtt, host: broker.lan, port: 70000}", "port must be 1..65535"),
    ("{type: mqtt, host: broker.lan, ca_certs: /nonexistent/ca.pem}", "TLS"),
    ("{type: webhook, url: ftp://example.org/hook}", "http:// or https://"),
    ("{type: jsonl, path: /nonexistent/dir/events.jsonl}", "cannot open event log"),
    ("{type: webhook, timeout: 2}", "missing a required argument: 'url'"),
])
def test_doctor_fails_a_sink_that_run_refuses_with_run_s_message(tmp_path, sink, words):
    doctor_says, run_says = doctor_and_run(tmp_path, sink)
    assert words in run_says
    assert doctor_says == run_says


def test_doctor_fails_an_mqtt_sink_without_paho_like_run(tmp_path):
    doctor_says, run_says = doctor_and_run(tmp_path, "{type: mqtt, host: broker.lan}",
                                           hide_paho=True)
    assert "needs paho-mqtt" in run_says
    assert doctor_says == run_says


def test_valid_sinks_pass_without_connecting(tmp_path):
    # Port 9 on a reserved name: any connection attempt would hang or fail, not pass quickly.
    specs = ({"type": "mqtt", "host": "broker.invalid", "port": 9},
             {"type": "jsonl", "path": str(tmp_path / "events.jsonl")},
             {"type": "webhook", "url": "http://receiver.invalid/hook"})
    cfg = from_dict({"gallery": {"path": str(tmp_path / "g.db")}, "events": list(specs)})
    got = by_name(doctor.main_checks(cfg, camera=False))["events"]
    assert got.status == OK and "mqtt, jsonl, webhook" in got.detail, got
    assert not (tmp_path / "events.jsonl").exists()  # doctor creates nothing


# --- the model beside another model's card -------------------------------------------------------
def mixed_copy(tmp_path: Path, card: str, drop_sha: bool = False) -> Path:
    dst = tmp_path / "mixed" / "edgeface_xs.tflite"
    dst.parent.mkdir()
    shutil.copy(MODEL, dst)
    data = json.loads((ASSETS / card).read_text())
    if drop_sha:
        del data["sha256"]
    dst.with_suffix(".json").write_text(json.dumps(data))
    return dst


def test_another_models_card_fails_as_a_mismatch_not_the_runtime(tmp_path):
    model = mixed_copy(tmp_path, "edgeface_xxs.json")
    checks = by_name(doctor.main_checks(from_dict({"recognizer": {"model": str(model)},
                                                   "gallery": {"path": str(tmp_path / "g.db")}}),
                                        camera=False))
    for name in ("model", "self-test"):
        assert checks[name].status == FAIL and "do not match" in checks[name].detail, checks
        assert "ai-edge-litert" not in checks[name].detail + checks[name].fix
    assert "edgeface_xxs.tflite" in checks["model"].detail  # the file the card describes
    assert checks["runtime"].status == OK


def test_model_check_compares_the_shapes_when_the_card_has_no_sha256(tmp_path):
    dst = tmp_path / "m" / "blaze.tflite"  # BlazeFace's 128x128 model beside an EdgeFace card
    dst.parent.mkdir()
    shutil.copy(ASSETS / "face_detection_short_range.tflite", dst)
    card = json.loads(MODEL.with_suffix(".json").read_text())
    del card["sha256"]
    dst.with_suffix(".json").write_text(json.dumps(card))
    c = doctor.check_model(dst)
    assert c.status == FAIL and "[1, 128, 128, 3]" in c.detail and "do not match" in c.detail


def test_relative_model_flag_is_checked_where_the_user_stands(tmp_path):
    (tmp_path / "models").mkdir()
    for ext in (".tflite", ".json"):
        shutil.copy(ASSETS / f"edgeface_xxs{ext}", tmp_path / "models" / f"x{ext}")
    env = dict(os.environ, HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    env.pop("EDGEFACE_CAM_CONFIG", None)
    r = subprocess.run([sys.executable, "-m", "edgeface_cam", "doctor", "--no-camera",
                        "--model", "./models/x.tflite"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=180)
    model = [line for line in r.stdout.splitlines() if line.split()[1:2] == ["model"]]
    assert model and model[0].startswith("OK"), r.stdout + r.stderr
    assert str(tmp_path / "models" / "x.tflite") in model[0]
