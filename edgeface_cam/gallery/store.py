"""The gallery's SQLite file: opening it safely, its schema and migrations, and every query.

All of the gallery's SQL lives in this module; doctor asks ``inspect``. One file
(``gallery.db``) is shared by the running service and the CLI (``enroll``, ``remove``, ...),
often as two processes at once. Hence: WAL (readers never block the writer), a busy timeout plus
``BEGIN IMMEDIATE`` for every write (the lock is taken up front, so a writer waits instead of
failing with "database is locked" on a read-to-write upgrade), one transaction per user action,
and ``PRAGMA data_version`` so the service notices another process's change cheaply.

A file is looked at before anything is written to it: one that is not ours (no SQLite header,
other tables, a newer schema) is refused unchanged, with no -wal/-shm files left beside it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import sqlite_utils

from .base import GalleryError, Person, name_key

log = logging.getLogger(__name__)

CROP_JPEG_QUALITY = 90
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 file

# Migrations: MIGRATIONS[i] takes the schema from version i to i + 1 (PRAGMA user_version), all
# pending steps in one transaction (sqlite-utils runs a script statement by statement inside
# it; sqlite3's own executescript would COMMIT first). To change the schema, append a script
# here and the tables it adds to TABLES (a file at version v must hold the tables of
# TABLES[:v], else it is not ours); SCHEMA_VERSION follows. Never edit a released step.
# Raw SQL: COLLATE NOCASE, CHECK and ON DELETE CASCADE are clearer here than via sqlite-utils.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        created_at TEXT NOT NULL,
        notes TEXT
    );
    CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        vector BLOB NOT NULL,
        dim INTEGER NOT NULL CHECK (dim > 0 AND length(vector) = 4 * dim),
        model_fingerprint TEXT NOT NULL,
        quality REAL,
        source TEXT,
        crop BLOB,
        created_at TEXT NOT NULL
    );
    CREATE INDEX embeddings_person ON embeddings(person_id);
    CREATE INDEX embeddings_model ON embeddings(model_fingerprint, person_id);
    """,
]
MIGRATIONS.append(
    # The face library: every decided track is a sighting; unknown ones gather into groups;
    # "not X" stores a negative of X. AUTOINCREMENT: an id is never handed out twice, so a
    # forgotten or merged one reads as stale, not as somebody else's. A group keeps its row when
    # merged or assigned (state, merged_into / person_id) so a stale id can say where it went.
    # A negative keeps its sighting's id but outlives the sighting (forget must not undo "not").
    """
    CREATE TABLE groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        ignored INTEGER NOT NULL DEFAULT 0 CHECK (ignored IN (0, 1)),
        state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'merged', 'assigned')),
        merged_into INTEGER,
        person_id INTEGER REFERENCES people(id) ON DELETE SET NULL
    );
    CREATE TABLE sightings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        source TEXT NOT NULL,
        frame INTEGER,
        file TEXT,
        track_id INTEGER,
        person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
        score REAL,
        vector BLOB,
        dim INTEGER CHECK (vector IS NULL OR length(vector) = 4 * dim),
        model_fingerprint TEXT,
        quality REAL,
        crop BLOB,
        snapshot TEXT,
        group_id INTEGER REFERENCES groups(id) ON DELETE SET NULL,
        status TEXT NOT NULL CHECK (status IN ('recognized', 'unknown', 'assigned', 'not'))
    );
    CREATE INDEX sightings_time ON sightings(time);
    CREATE INDEX sightings_group ON sightings(group_id);
    CREATE INDEX sightings_person ON sightings(person_id);
    CREATE TABLE negatives (
        id INTEGER PRIMARY KEY,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        sighting_id INTEGER,
        created_at TEXT NOT NULL,
        model_fingerprint TEXT NOT NULL,
        dim INTEGER NOT NULL CHECK (dim > 0 AND length(vector) = 4 * dim),
        vector BLOB NOT NULL
    );
    CREATE INDEX negatives_person ON negatives(model_fingerprint, person_id);
    """)
