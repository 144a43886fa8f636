"""The SQLite gallery: recognition on real photos, atomicity, concurrency, crash safety."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam.config import RecognizerConfig
from edgeface_cam.gallery import Gallery, GalleryError, default_threshold
from edgeface_cam.gallery import store as gallery_mod
from edgeface_cam.threshold import FALLBACK_THRESHOLD
from tests.conftest import ASSETS, PEOPLE, ROOT

pytestmark = pytest.mark.device

# A Gallery given no threshold: recognizer.threshold's one definition (auto, which needs a
# model card's calibration, so the documented fixed fallback; see edgeface_cam.threshold).
DEFAULT_THRESHOLD = default_threshold()
D = 512
FP = "a" * 64  # a model fingerprint (sha256 hex)
OTHER_FP = "b" * 64


def unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.5) -> np.ndarray:
    """A vector at cosine ~0.9 from v (random 512-d vectors are at ~0 from each other)."""
    return v + noise * unit(rng, 1, v.shape[-1])[0]


def fixture_crops(*names: str) -> list[np.ndarray]:
    """Real face photos, resized to 112x112: stand-ins for aligned crops in the pure tests."""
    return [cv2.resize(cv2.imread(str(PEOPLE / n)), (112, 112)) for n in names]


def raw_counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as c:
        return (c.execute("SELECT COUNT(*) FROM people").fetchone()[0],
                c.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])


def run_child(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def gpath(tmp_path: Path) -> Path:
    return tmp_path / "gallery.db"


# ---- real faces ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_embed():
    """Photo path -> (aligned crop, embedding) with the shipped detector and EdgeFace-XS."""
    if not (ASSETS / "edgeface_xs.tflite").is_file():
        pytest.skip("assets/edgeface_xs.tflite not exported yet (training.export writes it)")
    from edgeface_cam.align import align_face
    from edgeface_cam.detect import YuNetDetector
    from edgeface_cam.embed import Embedder

    det, emb = YuNetDetector(), Embedder(num_threads=1)

    def run(rel: str) -> tuple[np.ndarray, np.ndarray]:
        img = cv2.imread(str(PEOPLE / rel))
        face = det.detect(img)[0]
        crop = align_face(img, face.landmarks, face.landmark_names)
        return crop, emb.embed_one(crop)

    run.fingerprint = emb.fingerprint
    return run


def test_real_faces_enrol_and_recognise(face_embed, gpath: Path):
    g = Gallery(gpath, face_embed.fingerprint)
    crops, embs = zip(*[face_embed(f"obama/obama_{i}.jpg") for i in (1, 2, 3)], strict=True)
    g.enroll("Barack Obama", np.stack(embs), crops=list(crops),
             sources=[f"obama_{i}.jpg" for i in (1, 2, 3)], qualities=[1.0, 0.9, 0.8])
    crop, emb = face_embed("biden/biden_1.jpg")
    g.enroll("Joe Biden", emb[None], crops=[crop])

    for probe in ("obama/obama_4.jpg", "obama/obama_5.jpg"):
        m = g.match(face_embed(probe)[1])
        assert m.name == "Barack Obama", (probe, m)
    m = g.match(face_embed("biden/biden_2.jpg")[1])
    assert m.name == "Joe Biden", m
    m = g.match(face_embed("kit_harington/kit_harington_1.jpg")[1])
    assert m.name is None and m.person_id is None and m.score < DEFAULT_THRESHOLD, m

    # The batch form agrees with the single form.
    probes = np.stack([face_embed(p)[1] for p in ("obama/obama_4.jpg", "biden/biden_2.jpg",
                                                  "kit_harington/kit_harington_2.jpg")])
    assert [m.name for m in g.match_many(probes)] == ["Barack Obama", "Joe Biden", None]
    # Stored crops are real JPEGs of the aligned faces.
    with sqlite3.connect(gpath) as c:
        blob = c.execute("SELECT crop FROM embeddings LIMIT 1").fetchone()[0]
    assert cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)
    assert len(blob) < 12_000
    g.close()


# ---- basics ----------------------------------------------------------------------------------
def test_schema_and_pragmas(gpath: Path):
    Gallery(gpath, FP).close()
    with sqlite3.connect(gpath) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == gallery_mod.SCHEMA_VERSION
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = {r[1] for r in c.execute("PRAGMA table_info(embeddings)")}
        assert {"person_id", "vector", "dim", "model_fingerprint", "quality", "source", "crop",
                "created_at"} <= cols
        fks = c.execute("PRAGMA foreign_key_list(embeddings)").fetchall()
        assert fks[0][2] == "people" and fks[0][6] == "CASCADE"


def test_enrol_match_people(gpath: Path, rng):
    g = Gallery(gpath, FP)
    a, b = unit(rng, 3), unit(rng, 2)
    pid = g.enroll("  Ann  ", a, notes="front door")
    g.enroll("Bob", b)
    assert [(p.name, p.embeddings, p.other_model, p.notes) for p in g.people()] == [
        ("Ann", 3, 0, "front door"), ("Bob", 2, 0, None)]
    assert len(g) == 5
    m = g.match(near(a[2], rng))
    assert (m.name, m.person_id) == ("Ann", pid) and 0.8 < m.score < 1.0
    assert g.match(near(b[0], rng)).name == "Bob"
    stranger = g.match(unit(rng, 1)[0])
    assert stranger.name is None and stranger.score < 0.3
    # Adding to an existing person (names match case-insensitively) keeps one person.
    assert g.enroll("ann", unit(rng, 2)) == pid
    assert [(p.name, p.embeddings) for p in g.people()] == [("Ann", 5), ("Bob", 2)]


def test_threshold_decides_unknown(gpath: Path, rng):
    a = unit(rng, 1)
    probe = near(a[0], rng, noise=1.0)  # cosine about 0.7
    cos = float(probe @ a[0] / np.linalg.norm(probe))
    with Gallery(gpath, FP, threshold=cos - 0.01) as g:
        g.enroll("Ann", a)
        assert g.match(probe).name == "Ann"
    with Gallery(gpath, FP, threshold=cos + 0.01) as g:
        m = g.match(probe)
        assert m.name is None and abs(m.score - cos) < 1e-5


def test_empty_gallery_and_bad_inputs(gpath: Path, rng):
    g = Gallery(gpath, FP)
    assert g.match(unit(rng, 1)[0]).name is None
    assert g.match_many(unit(rng, 3)) and all(m.name is None for m in g.match_many(unit(rng, 3)))
    with pytest.raises(GalleryError, match="NaN"):
        g.enroll("Ann", np.full((1, D), np.nan))
    with pytest.raises(GalleryError, match="all-zero"):
        g.enroll("Ann", np.zeros((1, D)))
    with pytest.raises(GalleryError, match="2 crops"):
        g.enroll("Ann", unit(rng, 3), crops=fixture_crops("obama/obama_1.jpg", "biden/biden_1.jpg"))
    with pytest.raises(GalleryError, match="crop 0 must be"):
        g.enroll("Ann", unit(rng, 1), crops=[np.zeros((112, 112, 3), np.float64)])
    assert g.people() == []
    g.enroll("Ann", unit(rng, 1))
    with pytest.raises(GalleryError, match="embedding size 128"):
        g.enroll("Bob", unit(rng, 1, 128))
    with pytest.raises(GalleryError, match="embedding size 128"):
        g.match(unit(rng, 1, 128)[0])
    with pytest.raises(GalleryError, match="threshold"):
        Gallery(gpath, FP, threshold=2.0)
    with pytest.raises(GalleryError, match="fingerprint"):
        Gallery(gpath, "")


@pytest.mark.parametrize("name,why", [
    ("", "empty"), ("   ", "empty"), ("x" * 65, "too long"), ("bo\nb", "control"),
    ("al\x00ice", "control"), ("zero\u200bwidth", "control"), ("tab\tname", "control"),
    (42, "must be text"),
])
def test_bad_names(gpath: Path, rng, name, why):
    g = Gallery(gpath, FP)
    with pytest.raises(GalleryError, match=why) as e:
        g.enroll(name, unit(rng, 1))
    assert "\n" not in str(e.value)
    assert g.people() == []


def test_good_names_are_trimmed_and_unicode(gpath: Path, rng):
    g = Gallery(gpath, FP)
    g.enroll("  Zoë Saldaña ", unit(rng, 1))
    g.enroll("x" * 64, unit(rng, 1))
    assert {p.name for p in g.people()} == {"Zoë Saldaña", "x" * 64}


def test_rename_and_remove(gpath: Path, rng):
    g = Gallery(gpath, FP)
    a = unit(rng, 2)
    g.enroll("Ann", a)
    g.enroll("Bob", unit(rng, 1))
    g.rename("ann", "Anna")
    assert g.match(a[0]).name == "Anna"  # the in-memory matrix follows
    g.rename("Anna", "ANNA")  # a case change of the same person is fine
    with pytest.raises(GalleryError, match="already exists"):
        g.rename("ANNA", "bob")
    with pytest.raises(GalleryError, match="no person named 'Cy'"):
        g.rename("Cy", "Dee")
    g.remove("anna")
    assert [p.name for p in g.people()] == ["Bob"]
    assert raw_counts(gpath) == (1, 1)  # her embeddings went with her (ON DELETE CASCADE)
    assert g.match(a[0]).name is None
    with pytest.raises(GalleryError, match="no person named"):
        g.remove("Anna")


# ---- atomicity and crash safety --------------------------------------------------------------
def test_enrol_is_atomic(gpath: Path, rng, monkeypatch):
    g = Gallery(gpath, FP)
    g.enroll("Bob", unit(rng, 2), crops=fixture_crops("biden/biden_1.jpg", "biden/biden_2.jpg"))
    real, calls = gallery_mod._encode_crop, []

    def fail_on_third(crop):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure mid-enrolment")
        return real(crop)

    monkeypatch.setattr(gallery_mod, "_encode_crop", fail_on_third)
    crops = fixture_crops(*[f"obama/obama_{i}.jpg" for i in range(1, 6)])
    with pytest.raises(RuntimeError, match="simulated"):
        g.enroll("Barack Obama", unit(rng, 5), crops=crops)
    assert len(calls) == 3  # it failed after the person and two embeddings were written
    calls.clear()
    with pytest.raises(RuntimeError, match="simulated"):
        g.enroll("Bob", unit(rng, 5), crops=crops)  # adding to an existing person
    assert [(p.name, p.embeddings) for p in g.people()] == [("Bob", 2)]
    assert raw_counts(gpath) == (1, 2)  # another connection sees nothing either
    monkeypatch.setattr(gallery_mod, "_encode_crop", real)
    g.enroll("Barack Obama", unit(rng, 5), crops=crops)  # and the gallery is still usable
    assert raw_counts(gpath) == (2, 7)


ENROL_LOOP = """
    import sys, numpy as np
    from edgeface_cam.gallery import Gallery
    path, tag, n, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    g = Gallery(path, "a" * 64)
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(per)]
    print("ready", flush=True)
    if len(sys.argv) > 5:  # wait for "go" so that several writers start together
        sys.stdin.readline()
    for i in range(n):
        g.enroll(f"{tag}-{i}", rng.standard_normal((per, 512)), crops=crops,
                 sources=["loop"] * per)
        if i % 5 == 4:
            g.remove(f"{tag}-{i - 2}")
    print("done", flush=True)
