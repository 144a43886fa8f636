"""The face library loop on real faces (celeba-subset identities): sightings, groups of unknown
faces, assign, not, ignore, forget, retention, backup/restore, the CLI contract, kill -9."""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeface_cam import config
from edgeface_cam.app import App
from edgeface_cam.enroll import dominant_face, read_image
from edgeface_cam.gallery import (
    Gallery,
    GalleryError,
    Library,
    Retention,
    SightingRecorder,
    backup,
    restore,
)
from edgeface_cam.gallery.groups import Groups, regroup
from tests.conftest import DATASETS
from tests.test_cli import _quiet_and_isolated, assert_user_error, cli  # noqa: F401
from tests.test_gallery import run_child

pytestmark = pytest.mark.device

FP = "c" * 64
IDENTITIES, PER_ID = 30, 8
SUBSET = DATASETS / "celeba-subset"


# --- real faces ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faces() -> SimpleNamespace:
    """The first IDENTITIES celeba-subset identities, up to PER_ID photos each, embedded through
    the device path (one dominant face a photo): vectors, identity labels, photo paths."""
    app = App(config.from_dict({}))
    vecs, labels, paths, crops = [], [], [], []
    for folder in sorted(p for p in SUBSET.iterdir() if p.is_dir())[:IDENTITIES]:
        for photo in sorted(folder.glob("*.jpg"))[:PER_ID]:
            face = dominant_face(app.recognizer.analyze(read_image(photo), still=True))
            if face is not None:
                vecs.append(face.embedding)
                labels.append(folder.name)
                paths.append(photo)
                crops.append(face.crop)
    app.close()
    return SimpleNamespace(vecs=np.array(vecs, np.float32), labels=np.array(labels),
                           paths=paths, crops=crops, fingerprint=app.fingerprint)


def of(faces: SimpleNamespace, label: str) -> np.ndarray:
    return np.flatnonzero(faces.labels == label)


def bcubed(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """BCubed precision and recall of a grouping against the true identities."""
    pairs = list(zip(found, truth, strict=True))
    both, groups, people = Counter(pairs), Counter(found), Counter(truth)
    n = len(found)
    return (sum(both[(f, t)] / groups[f] for f, t in pairs) / n,
            sum(both[(f, t)] / people[t] for f, t in pairs) / n)


def track(i: int, vec: np.ndarray | None, name: str | None = None, crop=None,
          quality: float = 0.6) -> SimpleNamespace:
    """What the recorder reads of a decided ``track.Track``."""
    return SimpleNamespace(id=i, decided_name=name, score=0.5 if name else 0.1,
                           best_quality=quality, best_embedding=vec, best_file=None,
                           best_crop=crop if crop is not None else np.zeros((112, 112, 3),
                                                                            np.uint8))


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)  # sightings of a fixed time ...
KEEP = Retention(100_000, 3650)  # ... kept by retention


def record_all(db: Path, items, retention: Retention | None = None, fp: str = FP) -> list[dict]:
    """Record (vector, name) items one second apart; the event fields each got."""
    rec = SightingRecorder(db, fp, retention or KEEP)
    try:
        return [rec.record(track(i, v, n), "cam", NOW + timedelta(seconds=i), {"frame": i})
                for i, (v, n) in enumerate(items)]
    finally:
        rec.close()


# --- groups --------------------------------------------------------------------------------------
def test_groups_keep_identities_apart_and_together(faces):
    """Real faces in random arrival orders: BCubed precision (groups hold one person) and recall
    (a person's faces end up together) on 30 identities."""
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(faces.vecs))
        labels, groups = regroup(faces.vecs[order])
        precision, recall = bcubed(labels, faces.labels[order])
        print(f"seed {seed}: {len(groups)} groups for {IDENTITIES} people, BCubed P "
              f"{precision:.3f} R {recall:.3f}")
        assert precision >= 0.95 and recall >= 0.85