TABLES: list[tuple[str, ...]] = [("people", "embeddings"),  # TABLES[i]: what MIGRATIONS[i] adds
                                 ("groups", "sightings", "negatives")]
SCHEMA_VERSION = len(MIGRATIONS)  # what this program writes
assert len(TABLES) == SCHEMA_VERSION


# How opening a WAL file read-only fails where its -shm cannot be created or initialised.
_NO_SHM = ("SQLITE_CANTOPEN", "SQLITE_READONLY_DIRECTORY", "SQLITE_READONLY_CANTINIT")


def _encode_crop(crop: np.ndarray) -> bytes:
    """A small JPEG of the aligned crop: enough to re-embed with a future model."""
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    if not ok:
        raise GalleryError(f"could not encode a crop of shape {crop.shape} as JPEG")
    return buf.tobytes()


def decode_crop(blob: bytes, embedding_id: int) -> np.ndarray:
    crop = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if crop is None:
        raise GalleryError(f"stored crop of embedding {embedding_id} cannot be decoded")
    return crop


def _error_message(e: sqlite3.Error, path: Path) -> str:
    code = getattr(e, "sqlite_errorname", "") or ""
    text = " ".join(str(e).split())
    if code.startswith("SQLITE_READONLY") or "readonly" in text:
        return f"gallery {path} is read-only ({text}); check its permissions and its folder's"
    if code == "SQLITE_FULL" or "full" in text:
        return f"gallery {path}: disk full ({text}); free some space and try again"
    if code.startswith("SQLITE_BUSY") or "locked" in text:
        return (f"gallery {path} is busy: another process held it longer than the busy timeout "
                f"({text})")
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text:
        return f"{path} is not a usable gallery database ({text})"
    return f"gallery {path}: {text}"