"""


def consistent(path: Path, per: int) -> tuple[int, int]:
    """integrity_check ok, no dangling rows, every person with a whole enrolment."""
    with sqlite3.connect(path, timeout=10) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
        counts = [r[0] for r in c.execute(
            "SELECT COUNT(e.id) FROM people p LEFT JOIN embeddings e ON e.person_id = p.id "
            "GROUP BY p.id")]
        assert all(n == per for n in counts), counts
        return len(counts), c.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


@pytest.mark.slow
def test_sigkill_mid_enrolment_leaves_a_consistent_gallery(gpath: Path):
    Gallery(gpath, FP).close()
    per, kills, enrolled_before = 4, 50, []
    r = random.Random(1)
    for k in range(kills):
        p = run_child(ENROL_LOOP, str(gpath), f"k{k}", "100000", str(per))
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(r.uniform(0.0, 0.25))  # land anywhere inside the enrolment loop
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
        people, _ = consistent(gpath, per)
        enrolled_before.append(people)
    assert enrolled_before[-1] > kills  # the children really were writing when killed
    g = Gallery(gpath, FP)  # and the service opens it and matches
    assert len(g.people()) == enrolled_before[-1] and len(g) == per * enrolled_before[-1]


@pytest.mark.slow
def test_two_processes_never_see_database_is_locked(gpath: Path, rng):
    Gallery(gpath, FP).close()
    reader_code = """
        import os, sys, time, numpy as np
        from edgeface_cam.gallery import Gallery
        g = Gallery(sys.argv[1], "a" * 64)
        rng = np.random.default_rng(1)
        print("ready", flush=True)
        reloads, matches = 0, 0
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end and not os.path.exists(sys.argv[3]):
            reloads += g.refresh()
            g.match(rng.standard_normal(512))
            g.people()
            matches += 1
        g.refresh()
        print(reloads, matches, len(g.people()), len(g), flush=True)
    """
    n, kept = 40, 40 - 40 // 5  # each writer removes every fifth person it enrolled
    total = 2 * kept + 20
    stop = gpath.parent / "stop"
    reader = run_child(reader_code, str(gpath), "90", str(stop))
    writers = [run_child(ENROL_LOOP, str(gpath), f"w{k}", str(n), "3", "wait",
                         stdin=subprocess.PIPE) for k in range(2)]
    for p in [reader, *writers]:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    g = Gallery(gpath, FP)
    for w in writers:
        w.stdin.write("go\n")
        w.stdin.flush()
    # The main process writes too, through its own connection: three writers, one reader.
    for i in range(20):
        g.enroll(f"main-{i}", unit(rng, 2))
        g.refresh()
    for w in writers:
        _, w_err = w.communicate(timeout=120)
        assert w.returncode == 0 and "locked" not in w_err, w_err
    stop.touch()
    r_out, r_err = reader.communicate(timeout=120)
    assert reader.returncode == 0 and "locked" not in r_err, r_err
    reloads, matches, seen, embeddings = map(int, r_out.split())
    assert reloads >= 2 and matches > reloads  # it saw the other processes' enrolments
    assert seen == total and embeddings == 2 * kept * 3 + 20 * 2
    g.refresh()
    assert len(g.people()) == total


def test_refresh_picks_up_another_process(gpath: Path, rng):
    g = Gallery(gpath, FP)
    assert g.refresh() is False  # nothing changed: no reload
    v = unit(rng, 1)
    np.save(gpath.parent / "v.npy", v)
    p = run_child("""
        import sys, numpy as np
        from edgeface_cam.gallery import Gallery
        g = Gallery(sys.argv[1], "a" * 64)
        g.enroll("Zed", np.load(sys.argv[2]))
    """, str(gpath), str(gpath.parent / "v.npy"))
    assert p.wait(60) == 0, p.stderr.read()
    assert g.match(v[0]).name is None  # not until refresh
    assert g.refresh() is True
    assert g.match(v[0]).name == "Zed"
    assert g.refresh() is False
    p = run_child("""
        import sys
        from edgeface_cam.gallery import Gallery
        Gallery(sys.argv[1], "a" * 64).remove("zed")
    """, str(gpath))
    assert p.wait(60) == 0, p.stderr.read()
    assert g.refresh() is True and g.match(v[0]).name is None


# ---- model fingerprints ----------------------------------------------------------------------
def pixel_model(crops: list[np.ndarray]) -> np.ndarray:
    """A stand-in 'new model': a fixed random projection of the crop's grey pixels."""
    proj = np.random.default_rng(7).standard_normal((32 * 32, D)).astype(np.float32)
    x = np.stack([cv2.resize(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), (32, 32)).ravel()
                  for c in crops]).astype(np.float32)
    x = (x - x.mean(1, keepdims=True)) @ proj
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_other_model_is_never_compared_and_reembed_fixes_it(gpath: Path, rng):
    files = {"Obama": ["obama/obama_1.jpg", "obama/obama_2.jpg"],
             "Biden": ["biden/biden_1.jpg", "biden/biden_2.jpg"]}
    old = Gallery(gpath, OTHER_FP)
    old_vectors = {}
    for name, fs in files.items():
        old_vectors[name] = unit(rng, len(fs))
        old.enroll(name, old_vectors[name], crops=fixture_crops(*fs))
    old.enroll("NoCrop", unit(rng, 1))  # enrolled without a crop: cannot be re-embedded
    old.close()

    g = Gallery(gpath, FP)
    assert g.stale() == 5 and len(g) == 0
    assert {p.name: (p.embeddings, p.other_model) for p in g.people()} == {
        "Biden": (0, 2), "NoCrop": (0, 1), "Obama": (0, 2)}
    # Even an exact copy of a stored vector is not matched: it came from another model.
    assert g.match(old_vectors["Obama"][0]).name is None

    assert g.reembed(pixel_model) == 4
    assert g.stale() == 1 and len(g) == 4
    probe = pixel_model(fixture_crops("obama/obama_1.jpg"))[0]
    assert g.match(probe).name == "Obama"
    assert g.match(pixel_model(fixture_crops("biden/biden_2.jpg"))[0]).name == "Biden"
    assert g.remove_stale() == 1
    assert g.stale() == 0 and sorted(p.name for p in g.people()) == ["Biden", "Obama"]


