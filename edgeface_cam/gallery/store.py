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
TABLES: list[tuple[str, ...]] = [("people", "embeddings")]  # TABLES[i]: what MIGRATIONS[i] adds
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
            "crop": None if crop is None else _encode_crop(crop),
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