def _check_header(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite before SQLite opens (and might change) it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise GalleryError(f"cannot read gallery {path}: {e.strerror}") from None
    if head and head != SQLITE_HEADER:
        raise GalleryError(f"{path} is not a usable gallery database (file is not a database: "
                           "no SQLite header)")


def _is_wal(path: Path) -> bool:
    """WAL mode is recorded in the file header (bytes 18-19 = 2, see sqlite.org/fileformat2);
    read there because an immutable connection reports "delete" whatever the file says."""
    with open(path, "rb") as f:
        header = f.read(20)
    return len(header) == 20 and header[18] == 2 and header[19] == 2


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite%'")}


def _foreign(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; GalleryError when it is a SQLite file of somebody else's."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = _tables(conn)
    if version == 0 and tables:
        raise GalleryError(f"{path} is a SQLite file but not an edgeface-cam gallery (it has "
                           "other tables)")
    expected = {t for added in TABLES[:version] for t in added}
    if not expected <= tables:
        raise GalleryError(f"{path} is a SQLite file but not an edgeface-cam gallery (schema "
                           f"version {version} without the tables {sorted(expected - tables)})")
    return version


class Store:
    """The open gallery file. Thread-safe: ``lock`` serialises every use of the connection."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.lock = threading.RLock()
        self.read_only = False
        self.db = self._connect()

    # ---- opening -----------------------------------------------------------------------------
    def _connect(self) -> sqlite_utils.Database:
        path = self.path
        if path.is_dir():
            raise GalleryError(f"gallery path {path} is a folder; give a file such as "
                               f"{path / 'gallery.db'}")
        exists = path.exists()
        if exists:
            _check_header(path)
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise GalleryError(f"cannot create the gallery folder {path.parent}: "
                                   f"{e.strerror}") from None
            if not os.access(path.parent, os.W_OK):
                raise GalleryError(f"cannot create gallery {path}: folder {path.parent} is not "
                                   "writable")
        # A read-only file (or folder, for a new -wal/-shm) is opened read-only: matching works,
        # writes raise GalleryError. mode=ro keeps SQLite from trying to create files.
        self.read_only = exists and not (os.access(path, os.W_OK)
                                         and os.access(path.parent, os.W_OK))
        uri = f"{path.resolve().as_uri()}?mode={'ro' if self.read_only else 'rwc'}"
        try:
            return self._open(uri)
        except sqlite3.Error as e:
            if not (self.read_only and getattr(e, "sqlite_errorname", "") in _NO_SHM):
                raise GalleryError(_error_message(e, path)) from None
        # A WAL file in a read-only folder without its -shm file cannot be opened read-only
        # (SQLite would have to create the -shm); immutable=1 reads it without the
        # shared-memory index (no writer can change it in a folder nobody may write).
        log.warning("gallery %s is in a read-only folder: opened as immutable", path)
        try:
            return self._open(uri + "&immutable=1")
        except sqlite3.Error as e:
            raise GalleryError(_error_message(e, path)) from None

    def _open(self, uri: str) -> sqlite_utils.Database:
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE); the
        # driver's implicit ones would take the write lock late. check_same_thread=False:
        # the service matches on its worker thread; self.lock serialises connection use.
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_ms / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.create_function("name_key", 1, name_key, deterministic=True)
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            db.execute("PRAGMA foreign_keys = ON")
            self._refuse_foreign(conn)  # before the first write: a refused file stays as it was
            if not self.read_only:
                # WAL: the service keeps matching while the CLI enrols. synchronous=NORMAL is
                # safe with WAL (no corruption on power loss; at worst the last commit is
                # lost) and saves an fsync per commit, which is slow on a Pi's SD card.
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            self._migrate(db)
            conn.execute("SELECT COUNT(*) FROM people").fetchone()  # fail here, not later
        except BaseException:
            conn.close()
            raise
        return db

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        version = _foreign(conn, self.path)
        if version > SCHEMA_VERSION:
            raise GalleryError(f"gallery {self.path} has schema version {version}, newer than "
                               f"this edgeface-cam understands ({SCHEMA_VERSION}); upgrade it")
        if version < SCHEMA_VERSION and self.read_only:
            raise GalleryError(f"gallery {self.path} is read-only and needs a schema upgrade "
                               f"(version {version} -> {SCHEMA_VERSION})")

    def _migrate(self, db: sqlite_utils.Database) -> None:
        """Bring the schema to SCHEMA_VERSION, all steps in one transaction."""
        if int(db.conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            for v in range(_foreign(db.conn, self.path), SCHEMA_VERSION):
                db.executescript(MIGRATIONS[v])
                db.execute(f"PRAGMA user_version = {v + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise

    # ---- transactions ------------------------------------------------------------------------
    @contextmanager
    def write(self, what: str) -> Iterator[None]:
        """One IMMEDIATE transaction; sqlite errors become one-line GalleryErrors."""
        if self.read_only:
            raise GalleryError(f"cannot {what}: gallery {self.path} is read-only")
        with self.lock:
            db = self.db
            if db.conn.in_transaction:  # inside this thread's own transaction: part of it
                yield
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    db.execute("COMMIT")
                except BaseException:
                    db.rollback()
                    raise
            except sqlite3.Error as e:
                raise GalleryError(f"cannot {what}: {_error_message(e, self.path)}") from None

    def _all(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, list(params)).fetchall()

    # ---- people ------------------------------------------------------------------------------
    def people_matching(self, name: str) -> list[tuple[int, str]]:
        """(id, stored name) of everyone whose name is ``name`` under the name rule."""
        return [(int(i), n) for i, n in self._all(
            "SELECT id, name FROM people WHERE name_key(name) = ? ORDER BY id", [name_key(name)])]

    def people_ids(self) -> list[tuple[int, str]]:
        return [(int(i), n) for i, n in self._all("SELECT id, name FROM people")]

    def names(self) -> list[str]:
        return [r[0] for r in self._all("SELECT name FROM people")]

    def people(self, fingerprint: str, person_id: int | None = None) -> list[Person]:
        where = "" if person_id is None else "WHERE p.id = :pid"
        with self.lock:
            rows = self.db.query(
                f"""SELECT p.id, p.name, p.created_at, p.notes,
                          COALESCE(SUM(e.model_fingerprint = :fp), 0) AS embeddings,
                          COALESCE(SUM(e.model_fingerprint != :fp), 0) AS other_model
                   FROM people p LEFT JOIN embeddings e ON e.person_id = p.id {where}
                   GROUP BY p.id ORDER BY p.name COLLATE NOCASE""",
                {"fp": fingerprint, "pid": person_id})
            return [Person(**r) for r in rows]

    def add_person(self, name: str, notes: str | None, now: str) -> int:
        with self.lock:
            return int(self.db["people"].insert({"name": name, "created_at": now,
                                                 "notes": notes}).last_pk)

    def set_notes(self, person_id: int, notes: str) -> None:
        with self.lock:
            self.db["people"].update(person_id, {"notes": notes})

    def rename_person(self, person_id: int, name: str) -> None:
        with self.lock:
            self.db["people"].update(person_id, {"name": name})

    def delete_person(self, person_id: int) -> None:
        """The person and (ON DELETE CASCADE) all their embeddings."""
        with self.lock:
            self.db["people"].delete(person_id)

    # ---- embeddings --------------------------------------------------------------------------
    def dim(self, fingerprint: str) -> int | None:
        """The embedding size stored for this model, None when it has none yet."""
        rows = self._all("SELECT dim FROM embeddings WHERE model_fingerprint = ? LIMIT 1",
                         [fingerprint])
        return None if not rows else int(rows[0][0])

    def add_embeddings(self, person_id: int, vectors: np.ndarray, fingerprint: str, now: str,
                       extras: Sequence[tuple[np.ndarray | None, str | None, float | None]],
                       ) -> None:
        """One row per vector; ``extras`` are (crop, source, quality) each."""
        dim = int(vectors.shape[1])
        # The generator encodes crops inside the caller's transaction, so a failure on the
        # k-th crop rolls back the person and the first k-1 rows alike.
        rows = ({
            "person_id": person_id,
            "vector": v.tobytes(),
            "dim": dim,
            "model_fingerprint": fingerprint,
            "quality": None if quality is None else float(quality),
            "source": None if source is None else str(source),
            "crop": crop if crop is None or isinstance(crop, bytes) else _encode_crop(crop),
            "created_at": now,
        } for v, (crop, source, quality) in zip(vectors, extras, strict=True))
        with self.lock:
            self.db["embeddings"].insert_all(rows, batch_size=100)

    def stale(self, fingerprint: str) -> int:
        """Embeddings of another model than ``fingerprint``."""
        return int(self._all("SELECT COUNT(*) FROM embeddings WHERE model_fingerprint != ?",
                             [fingerprint])[0][0])

    def stale_with_crop(self, fingerprint: str) -> list[int]:
        return [r[0] for r in self._all(
            "SELECT id FROM embeddings WHERE model_fingerprint != ? AND crop IS NOT NULL"
            " ORDER BY id", [fingerprint])]

    def crops(self, ids: Sequence[int]) -> list[tuple[int, bytes]]:
        marks = ",".join("?" * len(ids))
        return self._all(f"SELECT id, crop FROM embeddings WHERE id IN ({marks}) ORDER BY id",
                         ids)

    def face_crops(self, person_id: int, limit: int) -> list[tuple[int, bytes]]:
        """(embedding id, JPEG crop) of a person's faces, best quality first."""
        return self._all("SELECT id, crop FROM embeddings WHERE person_id = ? AND crop IS NOT "
                         "NULL ORDER BY quality DESC, id LIMIT ?", [person_id, limit])

    def set_vectors(self, rows: Sequence[tuple[int, np.ndarray]], fingerprint: str) -> int:
        """Give embeddings (id, vector) of another model this model's vectors; how many
        changed (rows deleted or re-embedded meanwhile are skipped)."""
        with self.lock:
            return sum(self.db.execute(
                "UPDATE embeddings SET vector = ?, dim = ?, model_fingerprint = ?"
                " WHERE id = ? AND model_fingerprint != ?",
                [v.tobytes(), int(v.shape[0]), fingerprint, i, fingerprint]).rowcount
                for i, v in rows)

    def remove_stale(self, fingerprint: str) -> int:
        """Delete every other-model embedding, and people left with none; how many rows."""
        with self.lock:
            n = self.db.execute("DELETE FROM embeddings WHERE model_fingerprint != ?",
                                [fingerprint]).rowcount
            self.db.execute("DELETE FROM people WHERE id NOT IN "
                            "(SELECT person_id FROM embeddings)")
            return int(n)

    # ---- the index's rows and change detection -----------------------------------------------
    def data_version(self) -> int:
        """Changes when another connection commits (``PRAGMA data_version``: microseconds)."""
        return int(self._all("PRAGMA data_version")[0][0])

    def index_rows(self, fingerprint: str) -> list[tuple[int, str, bytes, int]]:
        return self._all(
            """SELECT e.person_id, p.name, e.vector, e.dim FROM embeddings e
               JOIN people p ON p.id = e.person_id
               WHERE e.model_fingerprint = ? ORDER BY e.person_id, e.id""", [fingerprint])

    def negative_rows(self, fingerprint: str) -> list[tuple[int, bytes, int]]:
        return self._all("SELECT person_id, vector, dim FROM negatives"
                         " WHERE model_fingerprint = ? ORDER BY person_id, id", [fingerprint])

    # ---- the face library: ids -------------------------------------------------------------
    def reserve_ids(self, table: str, n: int) -> range:
        """``n`` ids of ``table`` (sightings or groups) nobody else will use, inside the
        caller's transaction: the recorder hands them out before its rows are written (events
        carry them), also with two services writing into one gallery."""
        assert table in ("sightings", "groups")
        with self.lock:
            top = max(int(self.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
                          .fetchone()[0]), self.last_id(table))
            if self.db.execute("SELECT 1 FROM sqlite_sequence WHERE name = ?",
                               [table]).fetchone():
                self.db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?",
                                [top + n, table])
            else:
                self.db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)",
                                [table, top + n])
        return range(top + 1, top + n + 1)

    def last_id(self, table: str) -> int:
        """The highest id ever handed out in ``table`` (0: none): an id at or below it that is
        missing was forgotten, not mistyped."""
        rows = self._all("SELECT seq FROM sqlite_sequence WHERE name = ?", [table])
        return int(rows[0][0]) if rows else 0

    # ---- sightings -------------------------------------------------------------------------
    def sighting_count(self) -> int:
        return int(self._all("SELECT COUNT(*) FROM sightings")[0][0])

    def insert_sighting(self, row: dict[str, object]) -> None:
        """One sighting (its id given); a crop given as an image is stored as a JPEG."""
        crop = row.get("crop")
        if isinstance(crop, np.ndarray):
            row = {**row, "crop": _encode_crop(crop)}
        with self.lock:
            self.db["sightings"].insert(row)

    def sighting(self, sid: int) -> dict[str, object] | None:
        rows = self.sightings("s.id = ?", [sid], 1, vectors=True)
        return rows[0] if rows else None

    def sightings(self, where: str = "1", params: Sequence[object] = (), limit: int | None = None,
                  vectors: bool = False, order: str = "s.time DESC, s.id DESC"
                  ) -> list[dict[str, object]]:
        """Sightings (newest first) with the person's current name; ``where`` is built by the
        callers in this package from fixed text, the values go in ``params``."""
        extra = ", s.vector, s.dim, s.model_fingerprint, s.crop" if vectors else ""
        sql = (f"SELECT s.id, s.time, s.source, s.frame, s.file, s.track_id, s.person_id, "
               f"p.name, s.score, s.quality, s.group_id, s.status, s.snapshot{extra} "
               f"FROM sightings s LEFT JOIN people p ON p.id = s.person_id WHERE {where} "
               f"ORDER BY {order}" + ("" if limit is None else f" LIMIT {int(limit)}"))
        with self.lock:
            return list(self.db.query(sql, list(params)))

    def set_sighting(self, sid: int, **values: object) -> None:
        with self.lock:
            self.db["sightings"].update(sid, values)

    def orphans(self, fingerprint: str) -> list[tuple[int, bytes, str]]:
        """Unknown sightings of this model in no group (id, vector, time), oldest first."""
        return self._all("SELECT id, vector, time FROM sightings WHERE group_id IS NULL AND "
                         "person_id IS NULL AND vector IS NOT NULL AND model_fingerprint = ? "
                         "ORDER BY time, id", [fingerprint])

    def delete_sightings(self, where: str, params: Sequence[object] = ()) -> int:
        """Delete sightings (``where`` from fixed text), then open groups left empty."""
        with self.lock:
            n = self.db.execute(f"DELETE FROM sightings WHERE {where}", list(params)).rowcount
            self.drop_empty_groups()
            return int(n)

    def retain(self, max_count: int, before: str) -> int:
        """Retention: drop sightings older than ``before`` and the oldest beyond
        ``max_count``; how many went."""
        n = self.delete_sightings("time < ?", [before])
        with self.lock:
            excess = int(self.db.execute("SELECT COUNT(*) FROM sightings").fetchone()[0]) - \
                max_count
        if excess > 0:
            n += self.delete_sightings("id IN (SELECT id FROM sightings ORDER BY time, id "
                                       "LIMIT ?)", [excess])
        return n

    # ---- groups ----------------------------------------------------------------------------
    def add_group(self, gid: int, when: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR IGNORE INTO groups(id, first_seen, last_seen) "
                            "VALUES (?, ?, ?)", [gid, when, when])

    def group(self, gid: int) -> dict[str, object] | None:
        with self.lock:
            rows = list(self.db.query(
                "SELECT g.id, g.state, g.merged_into, g.ignored, p.name FROM groups g "
                "LEFT JOIN people p ON p.id = g.person_id WHERE g.id = ?", [gid]))
        return rows[0] if rows else None

    def touch_group(self, gid: int, when: str) -> None:
        with self.lock:
            self.db.execute("UPDATE groups SET last_seen = max(last_seen, ?), "
                            "first_seen = min(first_seen, ?) WHERE id = ?", [when, when, gid])

    def merge_group(self, keep: int, gone: int) -> None:
        """``gone``'s members move to ``keep``; ``gone`` stays as a tombstone pointing there."""
        with self.lock:
            db = self.db
            db.execute("UPDATE sightings SET group_id = ? WHERE group_id = ?", [keep, gone])
            db.execute("""UPDATE groups SET
                              first_seen = min(first_seen, (SELECT first_seen FROM groups
                                                            WHERE id = :gone)),
                              last_seen = max(last_seen, (SELECT last_seen FROM groups
                                                          WHERE id = :gone)),
                              ignored = max(ignored, (SELECT ignored FROM groups
                                                      WHERE id = :gone))
                          WHERE id = :keep""", {"keep": keep, "gone": gone})
            db.execute("UPDATE groups SET state = 'merged', merged_into = ? WHERE id = ?",
                       [keep, gone])
            db.execute("UPDATE groups SET merged_into = ? WHERE merged_into = ?", [keep, gone])

    def assign_group(self, gid: int, person_id: int) -> int:
        """Every member of group ``gid`` becomes ``person_id``'s; the group a tombstone."""
        with self.lock:
            n = self.db.execute("UPDATE sightings SET person_id = ?, status = 'assigned', "
                                "group_id = NULL WHERE group_id = ?", [person_id, gid]).rowcount
            self.db.execute("UPDATE groups SET state = 'assigned', person_id = ? WHERE id = ?",
                            [person_id, gid])
            return int(n)

    def drop_empty_groups(self) -> None:
        with self.lock:
            self.db.execute("DELETE FROM groups WHERE state = 'open' AND id NOT IN "
                            "(SELECT group_id FROM sightings WHERE group_id IS NOT NULL)")

    def set_ignored(self, gid: int, ignored: bool) -> None:
        with self.lock:
            self.db.execute("UPDATE groups SET ignored = ? WHERE id = ?", [int(ignored), gid])

    def group_rows(self, fingerprint: str) -> list[tuple[int, bytes]]:
        """(group id, vector) of every member of an open group, for ``groups.Groups.build``."""
        return self._all("SELECT s.group_id, s.vector FROM sightings s JOIN groups g ON "
                         "g.id = s.group_id WHERE g.state = 'open' AND s.model_fingerprint = ? "
                         "ORDER BY s.group_id", [fingerprint])

    def ignored_groups(self) -> list[int]:
        return [r[0] for r in self._all("SELECT id FROM groups WHERE ignored = 1 AND "
                                        "state = 'open'")]

    def group_list(self, include_ignored: bool) -> list[dict[str, object]]:
        """Open groups with members, largest first: id, size, first_seen, last_seen, ignored."""
        hide = "" if include_ignored else "AND g.ignored = 0"
        with self.lock:
            return list(self.db.query(
                f"""SELECT g.id, COUNT(s.id) AS size, MIN(s.time) AS first_seen,
                           MAX(s.time) AS last_seen, g.ignored
                    FROM groups g JOIN sightings s ON s.group_id = g.id
                    WHERE g.state = 'open' {hide}
                    GROUP BY g.id ORDER BY size DESC, last_seen DESC, g.id"""))

    def add_negative(self, person_id: int, vector: bytes, dim: int, fingerprint: str,
                     sighting_id: int, now: str) -> None:
        with self.lock:
            self.db["negatives"].insert({"person_id": person_id, "vector": vector, "dim": dim,
                                         "model_fingerprint": fingerprint,
                                         "sighting_id": sighting_id, "created_at": now})

    # ---- backup ----------------------------------------------------------------------------
    def backup_to(self, dest: Path) -> None:
        """The whole file through SQLite's online backup API (consistent while others write)."""
        target = sqlite3.connect(dest)
        try:
            with self.lock:
                self.db.conn.backup(target)
        finally:
            target.close()

    def error_message(self, e: sqlite3.Error) -> str:
        return _error_message(e, self.path)

    def close(self) -> None:
        with self.lock:
            self.db.close()


