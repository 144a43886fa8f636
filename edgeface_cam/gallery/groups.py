"""Groups of unknown faces: who is this stranger, and have they been here before?

A face joins the group it matches *as a whole*: average linkage, the mean cosine between the face
and every member, must reach ``JOIN`` (the best such group wins); otherwise it starts a group of
its own. The mean over members is ``x . sum / n``, so a group is held as the sum of its members'
unit vectors and its size: placing a face costs one matrix-vector product over the groups
(O(groups), no member scan), and one lookalike in a group of n moves the mean by only 1/n, so
two people never chain together through one face that looks like both (single linkage would).
After a face joins, its group is compared with the others by the same rule (mean cosine between
their members: ``sum_a . sum_b / (n_a n_b)``) and merged when they now look like one person, which
makes the result hardly depend on the order faces arrive in.

Why not a library. On this machine (2 cores) with the shipped model's embeddings of 10,000
CelebA faces (benchmarks/library.py, figures in BENCHMARKS.md): scipy's
``linkage(method="average")`` and scikit-learn's ``AgglomerativeClustering(linkage="average")``
(which calls it) need the condensed distance matrix in float64 (n^2/2 values: 430 MB at their
peak for 10,000 faces), over the 200 MB budget and growing with the square; neither is
incremental (every new face would mean a rerun), and
neither is on the Pi's install list (scipy alone is a 40 MB wheel). At the same cut they took
11-21 s for 10,000 faces; this module keeps one (groups x 512) float32 matrix, regroups the
same 10,000 in a few seconds within 20 MB, and places a new face in well under a millisecond.
The price is order: a face joins the best group above the cut when it arrives, before its
closest partner may have come, so at the same cut its precision is lower than the exact
agglomeration's; the cut (``JOIN``) is chosen for this module's own curve.

Pure numpy and no SQL: the store hands over (group id, vector) rows, the recorder and the
library write back what this decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

# The mean cosine between a face and a group's members (and between two groups' members) at or
# above which they are one person. Chosen on CelebA faces embedded by the shipped XS model
# through the device path (benchmarks/library.py, BENCHMARKS.md "Face library"): on
# celeba-subset (299 people, 5,141 in-the-wild faces) 0.30 / 0.35 / 0.40 give BCubed precision
# 0.964 / 0.987 / 0.990 and recall 0.911 / 0.883 / 0.829; on celeba-10k (5,134 people, 8,927
# small tight crops, mostly one or two faces a person) precision 0.724 / 0.898 / 0.970 and recall
# 0.887 / 0.906 / 0.891. 0.35 holds both sets near 0.9 and above; precision matters more than
# recall here, since `assign` enrols a group's faces as one person (a split group is only one
# more assign). Lower than a typical recognizer threshold would suggest because a mean over
# members is lower than the best of them for the same person.
JOIN = 0.35

_GROW = 256  # rows added to the matrix at a time


@dataclass
class Placed:
    """Where ``Groups.place`` put a face."""

    group: int  # the group id it is now in
    new: bool  # a new group (its id came from ``new_id``)
    ignored: bool  # that group is ignored (a poster, the postman): the event says so
    merged: list[int] = field(default_factory=list)  # groups merged into ``group`` meanwhile


class Groups:
    """The open groups of unknown faces, in memory: id, sum of member unit vectors, size,
    ignored. Not thread-safe: the owner serialises use."""

    def __init__(self, dim: int = 0, join: float = JOIN) -> None:
        self.join = float(join)
        self.dim = int(dim)
        self._sums = np.zeros((0, self.dim), np.float32)
        self._sizes = np.zeros(0, np.float64)
        self._ids = np.zeros(0, np.int64)
        self._ignored = np.zeros(0, bool)
        self._n = 0
        self._row: dict[int, int] = {}  # group id -> row

    def __len__(self) -> int:
        return self._n

    @classmethod
    def build(cls, rows: Iterable[tuple[int, np.ndarray]], ignored: Iterable[int] = (),
              dim: int = 0, join: float = JOIN) -> Groups:
        """From (group id, unit vector) of every grouped sighting; ``ignored``: group ids."""
        g = cls(dim, join)
        for gid, v in rows:
            g._add(int(gid), np.asarray(v, np.float32), False)
        for gid in ignored:
            if int(gid) in g._row:
                g._ignored[g._row[int(gid)]] = True
        return g

    # ---- reads -------------------------------------------------------------------------------
    def ids(self) -> list[int]:
        return [int(i) for i in self._ids[:self._n]]

    def size(self, gid: int) -> int:
        r = self._row.get(int(gid))
        return 0 if r is None else int(self._sizes[r])

    def is_ignored(self, gid: int) -> bool:
        r = self._row.get(int(gid))
        return r is not None and bool(self._ignored[r])

    def mean_similarity(self, x: np.ndarray) -> np.ndarray:
        """Mean cosine between ``x`` and the members of each group, in ``ids()`` order."""
        n = self._n
        if n == 0:
            return np.zeros(0, np.float32)
        return (self._sums[:n] @ x) / self._sizes[:n]

    # ---- changes -----------------------------------------------------------------------------
    def place(self, x: np.ndarray, new_id: Callable[[], int]) -> Placed:
        """Put the unit vector ``x`` into the group it matches as a whole, else a new group
        (id from ``new_id()``); then merge that group with any that now match it."""
        x = np.asarray(x, np.float32).reshape(-1)
        if self.dim == 0:
            self._resize(x.shape[0])
        sims = self.mean_similarity(x)
        if len(sims) and float(sims.max()) >= self.join:
            gid, new = int(self._ids[int(sims.argmax())]), False
        else:
            gid, new = int(new_id()), True
        self._add(gid, x, False)
        first = gid
        gid, merged = self._merge_into(gid)
        if new and first in merged:  # the new group was absorbed at once: it never existed
            merged.remove(first)
            new = False
        return Placed(gid, new and gid == first, self.is_ignored(gid), merged)

    def remove(self, gid: int, x: np.ndarray) -> None:
        """Take one member (unit vector ``x``) out of group ``gid``; an empty group goes."""
        r = self._row.get(int(gid))
        if r is None:
            return
        self._sums[r] -= np.asarray(x, np.float32).reshape(-1)
        self._sizes[r] -= 1
        if self._sizes[r] <= 0:
            self.drop(gid)

    def drop(self, gid: int) -> None:
        """Forget group ``gid`` (assigned to a person, or emptied)."""
        r = self._row.pop(int(gid), None)
        if r is None:
            return
        last = self._n - 1
        if r != last:  # move the last row into the hole
            for a in (self._sums, self._sizes, self._ids, self._ignored):
                a[r] = a[last]
            self._row[int(self._ids[r])] = r
        self._n = last

    def set_ignored(self, gid: int, ignored: bool = True) -> None:
        r = self._row.get(int(gid))
        if r is not None:
            self._ignored[r] = ignored

    def _merge_into(self, gid: int) -> tuple[int, list[int]]:
        """Merge every group whose members match ``gid``'s as a whole with it (the older,
        lower id survives: ids are handed out in time order); (the surviving id, the ids merged
        away)."""
        merged: list[int] = []
        while True:
            r = self._row[gid]
            n = self._n
            cross = (self._sums[:n] @ self._sums[r]) / (self._sizes[:n] * self._sizes[r])
            cross[r] = -np.inf
            if n < 2 or float(cross.max()) < self.join:
                return gid, merged
            other = int(self._ids[int(cross.argmax())])
            keep, gone = min(gid, other), max(gid, other)
            rk, rg = self._row[keep], self._row[gone]
            self._sums[rk] += self._sums[rg]
            self._sizes[rk] += self._sizes[rg]
            # An ignored group stays ignored when it grows (a poster seen at a new angle).
            self._ignored[rk] |= self._ignored[rg]
            self.drop(gone)
            merged.append(gone)
            gid = keep

    def _add(self, gid: int, x: np.ndarray, ignored: bool) -> None:
        if self.dim == 0:
            self._resize(x.shape[0])
        r = self._row.get(gid)
        if r is None:
            if self._n == len(self._ids):
                self._grow()
            r = self._n
            self._n += 1
            self._row[gid] = r
            self._sums[r] = 0.0
            self._sizes[r] = 0
            self._ids[r] = gid
            self._ignored[r] = ignored
        self._sums[r] += x
        self._sizes[r] += 1

    def _resize(self, dim: int) -> None:
        self.dim = int(dim)
        self._sums = np.zeros((len(self._ids), self.dim), np.float32)

    def _grow(self) -> None:
        extra = _GROW
        self._sums = np.concatenate([self._sums, np.zeros((extra, self.dim), np.float32)])
        self._sizes = np.concatenate([self._sizes, np.zeros(extra)])
        self._ids = np.concatenate([self._ids, np.zeros(extra, np.int64)])
        self._ignored = np.concatenate([self._ignored, np.zeros(extra, bool)])


def regroup(vectors: np.ndarray, first_id: int = 1, join: float = JOIN,
            dim: int | None = None) -> tuple[np.ndarray, Groups]:
    """Group ``vectors`` (N, D unit rows, in time order) from scratch, as the live placement
    would have; (group id of each row, the groups). Ids start at ``first_id``; merged-away ids
    are mapped to the group that absorbed them."""
    vectors = np.asarray(vectors, np.float32)
    g = Groups(dim if dim is not None else (vectors.shape[1] if vectors.ndim == 2 else 0), join)
    counter = iter(range(int(first_id), int(first_id) + len(vectors) + 1))
    labels = np.zeros(len(vectors), np.int64)
    into: dict[int, int] = {}
    for i, v in enumerate(vectors):
        placed = g.place(v, lambda: next(counter))
        labels[i] = placed.group
        for gone in placed.merged:
            into[gone] = placed.group
    if into:
        # Follow merge chains to the surviving group (a -> b, later b -> c).
        def final(gid: int) -> int:
            while gid in into:
                gid = into[gid]
            return gid
        labels = np.fromiter((final(int(x)) for x in labels), np.int64, len(labels))
    return labels, g
