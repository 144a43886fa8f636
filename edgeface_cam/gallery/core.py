"""``Gallery``: enrolled people in the store, matched through the in-memory index.

Every embedding is stored with the fingerprint of the model that produced it (sha256 of the
.tflite). Only embeddings of *this* model are compared; the others are "stale" and can be
re-embedded from the small JPEG crop kept beside each vector.

Names follow one rule everywhere (``base.name_key``): trimmed and compared case-insensitively.
Lookups, ``remove``, ``rename``'s source and enrolling into an existing person all find the
stored person, and what they return or report is the stored spelling.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlite_utils

from ..config import RecognizerConfig
from ..threshold import AUTO, FALLBACK_THRESHOLD, Threshold
from .base import GalleryError, Match, Person, closest_name, unit_rows, validate_name
from .index import Index
from .store import Store, decode_crop

log = logging.getLogger(__name__)


def default_threshold() -> float:
    """The threshold of a Gallery given none: ``recognizer.threshold``'s default from its one
    definition in the config when that is a number; for ``auto`` (which needs the model
    card's calibration, see ``edgeface_cam.threshold``) the documented fixed fallback."""
    value = RecognizerConfig().threshold
    return FALLBACK_THRESHOLD if value == AUTO else float(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_threshold(threshold: object) -> float:
    try:
        value = float(threshold)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not -1.0 <= value <= 1.0:
        raise GalleryError(f"threshold must be a cosine similarity in [-1, 1], got {value}")
    return value


def _check_extras(n: int, crops: Sequence[np.ndarray] | None, sources: Sequence[str] | None,
                  qualities: Sequence[float] | None) -> list[tuple]:
    """(crop, source, quality) per embedding, after checking what was given."""
    for label, seq in (("crops", crops), ("sources", sources), ("qualities", qualities)):
        if seq is not None and len(seq) != n:
            raise GalleryError(f"got {n} embeddings but {len(seq)} {label}")
    for i, crop in enumerate(crops or ()):
        if not (isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.size
                and (crop.ndim == 2 or (crop.ndim == 3 and crop.shape[2] in (1, 3)))):
            raise GalleryError(f"crop {i} must be a BGR or grey uint8 image, got "
                               f"{getattr(crop, 'dtype', type(crop).__name__)} "
                               f"{getattr(crop, 'shape', '')}")
    return [(None if crops is None else crops[i], None if sources is None else sources[i],
             None if qualities is None else qualities[i]) for i in range(n)]


class Gallery:
    """Enrolled people in a SQLite file; ``match`` compares against this model's embeddings only.

    ``fingerprint`` identifies the embedding model (``Embedder.fingerprint``); ``threshold`` is
    a number or an ``edgeface_cam.threshold.Threshold`` (``auto``: recomputed for the people and
    embeddings held whenever the gallery reloads); default ``default_threshold()``.
    Thread-safe: writes are serialised by the store's lock; ``match``/``match_many`` read an
    immutable snapshot.
    """

    def __init__(self, path: str | Path, fingerprint: str,
                 threshold: float | Threshold | None = None,
                 busy_timeout_ms: int = 5000) -> None:
        if not fingerprint or not isinstance(fingerprint, str):
            raise GalleryError("a gallery needs the model fingerprint (Embedder.fingerprint)")
        self._policy = (threshold if isinstance(threshold, Threshold) else Threshold(
            fixed=_check_threshold(default_threshold() if threshold is None else threshold)))
        self._in_force: tuple[Index, float] | None = None  # (index, its threshold)
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._index = Index.empty()
        self._dirty = False  # we wrote: reload before the next match (see _current)
        self._data_version: int | None = None
        self._store = Store(self.path, busy_timeout_ms)
        self.refresh(force=True)

    @property
    def db(self) -> sqlite_utils.Database:
        return self._store.db

    @property
    def read_only(self) -> bool:
        return self._store.read_only

    @property
    def busy_timeout_ms(self) -> int:
        return self._store.busy_timeout_ms

    # ---- names -------------------------------------------------------------------------------
    def _find(self, name: str) -> tuple[int, str] | None:
        """(id, stored name) of the person ``name`` means under the name rule, or None."""
        found = self._store.people_matching(name)
        if len(found) > 1:  # only in files written before the rule covered non-ASCII case
            exact = [f for f in found if f[1] == name]
            if len(exact) != 1:
                raise GalleryError(f"{len(found)} people are named {name!r} ignoring case "
                                   f"({', '.join(repr(f[1]) for f in found)}); give the exact "
                                   "spelling")
            found = exact
        return found[0] if found else None

    def _require(self, name: str) -> tuple[int, str]:
        found = self._find(name)
        if found is None:
            near = self.suggest(name)
            hint = f" (did you mean {near!r}?)" if near else ""
            raise GalleryError(f"no person named {name!r} in the gallery{hint}")
        return found

    def require_person(self, name: str) -> Person:
        """``find_person``, or a GalleryError with a did-you-mean when nobody is called that."""
        pid, _ = self._require(validate_name(name))
        return self._store.people(self.fingerprint, pid)[0]

    def find_person(self, name: str) -> Person | None:
        """The person ``name`` means (trimmed, any case), with the stored spelling; None if
        nobody."""
        found = self._find(validate_name(name))
        return None if found is None else self._store.people(self.fingerprint, found[0])[0]

    def suggest(self, name: str) -> str | None:
        """The stored name closest to ``name``, for a did-you-mean; None when none is close."""
        return closest_name(name, self._store.names())

    # ---- writes ------------------------------------------------------------------------------
    @contextmanager
    def _write(self, what: str) -> Iterator[None]:
        with self._store.write(what):
            yield
        # Our own commits do not change our data_version. Reload lazily, at the next match:
        # a bulk enrolment then reloads once, not once per person.
        self._dirty = True

    def enroll(self, name: str, embeddings: np.ndarray,
               crops: Sequence[np.ndarray] | None = None, sources: Sequence[str] | None = None,
               qualities: Sequence[float] | None = None, notes: str | None = None,
               then: Callable[[int], None] | None = None) -> int:
        """Add a person (or more embeddings to the existing person of that name, whatever its
        case) in one transaction; their id. ``find_person`` gives the stored spelling.

        ``crops`` are the aligned BGR crops the embeddings came from, kept as small JPEGs so the
        gallery can be re-embedded by a future model. ``notes`` replaces the person's notes when
        given. ``then(person_id)`` runs inside the same transaction (the library's assign gives
        the sightings to the person there: all of it or none).
        """
        name = validate_name(name)
        vectors = unit_rows(embeddings)
        extras = _check_extras(len(vectors), crops, sources, qualities)
        if notes is not None and not isinstance(notes, str):
            raise GalleryError("notes must be text")
        now, store = _now(), self._store
        with self._write(f"enrol {name!r}"):
            dim = store.dim(self.fingerprint)
            if dim is not None and dim != vectors.shape[1]:
                raise GalleryError(f"embedding size {vectors.shape[1]} differs from the "
                                   f"gallery's {dim} for this model")
            found = self._find(name)
            if found is None:
                pid = store.add_person(name, notes, now)
            else:
                pid, name = found
                if notes is not None:
                    store.set_notes(pid, notes)
            store.add_embeddings(pid, vectors, self.fingerprint, now, extras)
            if then is not None:
                then(pid)
        log.info("enrolled %s: %d embedding(s)", name, len(vectors))
        return pid

    def create(self, name: str, notes: str | None = None) -> str:
        """A new person with no faces yet (the web UI adds them next); their stored name.
        GalleryError when someone of that name (any case) exists."""
        name = validate_name(name)
        with self._write(f"add {name!r}"):
            found = self._find(name)
            if found is not None:
                raise GalleryError(f"a person named {found[1]!r} already exists")
            self._store.add_person(name, notes, _now())
        return name

    def remove(self, name: str) -> str:
        """Delete a person and (by cascade) all their embeddings; the stored name removed."""
        name = validate_name(name)
        with self._write(f"remove {name!r}"):
            pid, stored = self._require(name)
            self._store.delete_person(pid)
        return stored

    def rename(self, old: str, new: str) -> str:
        """Rename the person ``old`` means to ``new`` (a case change is fine); their stored
        name before."""
        old, new = validate_name(old), validate_name(new)
        with self._write(f"rename {old!r}"):
            pid, stored = self._require(old)
            other = self._find(new)
            if other is not None and other[0] != pid:
                raise GalleryError(f"a person named {other[1]!r} already exists; remove or "
                                   "rename them first")
            self._store.rename_person(pid, new)
        return stored

    def reembed(self, embed_fn: Callable[[list[np.ndarray]], np.ndarray],
                batch_size: int = 32) -> int:
        """Re-embed stale embeddings (another model's) from their stored crops; how many.

        The crops are embedded ``batch_size`` at a time, then every new vector is written in
        one transaction: an interrupted run (even kill -9) leaves the gallery as it was, never
        a mix of two models. Stale rows without a crop cannot be fixed: see remove_stale().
        """
        updates: list[tuple[int, np.ndarray]] = []
        ids = self._store.stale_with_crop(self.fingerprint)
        for start in range(0, len(ids), batch_size):
            rows = self._store.crops(ids[start:start + batch_size])
            vectors = unit_rows(embed_fn([decode_crop(blob, i) for i, blob in rows]),
                                "re-embedded vectors")
            if len(vectors) != len(rows):
                raise GalleryError(f"embed_fn returned {len(vectors)} vectors for {len(rows)} "
                                   "crops")
            updates.extend((i, v) for (i, _), v in zip(rows, vectors, strict=True))
        done = 0
        if updates:
            with self._write("re-embed"):
                done = self._store.set_vectors(updates, self.fingerprint)
        left = self.stale()
        if left:
            log.warning("%d stale embedding(s) have no stored crop and cannot be re-embedded",
                        left)
        return done

    def remove_stale(self) -> int:
        """Delete every other-model embedding, and people left with none; how many rows."""
        with self._write("remove stale embeddings"):
            return self._store.remove_stale(self.fingerprint)

    # ---- reads -------------------------------------------------------------------------------
    def people(self) -> list[Person]:
        return self._store.people(self.fingerprint)

    def face_crops(self, name: str, limit: int = 12) -> list[tuple[int, bytes]]:
        """(embedding id, JPEG crop) of the person ``name`` means, best quality first (the
        web UI's thumbnails); [] for nobody."""
        person = self.find_person(name)
        return [] if person is None else self._store.face_crops(person.id, limit)

    def stale(self) -> int:
        """Embeddings of another model (never compared): re-embed them or remove them. The
        per-person counts are ``Person.other_model``."""
        return self._store.stale(self.fingerprint)

    def __len__(self) -> int:
        """Embeddings of this model held in memory for matching."""
        return len(self._current())

    def refresh(self, force: bool = False) -> bool:
        """Reload the matrix if another process changed the file; True if it reloaded.

        ``PRAGMA data_version`` costs a few microseconds, so the pipeline may call this every
        frame. A read failure is logged and matching goes on from memory.
        """
        with self._store.lock:
            try:
                version = self._store.data_version()
                if not force and not self._dirty and version == self._data_version:
                    return False
                self._reload(version)
                return True
            except sqlite3.Error as e:
                if force:
                    raise GalleryError(self._store.error_message(e)) from None
                log.warning("gallery refresh failed, matching from memory: %s", e)
                return False

    def _reload(self, version: int | None = None) -> None:
        if version is None:
            version = self._store.data_version()
        # data_version is read first: a change committed during the SELECT bumps it again,
        # so the next refresh() reloads rather than missing it.
        rows = self._store.index_rows(self.fingerprint)
        negatives = self._store.negative_rows(self.fingerprint)
        self._data_version = version
        self._dirty = False
        self._index = Index.from_rows(rows, str(self.path), negatives)

    def _current(self) -> Index:
        if self._dirty:
            with self._store.lock:
                if self._dirty:
                    try:
                        self._reload()
                    except sqlite3.Error as e:
                        # Match from memory; refresh() retries (data_version differs from None).
                        log.warning("gallery reload failed, matching from memory: %s", e)
                        self._dirty, self._data_version = False, None
        return self._index

    def embeddings_of(self, name: str) -> np.ndarray:
        """This model's embeddings of the person ``name`` means, (N, D); N = 0 for nobody."""
        person = self.find_person(name)
        index = self._current()
        return index.vectors_of(person.id) if person is not None else index.matrix[:0]

    # ---- the threshold in force ---------------------------------------------------------------
    def _threshold_for(self, index: Index) -> float:
        """The threshold for this snapshot: fixed, or auto for its people and embeddings
        (computed once per reload and logged when it moves after the first match)."""
        cached = self._in_force
        if cached is not None and cached[0] is index:
            return cached[1]
        value = self._policy.at(len(index.names), len(index))
        if self._policy.auto and cached is not None and cached[1] != value:  # run logs the first
            log.info("gallery %s: %s", self.path.name,
                     self._policy.describe(len(index.names), len(index)))
        self._in_force = (index, value)
        return value

    @property
    def threshold(self) -> float:
        """The threshold in force now (auto follows enrolments)."""
        return self._threshold_for(self._current())

    @property
    def threshold_policy(self) -> Threshold:
        return self._policy

    def describe_threshold(self) -> str:
        """One line: the threshold in force and why, with the expected share of strangers
        named (from the model card's calibration, where there is one)."""
        index = self._current()
        return self._policy.describe(len(index.names), len(index))

    def expected_fpir(self) -> float | None:
        """The expected share of strangers named at the threshold in force (None without a
        calibration)."""
        index = self._current()
        return self._policy.expected_fpir(len(index.names), len(index))

    def match(self, embedding: np.ndarray) -> Match:
        """The best person by maximum cosine over their embeddings; name None below threshold."""
        index = self._current()
        return index.match(embedding, self._threshold_for(index))

    def match_many(self, embeddings: np.ndarray) -> list[Match]:
        index = self._current()  # one snapshot
        return index.match_many(embeddings, self._threshold_for(index))

    # ---- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