# ---- read-only file and full disk ------------------------------------------------------------
def make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    # root ignores permission bits; the immutable attribute stops even root.
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)],
                                                    capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is unavailable: cannot make a file "
                    "read-only")


def undo_read_only(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def test_read_only_file_matches_but_refuses_writes(gpath: Path, rng):
    a = unit(rng, 2)
    with Gallery(gpath, FP) as g:
        g.enroll("Ann", a)
    make_read_only(gpath)
    try:
        g = Gallery(gpath, FP)
        assert g.read_only
        assert g.match(a[0]).name == "Ann"
        for write in (lambda: g.enroll("Bob", unit(rng, 1)), lambda: g.remove("Ann"),
                      lambda: g.rename("Ann", "Bo")):
            with pytest.raises(GalleryError, match="read-only"):
                write()
        assert g.match(a[1]).name == "Ann"
        assert g.refresh() is False
        g.close()
    finally:
        undo_read_only(gpath)


def test_full_disk_refuses_enrolment_but_matching_goes_on(gpath: Path, rng):
    g = Gallery(gpath, FP)
    a = unit(rng, 2)
    g.enroll("Ann", a)
    # SQLite's page limit makes any growth fail exactly as a full disk does (SQLITE_FULL).
    pages = g.db.execute("PRAGMA page_count").fetchone()[0]
    g.db.execute(f"PRAGMA max_page_count = {pages}")
    crops = fixture_crops(*[f"obama/obama_{i}.jpg" for i in range(1, 6)])
    with pytest.raises(GalleryError, match="disk full") as e:
        g.enroll("Barack Obama", unit(rng, 5), crops=crops)
    assert "\n" not in str(e.value)
    assert g.match(a[0]).name == "Ann" and len(g) == 2
    assert [p.name for p in g.people()] == ["Ann"]


def test_not_a_gallery(tmp_path: Path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a usable gallery"):
        Gallery(junk, FP)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE notes(x)")
    with pytest.raises(GalleryError, match="not an edgeface-cam gallery"):
        Gallery(other, FP)
    with pytest.raises(GalleryError, match="is a folder"):
        Gallery(tmp_path, FP)
    newer = tmp_path / "newer.db"
    Gallery(newer, FP).close()
    with sqlite3.connect(newer) as c:
        c.execute("PRAGMA user_version = 99")
    with pytest.raises(GalleryError, match="newer"):
        Gallery(newer, FP)


def test_match_10k_groups_people_inserted_in_random_order(gpath: Path, rng):
    """10k embeddings of 2,500 people, inserted in random order (the matrix must group them)."""
    Gallery(gpath, FP).close()
    vecs = unit(rng, 10_000)
    order = rng.permutation(10_000)
    with sqlite3.connect(gpath) as c:
        c.executemany("INSERT INTO people(id, name, created_at) VALUES (?, ?, 't')",
                      [(p + 1, f"p{p}") for p in range(2500)])
        c.executemany("INSERT INTO embeddings(person_id, vector, dim, model_fingerprint, "
                      "created_at) VALUES (?, ?, ?, ?, 't')",
                      [(int(i) // 4 + 1, vecs[i].tobytes(), D, FP) for i in order])
    g = Gallery(gpath, FP)
    assert len(g) == 10_000
    for i in (0, 4321, 9999):
        assert g.match(near(vecs[i], rng)).name == f"p{i // 4}"
    probes = np.stack([near(vecs[i], rng) for i in range(0, 10_000, 997)])
    assert [m.name for m in g.match_many(probes)] == [f"p{i // 4}" for i in range(0, 10_000, 997)]
    # Speed is a benchmark (benchmarks/gallery_match.py, BENCHMARKS.md), never a timed test.


def test_threshold_defaults_to_the_config_definition(gpath: Path):
    with Gallery(gpath, FP) as g:
        assert RecognizerConfig().threshold == "auto"
        assert g.threshold == default_threshold() == FALLBACK_THRESHOLD


# ---- one name rule (issue 12 #3) -------------------------------------------------------------
def test_one_name_rule_for_lookups_enrol_remove_and_rename(gpath: Path, rng):
    """Trimmed and compared case-insensitively, also beyond ASCII; the stored spelling wins."""
    g = Gallery(gpath, FP)
    g.enroll("OBAMA", unit(rng, 1))
    g.enroll("Zoë Saldaña", unit(rng, 1))
    obama = g.find_person("  obama ")
    assert obama is not None and obama.name == "OBAMA" and obama.embeddings == 1
    assert g.enroll("obama", unit(rng, 2)) == obama.id  # into the stored person...
    assert g.find_person("Obama").embeddings == 3  # ...under the stored spelling
    assert g.enroll(" ZOË SALDAÑA", unit(rng, 1)) == g.find_person("zoë saldaña").id
    assert [(p.name, p.embeddings) for p in g.people()] == [("OBAMA", 3), ("Zoë Saldaña", 2)]
    assert g.rename("ZOË saldaña ", "Zoe") == "Zoë Saldaña"  # the source by the rule too
    with pytest.raises(GalleryError, match="'OBAMA' already exists"):
        g.rename("zoe", "obama")
    assert g.remove(" ZOE") == "Zoe"
    assert g.find_person("Zoë Saldaña") is None and [p.name for p in g.people()] == ["OBAMA"]


def test_did_you_mean_names_the_stored_spelling(gpath: Path, rng):
    g = Gallery(gpath, FP)
    g.enroll("Barack OBAMA", unit(rng, 1))
    g.enroll("Joe Biden", unit(rng, 1))
    assert g.suggest("barak obama") == "Barack OBAMA" and g.suggest("Kit Harington") is None
    with pytest.raises(GalleryError, match=r"no person named 'Barak Obama' in the gallery "
                                           r"\(did you mean 'Barack OBAMA'\?\)"):
        g.remove("Barak Obama")
    with pytest.raises(GalleryError, match=r"'joe bidn'.*did you mean 'Joe Biden'"):
        g.rename("joe bidn", "Joseph")
    assert len(g.people()) == 2


# ---- a refused file is left as it was (issue 12 #4) --------------------------------------------
def _foreign_file(path: Path, how: str) -> None:
    if how == "junk":
        path.write_bytes(b"this is not sqlite" * 100)
        return
    with sqlite3.connect(path) as c:
        if how == "wal":
            c.execute("PRAGMA journal_mode = WAL")
        c.execute("CREATE TABLE notes(x)")
        c.execute("INSERT INTO notes VALUES ('keep me')")
        if how == "versioned":  # somebody else's schema version, not our tables
            c.execute("PRAGMA user_version = 7")
    c.close()


@pytest.mark.parametrize("how,why", [
    ("rollback", "not an edgeface-cam gallery"), ("wal", "not an edgeface-cam gallery"),
    ("versioned", "not an edgeface-cam gallery"), ("junk", "not a usable gallery"),
])
def test_refused_file_is_not_modified(tmp_path: Path, how: str, why: str):
    path = tmp_path / "someone-elses.sqlite"
    _foreign_file(path, how)
    before = path.read_bytes()
    with pytest.raises(GalleryError, match=why) as e:
        Gallery(path, FP)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no -wal, no -shm


# ---- a gallery in a read-only folder can be read (issue 12 #5) --------------------------------
READ_ONLY_FOLDER = """
    import json, os, sys, numpy as np
    from edgeface_cam.gallery import Gallery, GalleryError
    if os.geteuid() == 0:  # imported as root; now a normal user, to whom chmod applies
        os.setgid(65534)
        os.setuid(65534)
    g = Gallery(sys.argv[1], "a" * 64)
    out = {"read_only": g.read_only, "people": [p.name for p in g.people()],
           "match": g.match(np.load(sys.argv[2])[0]).name, "stale": g.stale()}
    for what, write in (("enroll", lambda: g.enroll("Bob", np.ones((1, 512)))),
                        ("remove", lambda: g.remove("Ann")),
                        ("rename", lambda: g.rename("Ann", "Anna"))):
        try:
            write()
            out[what] = "written"
        except GalleryError as e:
            out[what] = str(e)
    g.close()
    print(json.dumps(out))
"""


@pytest.mark.parametrize("leftovers", [False, True])
def test_gallery_in_a_read_only_folder_reads_and_refuses_writes(rng, leftovers: bool):
    import json
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ro-gallery-", dir="/tmp"))  # nobody can reach it
    try:
        gpath, a = folder / "gallery.db", unit(rng, 2)
        np.save(folder / "probe.npy", a[:1])
        with Gallery(gpath, FP) as g:
            g.enroll("Ann", a)
        if leftovers:  # a writer killed with the file open leaves its -wal and -shm behind
            p = run_child(KEEP_OPEN, str(gpath))
            assert p.stdout.readline().strip() == "open", p.stderr.read()
            p.kill()
            p.wait()
            assert Path(f"{gpath}-wal").exists() and Path(f"{gpath}-shm").exists()
        for f in folder.iterdir():
            os.chown(f, 65534, 65534) if os.geteuid() == 0 else None
            f.chmod(0o644)
        folder.chmod(0o555)
        if os.geteuid() == 0:
            os.chown(folder, 65534, 65534)
        before = sorted(f.name for f in folder.iterdir())
        p = run_child(READ_ONLY_FOLDER, str(gpath), str(folder / "probe.npy"))
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        got = json.loads(out)
        people = ["Ann", "Cy"] if leftovers else ["Ann"]  # Cy was committed, in the WAL
        assert got["read_only"] and got["people"] == people and got["match"] == "Ann", got
        for what in ("enroll", "remove", "rename"):
            assert got[what].startswith(f"cannot {what.replace('enroll', 'enrol')} ") \
                and "read-only" in got[what] and "\n" not in got[what], got
        assert sorted(f.name for f in folder.iterdir()) == before
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


KEEP_OPEN = """
    import sys, time
    from edgeface_cam.gallery import Gallery
    g = Gallery(sys.argv[1], "a" * 64)
    g.enroll("Cy", [[1.0] * 512])
    print("open", flush=True)
    time.sleep(60)
"""


# ---- reembed is one transaction (issue 12 #11) ------------------------------------------------
REEMBED = """
    import sys, time, numpy as np
    from edgeface_cam.gallery import Gallery
    g = Gallery(sys.argv[1], "a" * 64)
    def slow_model(crops):
        print("batch", flush=True)
        time.sleep(0.01)
        return np.random.default_rng(len(crops)).standard_normal((len(crops), 512))
    print(g.reembed(slow_model, batch_size=2), flush=True)
"""


def fingerprints(path: Path) -> dict[str, int]:
    with sqlite3.connect(path, timeout=10) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(c.execute("SELECT model_fingerprint, COUNT(*) FROM embeddings "
                              "GROUP BY model_fingerprint").fetchall())


@pytest.mark.slow
def test_sigkill_mid_reembed_leaves_old_or_new_never_a_mix(gpath: Path, rng):
    crops = fixture_crops("obama/obama_1.jpg", "biden/biden_1.jpg")
    with Gallery(gpath, OTHER_FP) as old:
        for i in range(20):
            old.enroll(f"p{i}", unit(rng, 2), crops=crops)
    r, outcomes = random.Random(3), set()
    for _ in range(12):
        p = run_child(REEMBED, str(gpath))
        for _ in range(r.randint(1, 20)):  # 20 batches of 2: land anywhere, the write included
            assert p.stdout.readline().strip() == "batch", p.stderr.read()
        time.sleep(r.uniform(0.0, 0.02))
        p.send_signal(signal.SIGKILL)
        p.wait()
        fps = fingerprints(gpath)
        assert fps in ({OTHER_FP: 40}, {FP: 40}), fps  # all old or all new
        outcomes.add(next(iter(fps)))
        if FP in fps:
            break
    assert OTHER_FP in outcomes  # killed before the end at least once, and nothing was mixed
    p = run_child(REEMBED, str(gpath))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert fingerprints(gpath) == {FP: 40}
    with Gallery(gpath, FP) as g:
        assert g.stale() == 0 and len(g) == 40


# ---- schema migrations ---------------------------------------------------------------------
def next_schema(monkeypatch, script: str, tables: tuple[str, ...]) -> None:
    """Pretend this program writes one schema version more, as the next issue's will."""
    monkeypatch.setattr(gallery_mod, "MIGRATIONS", [*gallery_mod.MIGRATIONS, script])
    monkeypatch.setattr(gallery_mod, "TABLES", [*gallery_mod.TABLES, tables])
    monkeypatch.setattr(gallery_mod, "SCHEMA_VERSION", gallery_mod.SCHEMA_VERSION + 1)


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return c.execute("PRAGMA user_version").fetchone()[0]


def test_a_new_schema_version_upgrades_the_file_in_place(gpath: Path, rng, monkeypatch):
    a = unit(rng, 1)
    with Gallery(gpath, FP) as g:
        g.enroll("Ann", a)
    v = gallery_mod.SCHEMA_VERSION
    next_schema(monkeypatch, """
        CREATE TABLE visits (id INTEGER PRIMARY KEY, time TEXT NOT NULL);
        CREATE TRIGGER visits_time BEFORE INSERT ON visits
        BEGIN SELECT RAISE(ABORT, 'no time') WHERE NEW.time = ''; END;
    """, ("visits",))
    with Gallery(gpath, FP) as g:
        assert g.match(a[0]).name == "Ann"  # the people came along
    assert user_version(gpath) == v + 1
    with sqlite3.connect(gpath) as c:
        assert c.execute("SELECT COUNT(*) FROM visits").fetchone()[0] == 0
    # A file that says it is at the new version but lacks the new table is not ours.
    with sqlite3.connect(gpath) as c:
        c.execute("DROP TABLE visits")
    with pytest.raises(GalleryError, match=r"not an edgeface-cam gallery.*visits"):
        Gallery(gpath, FP)


def test_a_failed_migration_leaves_the_old_version(gpath: Path, rng, monkeypatch):
    """All steps in one transaction (a guard: sqlite3's executescript would COMMIT the first
    ones; sqlite-utils runs a script statement by statement inside the open transaction)."""
    with Gallery(gpath, FP) as g:
        g.enroll("Ann", unit(rng, 1))
    v = gallery_mod.SCHEMA_VERSION
    next_schema(monkeypatch, "CREATE TABLE extra(x); CREATE TABLE people(x);", ("extra",))
    with pytest.raises(GalleryError, match="people already exists"):
        Gallery(gpath, FP)
    assert user_version(gpath) == v
    with sqlite3.connect(gpath) as c:
        assert "extra" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    monkeypatch.undo()
    with Gallery(gpath, FP) as g:
        assert [p.name for p in g.people()] == ["Ann"]


def test_a_read_only_file_of_an_older_version_is_refused(gpath: Path, rng, monkeypatch):
    with Gallery(gpath, FP) as g:
        g.enroll("Ann", unit(rng, 1))
    next_schema(monkeypatch, "CREATE TABLE extra(x);", ("extra",))
    make_read_only(gpath)
    try:
        with pytest.raises(GalleryError, match="read-only and needs a schema upgrade"):
            Gallery(gpath, FP)
    finally:
        undo_read_only(gpath)