def test_a_lookalike_does_not_chain_two_people_together(faces):
    """A face halfway between two people (their blend) matches a face of each; average
    linkage puts it in at most one group and never merges the two people's groups."""
    a, b = (of(faces, lab)[:5] for lab in sorted(set(faces.labels))[:2])
    g = Groups()
    ids = iter(range(1, 100))
    where = {}
    for i in [*a, *b]:
        where[i] = g.place(faces.vecs[i], lambda: next(ids)).group
    blend = faces.vecs[a[0]] + faces.vecs[b[0]]
    blend /= np.linalg.norm(blend)
    assert blend @ faces.vecs[a[0]] > 0.5 and blend @ faces.vecs[b[0]] > 0.5  # a lookalike
    g.place(blend, lambda: next(ids))
    final = {i: gid for i, gid in where.items() if gid in g.ids()}
    assert {final.get(i) for i in a}.isdisjoint({final.get(i) for i in b} - {None})


def test_a_new_unknown_is_placed_in_under_a_millisecond_with_10000_stored():
    """O(groups) per face: 10,000 stored unknowns in 2,500 groups, the median placement."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2500, 512)).astype(np.float32)
    rows = [(1 + k % 2500, centres[k % 2500] + 0.8 * rng.standard_normal(512))
            for k in range(10_000)]
    g = Groups.build(((gid, v / np.linalg.norm(v)) for gid, v in rows), dim=512)
    assert len(g) == 2500
    ids = iter(range(10_000, 20_000))
    took = []
    for _ in range(200):
        x = rng.standard_normal(512).astype(np.float32)
        t0 = time.perf_counter()
        g.place(x / np.linalg.norm(x), lambda: next(ids))
        took.append(time.perf_counter() - t0)
    assert np.median(took) < 1e-3, np.median(took)


# --- the recorder -------------------------------------------------------------------------------
def test_the_recorder_stores_every_decided_track_and_groups_the_unknown(tmp_path, faces):
    db = tmp_path / "g.db"
    Gallery(db, FP).close()
    items = [(faces.vecs[i], None) for i in range(len(faces.vecs))]
    fields = record_all(db, items)
    assert [f["sighting_id"] for f in fields] == sorted({f["sighting_id"] for f in fields})
    assert all(f["ignored"] is False for f in fields)
    with Gallery(db, FP) as g:
        rows = Library(g).sightings()
        assert len(rows) == len(items)  # nothing lost on a clean stop
        by_id = {r["id"]: r for r in rows}
        found = np.array([by_id[f["sighting_id"]]["group_id"] for f in fields])
        precision, recall = bcubed(found, faces.labels)
        assert precision >= 0.95 and recall >= 0.85, (precision, recall)
        groups = Library(g).groups()
        assert sum(x["size"] for x in groups) == len(items)
        assert [x["size"] for x in groups] == sorted((x["size"] for x in groups), reverse=True)


def test_retention_keeps_the_newest_and_drops_the_old(tmp_path, faces):
    db = tmp_path / "g.db"
    Gallery(db, FP).close()
    record_all(db, [(faces.vecs[i], None) for i in range(40)], Retention(25, 3650))
    with Gallery(db, FP) as g:
        rows = Library(g).sightings()
    assert len(rows) == 25 and min(r["id"] for r in rows) == 16  # the 15 oldest went
    # max_days: everything is older than a day by now (recorded at NOW, in 2026-06).
    rec = SightingRecorder(db, FP, Retention(10_000, 1))
    assert rec.retain() == 25
    rec.close()


def test_the_recorder_picks_up_ignore_from_another_process_within_a_second(tmp_path, faces):
    db = tmp_path / "g.db"
    Gallery(db, FP).close()
    a = of(faces, sorted(set(faces.labels))[0])
    rec = SightingRecorder(db, FP, KEEP)
    try:
        rec.record(track(1, faces.vecs[a[0]]), "cam", NOW)
        rec.flush()
        with Gallery(db, FP) as g:
            lib = Library(g)
            Library(g).ignore(lib.groups()[0]["id"])
            assert lib.groups() == [] and len(lib.groups(include_ignored=True)) == 1
        time.sleep(1.0)
        assert rec.record(track(2, faces.vecs[a[1]]), "cam", NOW)["ignored"] is True
    finally:
        rec.close()


# --- assign, not ---------------------------------------------------------------------------------
def test_assign_a_group_then_a_new_photo_is_recognised(tmp_path, faces):
    db = tmp_path / "g.db"
    label = sorted(set(faces.labels))[3]
    mine = of(faces, label)
    seen, later = mine[:-1], mine[-1]
    with Gallery(db, FP) as g:
        assert g.match(faces.vecs[later]).name is None
    record_all(db, [(faces.vecs[i], None) for i in seen])
    with Gallery(db, FP, threshold=0.35) as g, Gallery(db, FP, threshold=0.35) as service:
        lib = Library(g)
        group = lib.groups()[0]  # the largest: all of them are this person's
        assert lib.assign("Pat", lib.faces_for(cluster=group["id"]), cluster=group["id"]) == "Pat"
        assert service.refresh()  # the running service reloads within its refresh interval
        assert service.match(faces.vecs[later]).name == "Pat"
        assert {r["name"] for r in lib.sightings(name="pat")} == {"Pat"}
        with pytest.raises(GalleryError, match=f"group {group['id']} was already assigned"):
            lib.require_group(group["id"])


def test_assign_takes_at_most_the_10_best_quality_faces(tmp_path, faces):
    db = tmp_path / "g.db"
    Gallery(db, FP).close()
    i = of(faces, sorted(set(faces.labels))[1])[0]
    rec = SightingRecorder(db, FP, KEEP)
    for k in range(14):  # one visit: 14 near-identical frames
        rec.record(track(k, faces.vecs[i], quality=k / 20), "cam", NOW + timedelta(seconds=k))
    rec.close()
    with Gallery(db, FP) as g:
        lib = Library(g)
        [group] = lib.groups()
        chosen = lib.faces_for(cluster=group["id"])
        assert [round(f["quality"], 2) for f in chosen] == [k / 20 for k in range(13, 3, -1)]
        lib.assign("Vis", chosen, cluster=group["id"])
        assert g.people()[0].embeddings == 10
        assert len(lib.sightings(name="Vis")) == 14  # every sighting is theirs


def _lookalike(faces: SimpleNamespace, person: str) -> tuple[str, float]:
    """The other identity whose photos score highest against ``person``'s first photo (by the
    third best of them), and that score."""
    x = faces.vecs[of(faces, person)[0]]
    best = []
    for other in sorted(set(faces.labels) - {person}):
        scores = sorted((faces.vecs[of(faces, other)] @ x).tolist(), reverse=True)
        if len(scores) >= 3:
            best.append((scores[2], other))
    score, other = max(best)
    return other, score


def test_not_stops_a_repeated_false_accept_and_keeps_the_person_recognised(tmp_path, faces):
    """At a deliberately low threshold a stranger is taken for X; after `not` on one sighting,
    the stranger's other photos are no longer X, and X's own photos still are."""
    db = tmp_path / "g.db"
    people = sorted(set(faces.labels))
    pairs = [(p, *_lookalike(faces, p)) for p in people[:10]]
    x_label, s_label, score = max(pairs, key=lambda t: t[2])
    x, s = of(faces, x_label), of(faces, s_label)
    threshold = score - 0.01  # the stranger's three best photos pass as X
    with Gallery(db, FP, threshold=threshold) as g:
        g.enroll("X", faces.vecs[x[:1]])
        strangers = [i for i in s if g.match(faces.vecs[i]).name == "X"]
        own = [i for i in x[1:] if g.match(faces.vecs[i]).name == "X"]
        assert len(strangers) >= 3 and own
        [f] = record_all(db, [(faces.vecs[strangers[0]], "X")])
        lib = Library(g)
        assert lib.sightings()[0]["name"] == "X"
        assert lib.mark_not(f["sighting_id"], "x") == "X"
        after = lib.sightings()[0]
        assert after["name"] is None and after["group_id"] is not None  # unknown, grouped
        print(f"X {x_label}, stranger {s_label}: {len(strangers)} photos taken for X at "
              f"{threshold:.3f}; X's own photos named: {len(own)}")
        assert [g.match(faces.vecs[i]).name for i in strangers[1:]] == [None] * (
            len(strangers) - 1)
        assert [g.match(faces.vecs[i]).name for i in own] == ["X"] * len(own)
        # A running service (its own connection) picks the negative up at its next refresh.
        with Gallery(db, FP, threshold=threshold) as service:
            assert service.match(faces.vecs[strangers[1]]).name is None


def test_assign_one_sighting_to_a_new_person(tmp_path, faces):
    db = tmp_path / "g.db"
    Gallery(db, FP).close()
    i = of(faces, sorted(set(faces.labels))[5])
    [f] = record_all(db, [(faces.vecs[i[0]], None)])
    with Gallery(db, FP, threshold=0.35) as g:
        lib = Library(g)
        lib.assign("Sol", lib.faces_for(sighting=f["sighting_id"]), sighting=f["sighting_id"])
        assert lib.sightings()[0]["name"] == "Sol" and lib.groups() == []
        assert g.match(faces.vecs[i[1]]).name == "Sol"


# --- forget, stale ids, backup, restore ----------------------------------------------------------
def test_forget_one_before_and_unknown(tmp_path, faces):
    db = tmp_path / "g.db"
    with Gallery(db, FP) as g:
        g.enroll("Kim", faces.vecs[:1])
    items = [(faces.vecs[i], "Kim" if i % 4 == 0 else None) for i in range(20)]
    record_all(db, items)
    with Gallery(db, FP) as g:
        lib = Library(g)
        assert lib.forget(sighting=3) == 1
        with pytest.raises(GalleryError, match="sighting 3 no longer exists"):
            lib.forget(sighting=3)
        with pytest.raises(GalleryError, match=r"no sighting 99 \(did you mean 20\?\)"):
            lib.forget(sighting=99)
        before = (NOW + timedelta(seconds=10)).isoformat()
        assert lib.forget(before=before) == 9  # sightings 1..10 less the one forgotten
        assert lib.forget(unknown=True) == 8
        assert {r["name"] for r in lib.sightings()} == {"Kim"}
        assert lib.groups() == []  # empty groups go with their faces


def test_stale_and_unknown_group_ids_say_what_happened(tmp_path, faces):
    db = tmp_path / "g.db"
    Gallery(db, FP).close()
    a, b = (of(faces, lab)[:3] for lab in sorted(set(faces.labels))[:2])
    record_all(db, [(faces.vecs[i], None) for i in [*a, *b]])
    with Gallery(db, FP) as g:
        lib = Library(g)
        ids = sorted(x["id"] for x in lib.groups())
        lib.store.merge_group(ids[0], ids[1])  # as the recorder does when two groups meet
        with pytest.raises(GalleryError, match=f"group {ids[1]} was merged into group "
                                               f"{ids[0]} \\(use --cluster {ids[0]}\\)"):
            lib.ignore(ids[1])
        with pytest.raises(GalleryError, match=rf"no group 77 \(did you mean {ids[0]}"):
            lib.ignore(77)


def test_backup_while_recording_and_restore_refuses_a_non_gallery(tmp_path, faces):
    db, copy = tmp_path / "g.db", tmp_path / "backup.db"
    with Gallery(db, FP) as g:
        g.enroll("Kim", faces.vecs[:2])
    rec = SightingRecorder(db, FP, KEEP)
    stop = threading.Event()

    def keep_recording() -> None:
        k = 0
        while not stop.is_set():
            rec.record(track(k, faces.vecs[k % len(faces.vecs)]), "cam", NOW)
            k += 1
            time.sleep(0.001)

    writer = threading.Thread(target=keep_recording)
    writer.start()
    try:
        time.sleep(0.3)
        with Gallery(db, FP) as g:
            backup(g, copy)
    finally:
        stop.set()
        writer.join()
        rec.close()
    with sqlite3.connect(copy) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("SELECT COUNT(*) FROM sightings").fetchone()[0] > 0
    before = db.read_bytes()
    (tmp_path / "notes.txt").write_text("not a gallery\n")
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t(x)")
    for bad, why in (("notes.txt", "not a gallery"), ("other.db", "not an edgeface-cam gallery")):
        with pytest.raises(GalleryError, match=why):
            restore(tmp_path / bad, db)
        assert db.read_bytes() == before  # the old one untouched
    with Gallery(db, FP) as g:
        g.remove("Kim")
    assert restore(copy, db) == 1
    with Gallery(db, FP) as g:
        assert [p.name for p in g.people()] == ["Kim"]


# --- kill -9 -------------------------------------------------------------------------------------
ACTIONS = r"""
import sys, numpy as np
from edgeface_cam.gallery import Gallery, Library, Retention, SightingRecorder
db, fp = sys.argv[1], sys.argv[2]
with Gallery(db, fp) as g:
    lib = Library(g)
    rec = SightingRecorder(db, fp, Retention(10_000, 3650))
    print("ready", flush=True)
    k = 0
    while True:
        k += 1
        groups = lib.groups()
        if groups:
            gid = groups[-1]["id"]
            lib.assign(f"P{k}", lib.faces_for(cluster=gid), cluster=gid)
        known = lib.sightings(name="X", limit=1)
        if known:
            lib.mark_not(known[0]["id"], "X")
        rec.retention = Retention(max(1, 200 - k), 3650)
        rec.retain()
