"""The edgeface-cam command line, end to end on the real photos, clip and shipped model."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edgeface_cam.cli import build_parser, main
from tests.conftest import ASSETS, FIXTURES, PEOPLE, ROOT, SCENES

pytestmark = pytest.mark.device

OBAMA, BIDEN = "Barack Obama", "Joe Biden"
COMMANDS = ["run", "enroll", "list", "remove", "rename", "reembed", "identify", "verify", "demo",
            "bench", "doctor", "sightings", "unknowns", "assign", "not", "ignore", "forget",
            "backup", "restore", "web", "passwd", "token"]


@pytest.fixture(autouse=True)
def _quiet_and_isolated(monkeypatch, tmp_path):
    # A teammate's or the machine's config must not leak in; the default gallery path must
    # never be touched by a test.
    monkeypatch.delenv("EDGEFACE_CAM_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("edgeface_cam.config.SYSTEM_CONFIG", tmp_path / "no-etc.yaml")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def cli(capsys, *args: object) -> tuple[int, str, str]:
    """main() in-process; argparse's own mistakes end in SystemExit, counted as the exit code."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    """stderr without the native runtime's one start-up notice (TFLite's C++ logger prints it
    and has no Python switch)."""
    return [line for line in err.splitlines() if "XNNPACK delegate" not in line]


def assert_user_error(code: int, err: str, *needles: str) -> None:
    lines = error_lines(err)
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, lines
    assert lines[0].startswith("edgeface-cam: error: ") or " error: " in lines[0], lines
    for n in needles:
        assert n in lines[0], (n, lines[0])


def people(capsys, db: Path) -> dict[str, int]:
    code, out, _ = cli(capsys, "list", "--json", "--db", db)
    assert code == 0
    return {p["name"]: p["embeddings"] for p in json.loads(out)}


@pytest.fixture(scope="module")
def gallery_db(tmp_path_factory) -> Path:
    """Obama (three photos) and Biden (one) enrolled through the CLI."""
    db = tmp_path_factory.mktemp("gallery") / "g.db"
    obama = [PEOPLE / "obama" / f"obama_{i}.jpg" for i in (1, 2, 3)]
    assert main(["enroll", "--name", OBAMA, "--images", *map(str, obama), "--db", str(db)]) == 0
    assert main(["enroll", "--name", BIDEN, "--images", str(PEOPLE / "biden" / "biden_1.jpg"),
                 "--db", str(db)]) == 0
    return db


@pytest.fixture
def db_copy(gallery_db, tmp_path) -> Path:
    """A private copy for tests that write (the module's gallery stays as enrolled)."""
    dst = tmp_path / "copy.db"
    with sqlite3.connect(gallery_db) as src, sqlite3.connect(dst) as out:
        src.backup(out)
    return dst


def identify(capsys, db: Path, *images: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    code, out, err = cli(capsys, "identify", *images, "--json", "--db", db, *extra)
    assert code == 0, err
    return json.loads(out)


def names(result: dict) -> list[str | None]:
    return [f["name"] for f in result["faces"]]


# --- enrol and identify ---------------------------------------------------------------------------
def test_enrolled_people_are_listed(capsys, gallery_db):
    assert people(capsys, gallery_db) == {OBAMA: 3, BIDEN: 1}
    code, out, _ = cli(capsys, "list", "--db", gallery_db)
    assert code == 0 and OBAMA in out and BIDEN in out and "2 people" in out


def test_identify_their_other_photos(capsys, gallery_db):
    photos = [PEOPLE / "obama" / "obama_4.jpg", PEOPLE / "obama" / "obama_5.jpg",
              PEOPLE / "biden" / "biden_2.jpg"]
    results = identify(capsys, gallery_db, *photos)
    assert [r["image"] for r in results] == [str(p) for p in photos]
    # The largest face of each photo is its person; anyone else in the frame is nobody known.
    for r, who in zip(results, [OBAMA, OBAMA, BIDEN], strict=True):
        assert r["faces"][0]["name"] == who, r
        assert all(n is None for n in names(r)[1:]), r


@pytest.mark.parametrize("scene, unknown", [("obama_biden_1.jpg", 0), ("obama_biden_2.jpg", 1)])
def test_two_person_scenes_name_both_and_nobody_else(capsys, gallery_db, scene, unknown):
    (r,) = identify(capsys, gallery_db, SCENES / scene)
    known = sorted(n for n in names(r) if n is not None)
    assert known == [OBAMA, BIDEN]
    assert names(r).count(None) >= unknown  # obama_biden_2 also shows a third person


def test_group_of_strangers_is_six_unknown_faces(capsys, gallery_db):
    (r,) = identify(capsys, gallery_db, SCENES / "group_6_faces.jpg")
    assert names(r) == [None] * 6


def test_json_shape_of_identify(capsys, gallery_db):
    (r,) = identify(capsys, gallery_db, SCENES / "obama_biden_1.jpg")
    assert set(r) == {"image", "faces"}
    for f in r["faces"]:
        assert {"name", "score", "box"} <= set(f)
        assert isinstance(f["score"], float) and -1.0 <= f["score"] <= 1.0
        assert len(f["box"]) == 4 and all(isinstance(v, int) for v in f["box"])
        x, y, w, h = f["box"]
        assert w > 20 and h > 20 and x >= 0 and y >= 0
    # The boxes are where the faces are: Obama stands left of Biden in this photo.
    by_name = {f["name"]: f["box"] for f in r["faces"]}
    assert by_name[OBAMA][0] < by_name[BIDEN][0]


def test_identify_text_output_names_each_face(capsys, gallery_db):
    code, out, _ = cli(capsys, "identify", SCENES / "obama_biden_1.jpg", "--db", gallery_db)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and any(OBAMA in line for line in lines)
    assert all(str(SCENES / "obama_biden_1.jpg") in line for line in lines)


def test_identify_without_a_gallery_calls_everyone_unknown(capsys, tmp_path):
    db = tmp_path / "none.db"
    results = identify(capsys, db, PEOPLE / "obama" / "obama_4.jpg")
    assert names(results[0]) == [None] and results[0]["faces"][0]["score"] is None
    assert not db.exists()  # a read-only command creates nothing


def test_verify_same_and_different(capsys, gallery_db):
    a, b = PEOPLE / "obama" / "obama_4.jpg", PEOPLE / "obama" / "obama_5.jpg"
    code, out, _ = cli(capsys, "verify", a, b, "--json", "--db", gallery_db)
    assert code == 0
    res = json.loads(out)
    assert res["same"] is True and res["similarity"] >= res["threshold"]
    assert [f["image"] for f in res["faces"]] == [str(a), str(b)]
    assert all({"name", "score", "box"} <= set(f) for f in res["faces"])
    assert [f["name"] for f in res["faces"]] == [OBAMA, OBAMA]
    code, out, _ = cli(capsys, "verify", a, PEOPLE / "biden" / "biden_2.jpg")
    assert code == 1 and out.startswith("different people")


def test_set_and_model_flags_override_the_config(capsys, gallery_db):
    a, b = PEOPLE / "obama" / "obama_4.jpg", PEOPLE / "obama" / "obama_5.jpg"
    code, out, _ = cli(capsys, "verify", a, b, "--json")
    xs = json.loads(out)
    assert code == 0 and xs["same"] is True
    # A threshold no pair of photos reaches: the same two photos are now "different".
    code, out, _ = cli(capsys, "verify", a, b, "--json", "--set", "recognizer.threshold=0.99")
    strict = json.loads(out)
    assert code == 1 and strict["same"] is False and strict["threshold"] == 0.99
    assert strict["similarity"] == pytest.approx(xs["similarity"], abs=1e-6)
    # Another model gives another similarity for the same pair.
    code, out, _ = cli(capsys, "verify", a, b, "--json", "--model", ASSETS / "edgeface_xxs.tflite")
    xxs = json.loads(out)
    assert code == 0 and xxs["same"] is True
    assert abs(xxs["similarity"] - xs["similarity"]) > 1e-3
    code, _, err = cli(capsys, "verify", a, b, "--set", "recognizer.treshold=0.5")
    assert code == 2 and "did you mean 'threshold'" in err and "Traceback" not in err


# --- bad input: one line, exit 2, nothing written ---------------------------------------------
@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    # No face: a real photo's background (the wall above the heads in the group photo).
    group = cv2.imread(str(SCENES / "group_6_faces.jpg"))
    no_face = tmp_path / "wall.png"
    cv2.imwrite(str(no_face), group[:60, :400])
    return {"text": text, "empty": empty, "no_face": no_face}


@pytest.mark.parametrize("case", ["missing", "text", "empty", "no_face", "two_faces", "group"])
def test_enroll_refuses_bad_images_and_writes_nothing(capsys, db_copy, bad_files, case):
    before = people(capsys, db_copy)
    path = {"missing": Path("/nonexistent/photo.jpg"),
            "two_faces": SCENES / "obama_biden_1.jpg",
            "group": SCENES / "group_6_faces.jpg"}.get(case) or bad_files[case]
    # A good photo first: the bad one after it must still stop the whole enrolment.
    code, _, err = cli(capsys, "enroll", "--name", "Newcomer", "--images",
                       PEOPLE / "kit_harington" / "kit_harington_1.jpg", path, "--db", db_copy)
    assert_user_error(code, err, str(path))
    assert people(capsys, db_copy) == before


def test_enroll_into_a_new_gallery_that_fails_creates_no_file(capsys, tmp_path, bad_files):
    db = tmp_path / "new.db"
    code, _, err = cli(capsys, "enroll", "--name", "X", "--images", bad_files["no_face"],
                       "--db", db)
    assert_user_error(code, err, "no face")
    assert not db.exists()


@pytest.mark.parametrize("args, needle", [
    (["identify", "/nonexistent.jpg"], "/nonexistent.jpg: no such file"),
    (["verify", str(PEOPLE / "obama" / "obama_4.jpg"), str(SCENES / "obama_biden_1.jpg")],
     "faces of similar size"),
    (["enroll", "--name", "  ", "--images", str(PEOPLE / "obama" / "obama_4.jpg")], "name"),
    (["enroll", "--name", "X", "--source", "/no/such/clip.mp4"], "/no/such/clip.mp4"),
    (["run", "--source", "/no/such/camera", "--no-preview"], "/no/such/camera"),
    (["remove", "--name", "Barak Obama", "--yes"], "did you mean 'Barack Obama'"),
    (["rename", "Nobody", "Somebody"], "Nobody"),
    (["rename", BIDEN, OBAMA], "already exists"),
    (["identify"], "IMAGE"),
    (["enroll", "--images", "x.jpg"], "--name"),
    (["run", "--max-frames", "0"], "--max-frames"),
    (["verify", "a.jpg", "b.jpg", "--threshold", "7"], "--threshold"),
    (["frobnicate"], "frobnicate"),
])
def test_user_mistakes_are_one_line_exit_2(capsys, db_copy, args, needle):
    before = people(capsys, db_copy)
    code, _, err = cli(capsys, *args, "--db", db_copy)
    assert_user_error(code, err, needle)
    assert people(capsys, db_copy) == before


def test_no_face_in_identify_is_reported_and_exit_1(capsys, gallery_db, bad_files):
    code, out, err = cli(capsys, "identify", bad_files["no_face"],
                         PEOPLE / "obama" / "obama_4.jpg", "--json", "--db", gallery_db)
    assert code == 1 and "Traceback" not in err
    res = json.loads(out)
    assert res[0]["faces"] == [] and res[1]["faces"][0]["name"] == OBAMA
    assert [line for line in error_lines(err) if "no face" in line] == [
        f"edgeface-cam: {bad_files['no_face']}: no face found"]


def test_rgba_and_greyscale_photos_are_converted(capsys, db_copy, tmp_path):
    grey = tmp_path / "obama_grey.png"
    cv2.imwrite(str(grey), cv2.imread(str(PEOPLE / "obama" / "obama_4.jpg"),
                                      cv2.IMREAD_GRAYSCALE))
    assert cv2.imread(str(grey), cv2.IMREAD_UNCHANGED).ndim == 2
    rgba = FIXTURES / "edge" / "rgba_32bit.png"
    assert cv2.imread(str(rgba), cv2.IMREAD_UNCHANGED).shape[2] == 4
    results = identify(capsys, db_copy, grey, rgba)
    assert [r["faces"][0]["name"] for r in results] == [OBAMA, OBAMA]
    code, _, err = cli(capsys, "enroll", "--name", "Obama RGBA", "--images", rgba, "--db",
                       db_copy)
    assert code == 0, err
    assert people(capsys, db_copy)["Obama RGBA"] == 1


def test_enroll_from_a_folder_and_from_a_video_source(capsys, db_copy):
    code, _, err = cli(capsys, "enroll", "--name", "Kit Harington", "--images",
                       PEOPLE / "kit_harington", "--db", db_copy)
    assert code == 0, err
    n_photos = len(list((PEOPLE / "kit_harington").iterdir()))
    assert people(capsys, db_copy)["Kit Harington"] == n_photos
    code, _, err = cli(capsys, "enroll", "--name", "Lin-Manuel Miranda", "--source",
                         ROOT / "assets" / "demo" / "lin_manuel_miranda_clip.mp4", "--count", "3",
                         "--db", db_copy)
    assert code == 0, err
    assert people(capsys, db_copy)["Lin-Manuel Miranda"] == 3
    # The frames collected from the clip (where other cast members are sometimes the largest
    # face) recognise him in the separate enrolment photo.
    (r,) = identify(capsys, db_copy, PEOPLE / "lin_manuel_miranda" / "lin_manuel_miranda_1.png")
    assert r["faces"][0]["name"] == "Lin-Manuel Miranda"
    assert people(capsys, db_copy)[OBAMA] == 3  # nobody else changed


def test_enroll_from_a_folder_source_collects_distinct_photos(capsys, db_copy):
    code, _, err = cli(capsys, "enroll", "--name", "Rose Leslie", "--source",
                       PEOPLE / "rose_leslie", "--count", "2", "--min-quality", "0",
                       "--db", db_copy)
    assert code == 0, err
    (r,) = identify(capsys, db_copy, SCENES / "kit_harington_rose_leslie.jpg")
    assert "Rose Leslie" in names(r)


def test_enroll_from_a_source_that_runs_out_writes_nothing(capsys, db_copy):
    before = people(capsys, db_copy)
    one_photo = PEOPLE / "obama" / "obama_4.jpg"  # a single-image source: one frame only
    code, _, err = cli(capsys, "enroll", "--name", "Y", "--source", one_photo, "--count", "2",
                       "--db", db_copy)
    assert_user_error(code, err, "only 1 of 2 good frames", "nothing written")
    assert people(capsys, db_copy) == before


# --- gallery management ------------------------------------------------------------------------
def test_rename_and_remove(capsys, db_copy):
    code, _, _ = cli(capsys, "rename", BIDEN, "Joseph Biden", "--db", db_copy)
    assert code == 0
    assert people(capsys, db_copy) == {OBAMA: 3, "Joseph Biden": 1}
    (r,) = identify(capsys, db_copy, PEOPLE / "biden" / "biden_2.jpg")
    assert r["faces"][0]["name"] == "Joseph Biden"
    # Not a terminal and no --yes: refuse rather than guess.
    code, _, err = cli(capsys, "remove", "--name", "Joseph Biden", "--db", db_copy)
    assert_user_error(code, err, "--yes")
    assert "Joseph Biden" in people(capsys, db_copy)
    code, _, _ = cli(capsys, "remove", "--name", "Joseph Biden", "--yes", "--db", db_copy)
    assert code == 0
    assert people(capsys, db_copy) == {OBAMA: 3}


def test_reembed_brings_back_faces_from_another_model(capsys, db_copy):
    with sqlite3.connect(db_copy) as db:
        db.execute("UPDATE embeddings SET model_fingerprint = 'an-older-model'")
    code, out, _ = cli(capsys, "list", "--json", "--db", db_copy)
    assert {p["name"]: p["other_model"] for p in json.loads(out)} == {OBAMA: 3, BIDEN: 1}
    (r,) = identify(capsys, db_copy, PEOPLE / "obama" / "obama_4.jpg")
    assert names(r) == [None]  # another model's vectors are never compared
    code, out, err = cli(capsys, "reembed", "--db", db_copy)
    assert code == 0, err
    assert out.startswith("re-embedded 4 face(s)")
    (r,) = identify(capsys, db_copy, PEOPLE / "obama" / "obama_4.jpg")
    assert names(r) == [OBAMA]


# --- config and flags ----------------------------------------------------------------------------
def test_bad_config_value_names_the_key_and_writes_nothing(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detector:\n  backend: foo\n")
    db = tmp_path / "g.db"
    code, _, err = cli(capsys, "enroll", "--name", "X", "--images",
                       PEOPLE / "obama" / "obama_4.jpg", "--config", cfg, "--db", db)
    assert_user_error(code, err, "detector.backend: 'foo' is not one of yunet, blazeface, "
                                 "mediapipe")
    assert not db.exists()


def test_config_from_environment_variable(capsys, tmp_path, monkeypatch, gallery_db):
    cfg = tmp_path / "env.yaml"
    cfg.write_text(f"gallery:\n  path: {gallery_db}\n")
    monkeypatch.setenv("EDGEFACE_CAM_CONFIG", str(cfg))
    code, out, _ = cli(capsys, "list", "--json")
    assert code == 0 and {p["name"] for p in json.loads(out)} == {OBAMA, BIDEN}


def test_flags_override_the_config(capsys, tmp_path, gallery_db):
    cfg = tmp_path / "strict.yaml"
    other = tmp_path / "other.db"
    cfg.write_text(f"recognizer:\n  threshold: 0.99\ngallery:\n  path: {other}\n"
                   "camera:\n  source: /dev/no-such-camera\n")
    photo = PEOPLE / "obama" / "obama_4.jpg"
    # The config's gallery does not exist: --db wins.
    code, out, _ = cli(capsys, "list", "--json", "--config", cfg, "--db", gallery_db)
    assert {p["name"] for p in json.loads(out)} == {OBAMA, BIDEN}
    # At the config's threshold 0.99 nobody is that similar; --threshold brings the default back.
    (r,) = identify(capsys, gallery_db, photo, extra=("--config", str(cfg)))
    assert names(r) == [None]
    (r,) = identify(capsys, gallery_db, photo, extra=("--config", str(cfg), "--threshold",
                                                      "0.35"))
    assert names(r) == [OBAMA]
    # The config's camera does not exist: --source wins.
    events = tmp_path / "events.jsonl"
    code, _, err = cli(capsys, "run", "--config", cfg, "--db", gallery_db, "--source",
                       SCENES / "obama_biden_1.jpg", "--no-preview", "--events", events,
                       "--max-frames", "1")
    assert code == 0, err
    assert not other.exists()


def test_run_on_a_file_writes_one_event_per_face_track(capsys, tmp_path, gallery_db):
    events = tmp_path / "events.jsonl"
    code, _, err = cli(capsys, "run", "--source", SCENES / "obama_biden_1.jpg", "--no-preview",
                       "--events", events, "--db", gallery_db, "--log-level", "warning")
    assert code == 0, err
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert sorted(e["name"] for e in lines) == sorted([OBAMA, BIDEN])
    for e in lines:
        assert e["event"] == "recognized" and len(e["box"]) == 4
        assert {"time", "source", "track_id", "score"} <= set(e)
    assert "frames 1" in err  # the run's summary goes to stderr, events elsewhere


# --- demo, bench, doctor, help -------------------------------------------------------------------
@pytest.mark.slow
def test_demo_recognises_lin_manuel_miranda(capsys, tmp_path):
    code, out, err = cli(capsys, "demo", "--no-preview")
    assert code == 0, err
    lines = out.splitlines()
    events = [json.loads(line) for line in lines[:-1]]
    assert events and all(e["event"] in ("recognized", "unknown") for e in events)
    assert any(e["name"] == "Lin-Manuel Miranda" for e in events)
    assert {e["name"] for e in events} <= {"Lin-Manuel Miranda", None}
    summary = lines[-1]
    assert summary.startswith("demo: 275 frames") and "recognised: Lin-Manuel Miranda" in summary
    assert not (tmp_path / "home" / ".local").exists()  # the user's gallery is untouched


def test_bench_reports_stages_fps_and_embedding_time(capsys):
    code, out, err = cli(capsys, "bench", "--frames", "15", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["frames"] == 15 and rep["fps"] > 0
    for stage in ("detect", "align", "total"):
        st = rep["stages_ms"][stage]
        assert 0 < st["median"] <= st["p90"]
    assert 0 < rep["embed_ms_per_face"]["median"] <= rep["embed_ms_per_face"]["p90"]
    code, out, _ = cli(capsys, "bench", "--frames", "5")
    assert code == 0 and "fps end to end" in out and "embedding per face" in out


def test_bench_on_a_given_gallery_leaves_it_unchanged(capsys, db_copy):
    before = people(capsys, db_copy)
    code, _, err = cli(capsys, "bench", "--frames", "3", "--db", db_copy)
    assert code == 0, err
    assert people(capsys, db_copy) == before


def test_bench_refuses_a_live_source(capsys):
    code, _, err = cli(capsys, "bench", "--source", "0")
    assert_user_error(code, err, "not a file")


def test_doctor_passes_here_and_reports_a_broken_config(capsys, tmp_path, gallery_db):
    code, out, err = cli(capsys, "doctor", "--no-camera", "--db", gallery_db)
    assert code == 0, out + err
    status = {line.split()[1]: line.split()[0] for line in out.splitlines()
              if not line.lstrip().startswith("fix:")}
    assert {"config", "model", "self-test", "detector", "gallery"} <= set(status)
    assert "camera" not in status  # --no-camera
    assert "FAIL" not in status.values()
    bad = tmp_path / "bad.yaml"
    bad.write_text("recognizer:\n  model: missing.tflite\n")
    code, out, _ = cli(capsys, "doctor", "--no-camera", "--config", bad, "--db", gallery_db)
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failed and "model" in failed[0] and "missing.tflite" in failed[0]
    # A config that does not load is reported as a failed check, not an error exit.
    bad.write_text("detector:\n  backend: foo\n")
    code, out, _ = cli(capsys, "doctor", "--no-camera", "--config", bad, "--db", gallery_db)
    assert code == 1 and any(line.startswith("FAIL") and "detector.backend" in line
                             for line in out.splitlines())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"edgeface-cam {command}" in out
    assert "--config PATH" in out and "--db PATH" in out and "--log-level" in out


def test_parser_knows_exactly_the_documented_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)


def test_console_entry_point_runs_as_a_module(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("EDGEFACE_CAM_CONFIG", None)
    out = subprocess.run([sys.executable, "-m", "edgeface_cam", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "demo" in out.stdout
    out = subprocess.run([sys.executable, "-m", "edgeface_cam", "verify", "a.jpg"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "IMAGE_B" in out.stderr
