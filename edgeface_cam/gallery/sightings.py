"""The sightings recorder: every decided track becomes one row, written off the frame loop.

The frame loop calls ``record`` for each decided track. That costs microseconds: the sighting's
id comes from a block reserved ahead in the file (events carry it at once, and two services
writing into one gallery never collide), an unknown face is placed into its group in memory
(``groups.Groups``: one matrix-vector product, so the event can say ``"ignored": true``), and
the row goes into a bounded queue. One writer thread with its own connection drains the queue,
a batch per transaction, encodes the crop, applies retention, and reloads the groups when
another process (the CLI's assign, not, ignore, forget) changed the file: ``PRAGMA
data_version``, polled twice a second. ``close`` writes everything queued before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..embed import l2_normalize
from ..events.base import iso_time as iso  # the one time format, as events write it
from .base import GalleryError
from .groups import JOIN, Groups
from .store import Store

log = logging.getLogger(__name__)

ID_BLOCK = 64  # ids reserved per transaction
POLL_S = 0.5  # how often an idle writer looks for other processes' changes
RETAIN_EVERY_S = 60.0
BATCH = 64  # rows per write transaction at most
_STOP = object()


@dataclass(frozen=True)
class Retention:
    """Sightings kept: at most ``max_count``, none older than ``max_days``."""

    max_count: int = 10_000
    max_days: float = 30.0

    def cutoff(self, now: datetime | None = None) -> str:
        return iso((now or datetime.now(timezone.utc)) - timedelta(days=self.max_days))


@dataclass
class _Job:
    row: dict[str, Any]
    new_group: int | None
    merged: list[int]


class _Pool:
    """Ids reserved in the file, handed out in order."""

    def __init__(self, store: Store, table: str) -> None:
        self.store, self.table = store, table
        self.ids: deque[int] = deque()

    def refill(self) -> None:
        with self.store.write(f"reserve {self.table} ids"):
            got = self.store.reserve_ids(self.table, ID_BLOCK)
        self.ids.extend(got)

    def low(self) -> bool:
        return len(self.ids) < ID_BLOCK // 2

    def take(self) -> int:
        if not self.ids:  # a burst used the block up before the writer refilled it
            self.refill()
        return self.ids.popleft()


class SightingRecorder:
    """Stores decided tracks as sightings in the gallery file at ``path``."""

    def __init__(self, path: str | Path, fingerprint: str, retention: Retention | None = None,
                 *, queue_size: int = 1000, join: float = JOIN,
                 busy_timeout_ms: int = 5000) -> None:
        self.fingerprint = fingerprint
        self.retention = retention or Retention()
        self.join = join
        self.dropped = self.written = 0
        self._store = Store(Path(path), busy_timeout_ms)
        if self._store.read_only:
            self._store.close()
            raise GalleryError(f"cannot record sightings: gallery {path} is read-only")
        self._lock = threading.Lock()  # the groups, the pools and the people cache
        self._ids = _Pool(self._store, "sightings")
        self._gids = _Pool(self._store, "groups")
        self._version = -1
        self._groups = Groups(join=join)
        self._people: dict[str, int] = {}
        self._reload()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="edgeface-sightings",
                                        daemon=True)
        self._thread.start()

    # ---- the frame loop's side ---------------------------------------------------------------
    def record(self, track: Any, source: str, when: datetime,
               event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue one decided track (``track.Track``); ``event``: its event's optional fields so
        far (frame, snapshot). The fields it adds: file (still images), sighting_id, ignored."""
        event = event or {}
        frame, snapshot = event.get("frame"), event.get("snapshot")
        file = getattr(track, "best_file", None)
        vector = getattr(track, "best_embedding", None)
        name = track.decided_name
        row: dict[str, Any] = {
            "time": iso(when), "source": str(source), "frame": frame, "file": file,
            "track_id": int(track.id), "score": round(float(track.score), 4),
            "quality": None if track.best_quality < 0 else round(float(track.best_quality), 4),
            "crop": getattr(track, "best_crop", None), "snapshot": snapshot,
            "status": "recognized" if name is not None else "unknown"}
        if vector is not None:
            v = l2_normalize(np.asarray(vector, np.float32).reshape(-1))
            row.update(vector=v.tobytes(), dim=int(v.shape[0]),
                       model_fingerprint=self.fingerprint)
        with self._lock:
            row["id"] = sid = self._ids.take()
            row["person_id"] = None if name is None else self._person_id(name)
            placed = None
            if name is None and vector is not None:
                placed = self._groups.place(v, self._gids.take)
                row["group_id"] = placed.group
            job = _Job(row, placed.group if placed and placed.new else None,
                       placed.merged if placed else [])
            self._put(job)
        fields: dict[str, Any] = {}
        if file is not None:
            fields["file"] = file
        fields["sighting_id"] = sid
        fields["ignored"] = bool(placed and placed.ignored)
        return fields

    def _person_id(self, name: str) -> int | None:
        """The person's id; one query when they were enrolled since the last reload."""
        pid = self._people.get(name)
        if pid is None:
            found = self._store.people_matching(name)
            pid = self._people[name] = found[0][0] if found else None  # type: ignore[assignment]
        return pid

    def _put(self, job: _Job) -> None:
        try:
            self._queue.put(job, timeout=1.0)
        except queue.Full:  # the file has been locked for a long while: keep recognising
            self.dropped += 1
            log.warning("sightings queue full: sighting %s not stored", job.row["id"])

    # ---- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        last_retain = 0.0
        while True:
            try:
                first = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                first = None
            jobs = [] if first is None else [first]
            while first is not None and len(jobs) < BATCH:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(j is _STOP for j in jobs)
            try:
                self._write([j for j in jobs if j is not _STOP])
                if time.monotonic() - last_retain >= RETAIN_EVERY_S or stop:
                    last_retain = time.monotonic()
                    self.retain()
                self._housekeeping()
            except (GalleryError, OSError) as e:  # a full disk must not kill the thread
                log.warning("storing sightings failed: %s", e)
            for _ in jobs:
                self._queue.task_done()
            if stop:
                return

    def _write(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        store = self._store
        with store.write("store sightings"):
            for job in jobs:
                row = job.row
                if job.new_group is not None:
                    store.add_group(job.new_group, row["time"])
                for gone in job.merged:
                    store.merge_group(row["group_id"], gone)
                gid = row.get("group_id")
                if gid is not None:
                    state = store.group(gid)
                    if state is None or state["state"] != "open":
                        row = {**row, "group_id": None}  # assigned/forgotten meanwhile
                    else:
                        store.touch_group(gid, row["time"])
                store.insert_sighting(row)
        self.written += len(jobs)

    def _housekeeping(self) -> None:
        with self._lock:
            low = self._ids.low() or self._gids.low()
        if low:
            with self._lock:
                for pool in (self._ids, self._gids):
                    if pool.low():
                        pool.refill()
        if self._store.data_version() != self._version:
            self._reload()

    def retain(self) -> int:
        """Apply retention now; how many sightings went."""
        r = self.retention
        with self._store.write("apply sightings retention"):
            n = self._store.retain(r.max_count, r.cutoff())
        if n:
            log.info("retention: %d sighting(s) removed", n)
            self._reload()
        return n

    def _reload(self) -> None:
        """The groups and names as the file has them now; orphans (unknown sightings in no
        group: a race with the CLI) are placed and written."""
        with self._lock:
            store = self._store
            self._version = store.data_version()
            for pool in (self._ids, self._gids):  # a restored file may have other ids in use
                pool.ids.clear()
                pool.refill()
            self._people = {n: i for i, n in store.people_ids()}
            rows = store.group_rows(self.fingerprint)
            self._groups = Groups.build(((g, np.frombuffer(v, np.float32)) for g, v in rows),
                                        store.ignored_groups(), join=self.join)
            orphans = store.orphans(self.fingerprint)
            if orphans:
                place_orphans(store, self._groups, orphans, self._gids.take)
                self._version = store.data_version()

    # ---- lifetime ----------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written (tests, backup)."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        """Write everything queued, then close the connection."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._store.close()


def place_orphans(store: Store, groups: Groups, orphans: list[tuple[int, bytes, str]],
                  new_id: Any) -> None:
    """Put unknown sightings that are in no group into groups, in one transaction."""
    with store.write("group unknown faces"):
        for sid, vector, when in orphans:
            placed = groups.place(np.frombuffer(vector, np.float32), new_id)
            if placed.new:
                store.add_group(placed.group, when)
            for gone in placed.merged:
                store.merge_group(placed.group, gone)
            store.set_sighting(sid, group_id=placed.group)
            store.touch_group(placed.group, when)