"""


def _consistent(db: Path) -> None:
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
        # assign is one transaction: a person P* exists only with their assigned group
        for pid, name in c.execute("SELECT id, name FROM people WHERE name LIKE 'P%'"):
            assert c.execute("SELECT COUNT(*) FROM groups WHERE state = 'assigned' AND "
                             "person_id = ?", [pid]).fetchone()[0] == 1, name
            assert c.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = ?",
                             [pid]).fetchone()[0] >= 1, name
        assert c.execute("SELECT COUNT(*) FROM sightings s JOIN groups g ON g.id = s.group_id "
                         "WHERE g.state != 'open'").fetchone()[0] == 0
        # not is one transaction: a negative for every 'not' sighting, and a sighting with a
        # negative of X is no longer X's (it may be assigned to somebody else since)
        nots = {r[0] for r in c.execute("SELECT id FROM sightings WHERE status = 'not'")}
        assert nots <= {r[0] for r in c.execute("SELECT sighting_id FROM negatives")}
        assert c.execute("SELECT COUNT(*) FROM negatives n JOIN sightings s ON s.id = "
                         "n.sighting_id WHERE s.person_id = n.person_id").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM sightings WHERE status = 'not' AND "
                         "person_id IS NOT NULL").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM groups g WHERE state = 'open' AND NOT EXISTS "
                         "(SELECT 1 FROM sightings s WHERE s.group_id = g.id)").fetchone()[0] == 0


@pytest.mark.slow
def test_sigkill_during_assign_not_and_retention_leaves_a_consistent_library(tmp_path, faces):
    seed = tmp_path / "seed.db"
    with Gallery(seed, FP) as g:
        g.enroll("X", faces.vecs[:1])
    record_all(seed, [(faces.vecs[i], "X" if i % 3 == 0 else None)
                      for i in range(len(faces.vecs))])
    r = random.Random(3)
    done = Counter()
    for k in range(12):
        db = tmp_path / f"k{k}.db"
        shutil.copyfile(seed, db)
        p = run_child(ACTIONS, str(db), FP)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(r.uniform(0.0, 1.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL, p.stderr.read()
        _consistent(db)
        with sqlite3.connect(db) as c:
            done["assigned"] += c.execute("SELECT COUNT(*) FROM groups WHERE state = "
                                          "'assigned'").fetchone()[0]
            done["not"] += c.execute("SELECT COUNT(*) FROM negatives").fetchone()[0]
            done["retained"] += c.execute("SELECT COUNT(*) FROM sightings").fetchone()[0] < 200
    assert min(done.values()) > 0, done  # the kills landed among all three actions


# --- the CLI contract ----------------------------------------------------------------------------
SIGHTING_KEYS = ["id", "time", "source", "frame", "file", "track_id", "name", "score",
                 "quality", "cluster"]


def _folder(tmp_path: Path, name: str, photos: list[Path]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for k, p in enumerate(photos):
        shutil.copyfile(p, folder / f"{k:02d}.jpg")
    return folder


def test_the_loop_through_the_cli(capsys, tmp_path, faces):
    """run on a folder -> sightings / unknowns JSON -> assign -> recognised on the next run;
    ignore -> hidden, its later faces quiet; forget; unknown ids and names are one line."""
    db, events = tmp_path / "g.db", tmp_path / "ev.jsonl"
    people = [p for p in sorted(set(faces.labels)) if len(of(faces, p)) >= 6][:3]
    photos = {p: [faces.paths[i] for i in of(faces, p)] for p in people}
    first = _folder(tmp_path, "first", [ph for p in people for ph in photos[p][:4]])
    code, _, err = cli(capsys, "run", "--source", first, "--db", db, "--events", events,
                       "--no-preview", "--set", "web.enabled=false")
    assert code == 0, err
    evs = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(evs) == 12 and len({e["track_id"] for e in evs}) == 12  # a track an image
    assert all(e["file"].startswith(str(first)) and e["ignored"] is False for e in evs)
    code, out, _ = cli(capsys, "sightings", "--json", "--db", db)
    rows = json.loads(out)
    assert code == 0 and [list(r) for r in rows] == [SIGHTING_KEYS] * 12
    assert {r["id"] for r in rows} == {e["sighting_id"] for e in evs}
    assert {r["file"] for r in rows} == {e["file"] for e in evs}
    code, out, _ = cli(capsys, "unknowns", "--json", "--db", db)
    groups = json.loads(out)
    assert [list(g) for g in groups] == [["id", "size", "first_seen", "last_seen", "ignored",
                                          "sightings"]] * len(groups)
    assert [g["size"] for g in groups[:3]] == [4, 4, 4]
    files = {g["id"]: {Path(s["file"]).name for s in g["sightings"]} for g in groups}
    named = {gid: [p for p in people if {f"{k:02d}.jpg" for k in range(
        4 * people.index(p), 4 * people.index(p) + 4)} == fs] for gid, fs in files.items()}
    assert sorted(p for ps in named.values() for p in ps) == people  # a group is one person
    g_pat, g_quiet = groups[0]["id"], groups[1]["id"]
    assert cli(capsys, "assign", "--cluster", g_pat, "--name", "Pat", "--db", db)[0] == 0
    assert cli(capsys, "ignore", "--cluster", g_quiet, "--db", db)[0] == 0
    code, out, err = cli(capsys, "assign", "--cluster", groups[2]["id"], "--name", "Patt",
                         "--force", "--db", db)  # a new person, named like an old one
    assert code == 0 and "did you mean 'Pat'?" in err
    assert cli(capsys, "remove", "--name", "Patt", "--yes", "--db", db)[0] == 0
    code, out, _ = cli(capsys, "unknowns", "--json", "--db", db)
    assert {g["id"] for g in json.loads(out)} == {g["id"] for g in groups[3:]}
    code, out, _ = cli(capsys, "unknowns", "--json", "--all", "--db", db)
    assert g_quiet in {g["id"] for g in json.loads(out) if g["ignored"]}
    # The next visit: Pat is recognised, the ignored group's person is quiet.
    pat, quiet = named[g_pat][0], named[g_quiet][0]
    second = _folder(tmp_path, "second", [photos[pat][4], photos[quiet][4]])
    events.unlink()
    assert cli(capsys, "run", "--source", second, "--db", db, "--events", events,
               "--no-preview", "--set", "web.enabled=false")[0] == 0
    evs = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["name"], e["ignored"]) for e in evs] == [("Pat", False), (None, True)]
    code, out, _ = cli(capsys, "sightings", "--json", "--name", "pat", "--limit", "3",
                       "--db", db)
    assert [r["name"] for r in json.loads(out)] == ["Pat"] * 3
    # identify and verify are queries: they store nothing.
    n = len(json.loads(cli(capsys, "sightings", "--json", "--db", db)[1]))
    assert cli(capsys, "identify", photos[pat][5], "--db", db)[0] == 0
    assert len(json.loads(cli(capsys, "sightings", "--json", "--db", db)[1])) == n
    # One-line errors with a did-you-mean; stale ids say what happened.
    assert_user_error(*cli(capsys, "assign", "--cluster", g_pat, "--name", "Pat", "--db",
                           db)[::2], f"group {g_pat} was already assigned to 'Pat'")
    assert_user_error(*cli(capsys, "sightings", "--name", "Patt", "--db", db)[::2],
                      "did you mean 'Pat'?")
    assert_user_error(*cli(capsys, "ignore", "--cluster", "999", "--db", db)[::2],
                      "no group 999 (did you mean")
    assert_user_error(*cli(capsys, "not", "--sighting", evs[1]["sighting_id"], "--name", "Pat",
                           "--db", db)[::2], "is unknown, not 'Pat'")
    code, out, _ = cli(capsys, "forget", "--unknown", "--db", db)
    assert code == 0 and out.startswith("forgot ")
    code, out, _ = cli(capsys, "sightings", "--unknown", "--json", "--db", db)
    assert json.loads(out) == []


def test_backup_and_restore_through_the_cli(capsys, tmp_path, faces):
    db = tmp_path / "g.db"
    with Gallery(db, faces.fingerprint) as g:
        g.enroll("Kim", faces.vecs[:1])
    record_all(db, [(faces.vecs[i], None) for i in range(5)], fp=faces.fingerprint)
    code, out, err = cli(capsys, "backup", tmp_path / "b.db", "--db", db)
    assert code == 0, err
    assert cli(capsys, "remove", "--name", "Kim", "--yes", "--db", db)[0] == 0
    (tmp_path / "junk.db").write_bytes(b"junk" * 100)
    assert_user_error(*cli(capsys, "restore", tmp_path / "junk.db", "--db", db)[::2],
                      "is not a gallery")
    code, out, err = cli(capsys, "restore", tmp_path / "b.db", "--db", db)
    assert code == 0 and "(1 people)" in out, err
    code, out, _ = cli(capsys, "sightings", "--json", "--db", db)
    assert len(json.loads(out)) == 5


def test_no_track_spans_two_images_of_a_folder(capsys, tmp_path, faces):
    """The same photo three times in a folder: three scenes, three tracks, three sightings
    (one track would hold them all if images were frames of one scene: the box is the same)."""
    folder = _folder(tmp_path, "same", [faces.paths[0]] * 3)
    events = tmp_path / "ev.jsonl"
    # motion off: identical images do not move (the motion gate is not what is tested here)
    code, _, err = cli(capsys, "run", "--source", folder, "--db", tmp_path / "g.db", "--events",
                       events, "--no-preview", "--set", "web.enabled=false", "--set",
                       "motion.enabled=false")
    assert code == 0, err
    evs = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["file"] for e in evs] == [str(folder / f"{k:02d}.jpg") for k in range(3)]
    assert len({e["track_id"] for e in evs}) == 3 and len({e["sighting_id"] for e in evs}) == 3
