"""The face library's user actions on an open gallery: list sightings and groups, "this is X"
(assign), "not X", ignore, forget, backup and restore.

Each action is one transaction that re-checks what it was given under the write lock (a group
merged or assigned meanwhile by the running service or another command is refused as stale),
so a reader sees all of it or none of it and ``kill -9`` at any moment leaves the file as it was
before or after. The running service sees the change through ``PRAGMA data_version``: its
gallery reloads embeddings and negatives, its recorder the groups and ignored flags.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .base import GalleryError, validate_name
from .core import Gallery, _now
from .groups import JOIN, Groups
from .sightings import iso, place_orphans
from .store import SQLITE_HEADER, Store, decode_crop

ASSIGN_MAX_FACES = 10  # near-identical frames of one visit would over-train the person
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> str:
    """A time for --since/--before: ISO 8601 (a date, or a date and time; no zone = UTC) or an
    age such as 30m, 2h, 7d, 1w; the library's time string."""
    m = _RELATIVE.match(text)
    now = now or datetime.now(timezone.utc)
    if m:
        return iso(now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))}))
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise GalleryError(f"{text!r} is not a time: give ISO 8601 (2025-06-01, "
                           "2025-06-01T18:30) or an age (30m, 2h, 7d, 1w)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return iso(when)


def _nearest(wanted: int, ids: Sequence[int]) -> str:
    if not ids:
        return ""
    return f" (did you mean {min(ids, key=lambda i: (abs(i - wanted), i))}?)"


class Library:
    """The library on top of an open ``Gallery`` (its connection and name rule)."""

    def __init__(self, gallery: Gallery, join: float = JOIN) -> None:
        self.gallery = gallery
        self.store: Store = gallery._store
        self.fingerprint = gallery.fingerprint
        self.join = join

    # ---- reads -------------------------------------------------------------------------------
    def sightings(self, name: str | None = None, unknown: bool = False,
                  since: str | None = None, limit: int | None = None, *,
                  until: str | None = None, source: str | None = None,
                  before_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first; ``name``: that person's; ``unknown``: nobody's; ``since`` / ``until``:
        times (until excluded); ``source``: one camera's; ``before_id``: ids below it (pages)."""
        where: list[str] = ["1"]
        params: list[object] = []
        if name is not None:
            where.append("s.person_id = ?")
            params.append(self.gallery._require(validate_name(name))[0])
        if unknown:
            # "+": not through the person index (10,000 unknowns sorted by time took 55 ms);
            # the time index walks newest first and LIMIT stops early (0.1 ms).
            where.append("+s.person_id IS NULL")
        for sql, value in (("s.time >= ?", since), ("s.time < ?", until)):
            if value is not None:
                where.append(sql)
                params.append(parse_when(value))
        if source is not None:
            where.append("s.source = ?")
            params.append(source)
        if before_id is not None:
            where.append("s.id < ?")
            params.append(int(before_id))
        order = "s.id DESC" if before_id is not None else "s.time DESC, s.id DESC"
        return self.store.sightings(" AND ".join(where), params, limit, order=order)

    def count(self) -> int:
        """Sightings stored (the web UI's /metrics)."""
        return self.store.sighting_count()

    def crop(self, sid: int) -> bytes | None:
        """The sighting's aligned face crop as stored (JPEG), None when it has none."""
        row = self.require_sighting(sid)
        return row.get("crop")  # type: ignore[return-value]

    def groups(self, include_ignored: bool = False, limit: int | None = None,
               offset: int = 0, members: int | None = None) -> list[dict[str, Any]]:
        """Open groups, largest first, each with its ``sightings`` (newest first). A page:
        ``limit`` groups from ``offset``, each with at most ``members`` sightings (``size``
        still counts them all): the web UI's pages stay fast with 10,000 sightings."""
        out = []
        rows = self.store.group_list(include_ignored)
        for g in rows[offset:None if limit is None else offset + limit]:
            g["sightings"] = self.store.sightings("s.group_id = ?", [g["id"]], limit=members)
            out.append(g)
        return out

    def require_sighting(self, sid: int) -> dict[str, Any]:
        row = self.store.sighting(sid)
        if row is not None:
            return row
        if 0 < sid <= self.store.last_id("sightings"):
            raise GalleryError(f"sighting {sid} no longer exists (forgotten, or removed by "
                               "retention)")
        ids = [int(r["id"]) for r in self.store.sightings(limit=200)]
        raise GalleryError(f"no sighting {sid}{_nearest(sid, ids)}")

    def require_group(self, gid: int) -> dict[str, Any]:
        """The open group ``gid``; a stale id says where it went, an unknown one the nearest."""
        row = self.store.group(gid)
        if row is not None and row["state"] == "open":
            return row
        if row is not None and row["state"] == "merged":
            raise GalleryError(f"group {gid} was merged into group {row['merged_into']} "
                               f"(use --cluster {row['merged_into']})")
        if row is not None and row["state"] == "assigned":
            who = f" to {row['name']!r}" if row["name"] else ""
            raise GalleryError(f"group {gid} was already assigned{who}")
        if 0 < gid <= self.store.last_id("groups"):
            raise GalleryError(f"group {gid} no longer exists (its faces were forgotten)")
        ids = [int(g["id"]) for g in self.store.group_list(True)]
        raise GalleryError(f"no group {gid}{_nearest(gid, ids)}")

    def faces_for(self, cluster: int | None = None, sighting: int | None = None
                  ) -> list[dict[str, Any]]:
        """The best-quality faces (at most ``ASSIGN_MAX_FACES``) of a group or one sighting that
        this model embedded, with vector and crop, best first."""
        if cluster is not None:
            self.require_group(cluster)
            rows = self.store.sightings("s.group_id = ? AND s.model_fingerprint = ?",
                                        [cluster, self.fingerprint], vectors=True,
                                        order="s.quality DESC, s.id")
        else:
            assert sighting is not None
            rows = [self.require_sighting(sighting)]
        rows = [r for r in rows if r.get("vector") is not None
                and r.get("model_fingerprint") == self.fingerprint]
        if not rows:
            what = f"group {cluster}" if cluster is not None else f"sighting {sighting}"
            raise GalleryError(f"{what} has no face embedded by this model")
        return rows[:ASSIGN_MAX_FACES]

    # ---- actions -----------------------------------------------------------------------------
    def assign(self, name: str, faces: list[dict[str, Any]], cluster: int | None = None,
               sighting: int | None = None) -> str:
        """Enrol ``faces`` (from ``faces_for``) as ``name`` (new or existing) and give the group
        or sighting to them, in one transaction; the stored name."""
        name = validate_name(name)
        vectors = np.stack([np.frombuffer(f["vector"], np.float32) for f in faces])
        crops = [decode_crop(f["crop"], int(f["id"])) if f.get("crop") else None
                 for f in faces]
        store = self.store

        def give(pid: int) -> None:  # inside the enrolment's transaction
            if cluster is not None:
                self.require_group(cluster)  # re-checked under the write lock
                store.assign_group(cluster, pid)
            else:
                assert sighting is not None
                self.require_sighting(sighting)
                store.set_sighting(sighting, person_id=pid, status="assigned", group_id=None)
                store.drop_empty_groups()

        kept = [c is not None for c in crops]
        self.gallery.enroll(name, vectors, crops=[c for c in crops if c is not None]
                            if all(kept) else None,
                            sources=[f"sighting {f['id']}" for f in faces],
                            qualities=[float(f["quality"] or 0.0) for f in faces], then=give)
        found = self.gallery.find_person(name)
        return found.name if found else name

    def mark_not(self, sid: int, name: str) -> str:
        """Sighting ``sid`` is not ``name``: its face becomes a negative of that person and it
        joins the unknown groups; the stored name."""
        pid, stored = self.gallery._require(validate_name(name))
        with self.gallery._write(f"mark sighting {sid} as not {stored!r}"):
            row = self.require_sighting(sid)
            if row["person_id"] != pid:
                said = f"recognised as {row['name']!r}" if row["name"] else "unknown"
                raise GalleryError(f"sighting {sid} is {said}, not {stored!r}")
            if row.get("vector") is None or row.get("model_fingerprint") != self.fingerprint:
                raise GalleryError(f"sighting {sid} has no face embedded by this model")
            self.store.add_negative(pid, row["vector"], int(row["dim"]), self.fingerprint, sid,
                                    _now())
            self.store.set_sighting(sid, person_id=None, status="not", group_id=None)
            self._group_orphans()
        return stored

    def ignore(self, gid: int, ignored: bool = True) -> None:
        with self.gallery._write(f"ignore group {gid}"):
            self.require_group(gid)
            self.store.set_ignored(gid, ignored)

    def forget(self, sighting: int | None = None, before: str | None = None,
               unknown: bool = False) -> int:
        """Delete one sighting, those before a time, or every unknown one; how many."""
        with self.gallery._write("forget sightings"):
            if sighting is not None:
                self.require_sighting(sighting)
                return self.store.delete_sightings("id = ?", [sighting])
            if before is not None:
                return self.store.delete_sightings("time < ?", [parse_when(before)])
            if unknown:
                return self.store.delete_sightings("person_id IS NULL")
        raise GalleryError("forget needs --sighting ID, --before WHEN or --unknown")

    def _group_orphans(self) -> None:
        orphans = self.store.orphans(self.fingerprint)
        if not orphans:
            return
        rows = self.store.group_rows(self.fingerprint)
        groups = Groups.build(((g, np.frombuffer(v, np.float32)) for g, v in rows),
                              self.store.ignored_groups(), join=self.join)
        place_orphans(self.store, groups, orphans,
                      lambda: self.store.reserve_ids("groups", 1).start)


# ---- backup and restore -------------------------------------------------------------------------
def backup(gallery: Gallery, dest: str | Path) -> Path:
    """The whole library into ``dest`` (SQLite's online backup API: a consistent copy while the
    service writes); written beside it first and moved into place."""
    dest = Path(dest).expanduser()
    if dest.is_dir():
        raise GalleryError(f"backup: {dest} is a folder; give a file name")
    if not dest.parent.is_dir():
        raise GalleryError(f"backup: folder {dest.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        gallery._store.backup_to(Path(tmp))
        os.replace(tmp, dest)
    except (OSError, sqlite3.Error) as e:
        Path(tmp).unlink(missing_ok=True)
        raise GalleryError(f"backup to {dest} failed: {e}") from None
    return dest


def restore(src: str | Path, dest: Path) -> int:
    """Put the library in ``src`` (a backup) in place of the gallery at ``dest``; the people it
    holds.

    ``src`` must be an edgeface-cam gallery (refused otherwise, nothing changed). It is copied
    through the backup API into the live file's connection, so the running service and other
    readers see the old library or the new, never a mix, and the old file stays whole until the
    copy is complete (a failure, even kill -9, leaves it as it was: one transaction)."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise GalleryError(f"restore: {src}: no such file")
    with open(src, "rb") as f:
        if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise GalleryError(f"restore: {src} is not a gallery (not a SQLite file)")
    copy = _private_copy(src)
    try:
        try:
            check = Store(copy)  # refuses a foreign file; migrates an old one (the copy only)
        except GalleryError as e:
            raise GalleryError(f"restore: {src} is not a usable gallery: "
                               f"{str(e).replace(str(copy), 'it')}") from None
        try:
            people = len(check.names())
            target = Store(dest)
            try:
                with target.lock:
                    check.db.conn.backup(target.db.conn)
            except sqlite3.Error as e:
                raise GalleryError(f"restore into {dest} failed: "
                                   f"{target.error_message(e)}") from None
            finally:
                target.close()
        finally:
            check.close()
    finally:
        _remove_copy(copy)
    return people


def _private_copy(src: Path) -> Path:
    """A copy to open (opening may migrate; the user's backup file stays untouched)."""
    fd, tmp = tempfile.mkstemp(prefix="edgeface-restore-", suffix=".db")
    os.close(fd)
    shutil.copyfile(src, tmp)
    return Path(tmp)


def _remove_copy(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