# ---- read-only inspection (doctor) --------------------------------------------------------------
@dataclass(frozen=True)
class GalleryReport:
    """What ``inspect`` found in a gallery file."""

    path: Path
    integrity: str  # "ok", or the first problem PRAGMA integrity_check reports
    version: int  # the file's schema version (PRAGMA user_version)
    people: int
    stale: int  # embeddings of another model than the fingerprint given (0 without one)
    wal: bool  # in WAL mode (the CLI can write while the service reads)
    embeddings: int = 0  # of the fingerprint given (what the threshold in force depends on)

    @property
    def current(self) -> bool:
        """Written by this program's schema version (else opening it migrates or refuses)."""
        return self.version == SCHEMA_VERSION


def inspect(path: str | Path, fingerprint: str | None = None) -> GalleryReport:
    """Look at an existing gallery file and change nothing; GalleryError (one line) when it
    cannot be read or is not a gallery.

    mode=ro still creates -wal/-shm files when they are missing, which as root would lock the
    service out. So: ro only as the owner while they exist (someone has the gallery open: its
    WAL must be read); otherwise immutable=1, which reads the main file and creates nothing.
    """
    path = Path(path).expanduser()
    _check_header(path)
    mine = path.stat().st_uid == os.geteuid()
    in_use = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro{'' if mine and in_use else '&immutable=1'}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = _foreign(conn, path)
            ours = version > 0
            people = conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] if ours else 0
            stale = 0 if fingerprint is None or not ours else conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE model_fingerprint != ?",
                [fingerprint]).fetchone()[0]
            mine_rows = 0 if fingerprint is None or not ours else conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE model_fingerprint = ?",
                [fingerprint]).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise GalleryError(f"{path}: {' '.join(str(e).split())}") from None
    return GalleryReport(path, str(integrity), version, int(people), int(stale), _is_wal(path),
                         int(mine_rows))
