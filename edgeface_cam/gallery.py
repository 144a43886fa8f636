"""The gallery: enrolled people and their embeddings in SQLite, matched from an in-memory matrix.

One file (``gallery.db``) is shared by the running service and the CLI (``enroll``, ``remove``,
...), often as two processes at once. Hence: WAL (readers never block the writer), a busy
timeout plus ``BEGIN IMMEDIATE`` for every write (the lock is taken up front, so a writer waits
instead of failing with "database is locked" on a read-to-write upgrade), one transaction per
enrolment, and ``PRAGMA data_version`` so the service notices another process's change cheaply.

Every embedding is stored with the fingerprint of the model that produced it (sha256 of the
.tflite). Only embeddings of *this* model are compared; the others are "stale" and can be
re-embedded from the small JPEG crop kept beside each vector. All SQL lives in this module.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import sqlite_utils

log = logging.getLogger(__name__)

# Cosine similarity at or above which a face is called a known person. A starting point only:
# the right value depends on the model and the camera; the model card's evaluation and
# docs/gallery-and-events.md say how to choose it.
DEFAULT_THRESHOLD = 0.35
MAX_NAME_LENGTH = 64
CROP_JPEG_QUALITY = 90
SCHEMA_VERSION = 1

# Migrations: MIGRATIONS[i] takes the schema from version i to i + 1 (PRAGMA user_version).
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


class GalleryError(ValueError):
    """A user-facing gallery problem, with a one-line message."""


@dataclass(frozen=True)
class Match:
    name: str | None  # None: unknown (best score below the threshold, or an empty gallery)
    score: float  # best cosine similarity found, also for an unknown face
    person_id: int | None


@dataclass(frozen=True)
class Person:
    name: str
    created_at: str
    notes: str | None
    embeddings: int  # embeddings of the current model (the ones matched)
    other_model: int  # embeddings of another model: stale until re-embedded


@dataclass(frozen=True)
class _Index:
    """The immutable in-memory matrix; swapped whole, so ``match`` needs no lock."""

    matrix: np.ndarray  # (M, D) float32 unit rows, sorted by person
    starts: np.ndarray  # (P,) first row of each person
    person_ids: np.ndarray  # (P,)
    names: tuple[str, ...]  # (P,)

    @classmethod
    def empty(cls) -> _Index:
        return cls(np.zeros((0, 0), np.float32), np.zeros(0, np.intp), np.zeros(0, np.int64), ())


def validate_name(name: object) -> str:
    """The trimmed name, or GalleryError saying what is wrong with it."""
    if not isinstance(name, str):
        raise GalleryError(f"a name must be text, got {type(name).__name__}")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise GalleryError("a name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"name too long ({len(name)} characters, at most {MAX_NAME_LENGTH})")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    if bad:
        raise GalleryError(f"name {name.encode('unicode_escape').decode()!r} contains a control "
                           f"character ({bad[0].encode('unicode_escape').decode()})")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _unit_rows(x: object, what: str = "embeddings") -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise GalleryError(f"{what} must be an (N, D) array with N, D >= 1, got shape "
                           f"{np.shape(x)}")
    if not np.isfinite(a).all():
        raise GalleryError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise GalleryError(f"{what} contain an all-zero vector")
    return np.ascontiguousarray(a / norms, dtype=np.float32)


def _encode_crop(crop: np.ndarray) -> bytes:
    """A small JPEG of the aligned crop: enough to re-embed with a future model."""
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    if not ok:
        raise GalleryError(f"could not encode a crop of shape {crop.shape} as JPEG")
    return buf.tobytes()


def _error_message(e: sqlite3.Error, path: Path) -> str:
    code = getattr(e, "sqlite_errorname", "") or ""
    text = str(e)
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


class Gallery:
    """Enrolled people in a SQLite file; ``match`` compares against this model's embeddings only.

    ``fingerprint`` identifies the embedding model (``Embedder.fingerprint``). Thread-safe: writes
    are serialised by a lock; ``match``/``match_many`` read an immutable snapshot.
    """

    def __init__(self, path: str | Path, fingerprint: str, threshold: float = DEFAULT_THRESHOLD,
                 busy_timeout_ms: int = 5000) -> None:
        if not fingerprint or not isinstance(fingerprint, str):
            raise GalleryError("a gallery needs the model fingerprint (Embedder.fingerprint)")
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            threshold = math.nan
        if not -1.0 <= threshold <= 1.0:
            raise GalleryError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.threshold = float(threshold)
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._lock = threading.RLock()
        self._index = _Index.empty()
        self._dirty = False  # we wrote: reload before the next match (see _current)
        self._data_version: int | None = None
        self.read_only = False
        self.db = self._connect()
        self.refresh(force=True)

    # ---- opening -----------------------------------------------------------------------------
    def _connect(self) -> sqlite_utils.Database:
        path = self.path
        if path.is_dir():
            raise GalleryError(f"gallery path {path} is a folder; give a file such as "
                               f"{path / 'gallery.db'}")
        exists = path.exists()
        if not exists:
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
            if not (self.read_only and getattr(e, "sqlite_errorname", "") == "SQLITE_CANTOPEN"):
                raise GalleryError(_error_message(e, path)) from None
        # A WAL file in a read-only folder without its -shm file cannot be opened read-only;
        # immutable=1 reads it without the shared-memory index (nothing can change it there).
        log.warning("gallery %s is on a read-only filesystem: opened as immutable", path)
        try:
            return self._open(uri + "&immutable=1")
        except sqlite3.Error as e:
            raise GalleryError(_error_message(e, path)) from None

    def _open(self, uri: str) -> sqlite_utils.Database:
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE); the
        # driver's implicit ones would take the write lock late. check_same_thread=False:
        # the service matches on its worker thread; self._lock serialises connection use.
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_ms / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            db.execute("PRAGMA foreign_keys = ON")
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

    def _migrate(self, db: sqlite_utils.Database) -> None:
        """Bring the schema to SCHEMA_VERSION: the hook for future schema changes."""
        def version() -> int:
            return int(db.conn.execute("PRAGMA user_version").fetchone()[0])

        if version() == SCHEMA_VERSION:
            return
        if version() > SCHEMA_VERSION:
            raise GalleryError(f"gallery {self.path} has schema version {version()}, newer than "
                               f"this edgeface-cam understands ({SCHEMA_VERSION}); upgrade it")
        if self.read_only:
            raise GalleryError(f"gallery {self.path} is read-only and needs a schema upgrade "
                               f"(version {version()} -> {SCHEMA_VERSION})")
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            for v in range(version(), SCHEMA_VERSION):
                if v == 0 and db.table_names():
                    raise GalleryError(f"{self.path} is a SQLite file but not an edgeface-cam "
                                       "gallery (it has other tables)")
                db.executescript(MIGRATIONS[v])
                db.execute(f"PRAGMA user_version = {v + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise

    # ---- writes ------------------------------------------------------------------------------
    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite_utils.Database]:
        """One IMMEDIATE transaction; sqlite errors become one-line GalleryErrors."""
        if self.read_only:
            raise GalleryError(f"cannot {what}: gallery {self.path} is read-only")
        with self._lock:
            db = self.db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    db.rollback()
                    raise
            except sqlite3.Error as e:
                raise GalleryError(f"cannot {what}: {_error_message(e, self.path)}") from None
            # Our own commits do not change our data_version. Reload lazily, at the next
            # match: a bulk enrolment then reloads once, not once per person.
            self._dirty = True

    def _person_id(self, db: sqlite_utils.Database, name: str) -> int | None:
        row = db.execute("SELECT id FROM people WHERE name = ?", [name]).fetchone()
        return None if row is None else int(row[0])

    def enroll(self, name: str, embeddings: np.ndarray,
               crops: Sequence[np.ndarray] | None = None, sources: Sequence[str] | None = None,
               qualities: Sequence[float] | None = None, notes: str | None = None) -> int:
        """Add a person (or more embeddings to an existing one) in one transaction; their id.

        ``crops`` are the aligned BGR crops the embeddings came from, kept as small JPEGs so the
        gallery can be re-embedded by a future model. ``notes`` replaces the person's notes when
        given.
        """
        name = validate_name(name)
        vectors = _unit_rows(embeddings)
        n, dim = vectors.shape
        for label, seq in (("crops", crops), ("sources", sources), ("qualities", qualities)):
            if seq is not None and len(seq) != n:
                raise GalleryError(f"got {n} embeddings but {len(seq)} {label}")
        for i, crop in enumerate(crops or ()):
            if not (isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.size
                    and (crop.ndim == 2 or (crop.ndim == 3 and crop.shape[2] in (1, 3)))):
                raise GalleryError(f"crop {i} must be a BGR or grey uint8 image, got "
                                   f"{getattr(crop, 'dtype', type(crop).__name__)} "
                                   f"{getattr(crop, 'shape', '')}")
        if notes is not None and not isinstance(notes, str):
            raise GalleryError("notes must be text")
        now = _now()
        with self._write(f"enrol {name!r}") as db:
            row = db.execute("SELECT dim FROM embeddings WHERE model_fingerprint = ? LIMIT 1",
                             [self.fingerprint]).fetchone()
            if row is not None and row[0] != dim:
                raise GalleryError(f"embedding size {dim} differs from the gallery's {row[0]} "
                                   "for this model")
            pid = self._person_id(db, name)
            if pid is None:
                pid = int(db["people"].insert({"name": name, "created_at": now, "notes": notes})
                          .last_pk)
            elif notes is not None:
                db["people"].update(pid, {"notes": notes})
            # The generator encodes crops inside the transaction, so a failure on the k-th
            # crop rolls back the person and the first k-1 rows alike.
            rows = ({
                "person_id": pid,
                "vector": vectors[i].tobytes(),
                "dim": dim,
                "model_fingerprint": self.fingerprint,
                "quality": None if qualities is None else float(qualities[i]),
                "source": None if sources is None else str(sources[i]),
                "crop": None if crops is None else _encode_crop(crops[i]),
                "created_at": now,
            } for i in range(n))
            db["embeddings"].insert_all(rows, batch_size=100)
        log.info("enrolled %s: %d embedding(s)", name, n)
        return pid

    def remove(self, name: str) -> None:
        """Delete a person and (by cascade) all their embeddings."""
        name = validate_name(name)
        with self._write(f"remove {name!r}") as db:
            pid = self._person_id(db, name)
            if pid is None:
                raise GalleryError(f"no person named {name!r} in the gallery")
            db["people"].delete(pid)

    def rename(self, old: str, new: str) -> None:
        old, new = validate_name(old), validate_name(new)
        with self._write(f"rename {old!r}") as db:
            pid = self._person_id(db, old)
            if pid is None:
                raise GalleryError(f"no person named {old!r} in the gallery")
            other = self._person_id(db, new)
            if other is not None and other != pid:
                raise GalleryError(f"a person named {new!r} already exists; remove or rename "
                                   "them first")
            db["people"].update(pid, {"name": new})

    def reembed(self, embed_fn: Callable[[list[np.ndarray]], np.ndarray],
                batch_size: int = 32) -> int:
        """Re-embed stale embeddings (another model's) from their stored crops; how many.

        Each batch is its own transaction, so an interrupted run keeps what it finished and
        the next run continues. Stale rows without a crop cannot be fixed: see remove_stale().
        """
        with self._lock:
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM embeddings WHERE model_fingerprint != ? AND crop IS NOT NULL"
                " ORDER BY id", [self.fingerprint]).fetchall()]
        done = 0
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size]
            marks = ",".join("?" * len(batch))
            with self._lock:
                rows = self.db.execute(f"SELECT id, crop FROM embeddings WHERE id IN ({marks})",
                                       batch).fetchall()
            crops = []
            for _, blob in rows:
                crop = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
                if crop is None:
                    raise GalleryError(f"stored crop of embedding {_} cannot be decoded")
                crops.append(crop)
            vectors = _unit_rows(embed_fn(crops), "re-embedded vectors")
            if len(vectors) != len(rows):
                raise GalleryError(f"embed_fn returned {len(vectors)} vectors for {len(rows)} "
                                   "crops")
            with self._write("re-embed") as db:
                db.conn.executemany(
                    "UPDATE embeddings SET vector = ?, dim = ?, model_fingerprint = ?"
                    " WHERE id = ?",
                    [(v.tobytes(), v.shape[0], self.fingerprint, r[0])
                     for v, r in zip(vectors, rows, strict=True)])
            done += len(rows)
        if self.stale():
            log.warning("%d stale embedding(s) have no stored crop and cannot be re-embedded",
                        self.stale())
        return done

    def remove_stale(self) -> int:
        """Delete every other-model embedding, and people left with none; how many rows."""
        with self._write("remove stale embeddings") as db:
            n = db.execute("DELETE FROM embeddings WHERE model_fingerprint != ?",
                           [self.fingerprint]).rowcount
            db.execute("DELETE FROM people WHERE id NOT IN (SELECT person_id FROM embeddings)")
        return n

    # ---- reads -------------------------------------------------------------------------------
    def people(self) -> list[Person]:
        with self._lock:
            rows = self.db.query(
                """SELECT p.name, p.created_at, p.notes,
                          COALESCE(SUM(e.model_fingerprint = :fp), 0) AS embeddings,
                          COALESCE(SUM(e.model_fingerprint != :fp), 0) AS other_model
                   FROM people p LEFT JOIN embeddings e ON e.person_id = p.id
                   GROUP BY p.id ORDER BY p.name COLLATE NOCASE""",
                {"fp": self.fingerprint})
            return [Person(**r) for r in rows]

    def stale(self) -> int:
        """Embeddings of another model (never compared): re-embed them or remove them."""
        with self._lock:
            return int(self.db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE model_fingerprint != ?",
                [self.fingerprint]).fetchone()[0])

    def __len__(self) -> int:
        """Embeddings of this model held in memory for matching."""
        return int(self._current().matrix.shape[0])

    def refresh(self, force: bool = False) -> bool:
        """Reload the matrix if another process changed the file; True if it reloaded.

        ``PRAGMA data_version`` costs a few microseconds, so the pipeline may call this every
        frame. A read failure is logged and matching goes on from memory.
        """
        with self._lock:
            try:
                version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
                if not force and not self._dirty and version == self._data_version:
                    return False
                self._reload(version)
                return True
            except sqlite3.Error as e:
                if force:
                    raise GalleryError(_error_message(e, self.path)) from None
                log.warning("gallery refresh failed, matching from memory: %s", e)
                return False

    def _reload(self, version: int | None = None) -> None:
        if version is None:
            version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        # data_version is read first: a change committed during the SELECT bumps it again,
        # so the next refresh() reloads rather than missing it.
        rows = self.db.execute(
            """SELECT e.person_id, p.name, e.vector, e.dim FROM embeddings e
               JOIN people p ON p.id = e.person_id
               WHERE e.model_fingerprint = ? ORDER BY e.person_id, e.id""",
            [self.fingerprint]).fetchall()
        self._data_version = version
        self._dirty = False
        if not rows:
            self._index = _Index.empty()
            return
        dims = {r[3] for r in rows}
        if len(dims) > 1:
            raise GalleryError(f"gallery {self.path} holds embeddings of sizes {sorted(dims)} "
                               "under one model fingerprint")
        matrix = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
        pids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
        names = tuple(rows[i][1] for i in starts)
        self._index = _Index(np.ascontiguousarray(matrix), starts, pids[starts], names)

    def _current(self) -> _Index:
        if self._dirty:
            with self._lock:
                if self._dirty:
                    try:
                        self._reload()
                    except sqlite3.Error as e:
                        # Match from memory; refresh() retries (data_version differs from None).
                        log.warning("gallery reload failed, matching from memory: %s", e)
                        self._dirty, self._data_version = False, None
        return self._index

    def match(self, embedding: np.ndarray) -> Match:
        """The best person by maximum cosine over their embeddings; name None below threshold."""
        idx = self._current()
        q = np.asarray(embedding, np.float32).reshape(-1)
        if len(idx.names) == 0 or q.shape[0] != idx.matrix.shape[1]:
            return self.match_many(q[None])[0]  # the empty / wrong-size answers live there
        # The hot path: one matrix-vector product (BLAS gemv) and a per-person max.
        per_person = np.maximum.reduceat(idx.matrix @ q, idx.starts)
        b = int(per_person.argmax())
        s = float(per_person[b]) / max(float(np.linalg.norm(q)), 1e-12)
        if s >= self.threshold:
            return Match(idx.names[b], s, int(idx.person_ids[b]))
        return Match(None, s, None)

    def match_many(self, embeddings: np.ndarray) -> list[Match]:
        idx = self._current()  # one snapshot for the whole call
        q = np.asarray(embeddings, np.float32)
        if q.ndim != 2:
            raise GalleryError(f"expected (N, D) embeddings, got shape {q.shape}")
        if len(idx.names) == 0:
            return [Match(None, 0.0, None) for _ in range(len(q))]
        if q.shape[1] != idx.matrix.shape[1]:
            raise GalleryError(f"embedding size {q.shape[1]} differs from the gallery's "
                               f"{idx.matrix.shape[1]}")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        scores = q @ idx.matrix.T  # (N, M) cosines: one BLAS call
        per_person = np.maximum.reduceat(scores, idx.starts, axis=1)  # (N, P): rows are sorted
        best = per_person.argmax(axis=1)
        out = []
        for i, b in enumerate(best):
            s = float(per_person[i, b])
            if s >= self.threshold:
                out.append(Match(idx.names[b], s, int(idx.person_ids[b])))
            else:
                out.append(Match(None, s, None))
        return out

    # ---- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
