"""The in-memory match index: this model's embeddings as one matrix, grouped by person, and
their negatives ("not X": faces the user said are not that person).

Immutable and swapped whole on reload, so matching needs no lock. Nothing here touches SQLite:
the store hands over the rows, the index answers "who is this?".

Negatives: a face more similar to one of X's negatives than to X's best enrolled face is not
called X (the next best person is tried under the same rule; none left: unknown). A lookalike the
user has corrected once scores higher against its own stored negative than against X, while X's
own new photos stay closer to X's embeddings than to a stranger's face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import GalleryError, Match


@dataclass(frozen=True)
class Index:
    matrix: np.ndarray  # (M, D) float32 unit rows, sorted by person
    starts: np.ndarray  # (P,) first row of each person
    person_ids: np.ndarray  # (P,)
    names: tuple[str, ...]  # (P,)
    negatives: np.ndarray | None = None  # (K, D) unit rows, sorted by owner; None: none
    neg_starts: np.ndarray | None = None  # first row of each owner's block
    neg_owner: np.ndarray | None = None  # the owner's position in person_ids, per block

    @classmethod
    def empty(cls) -> Index:
        return cls(np.zeros((0, 0), np.float32), np.zeros(0, np.intp), np.zeros(0, np.int64), ())

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, bytes, int]], where: str,
                  negatives: Sequence[tuple[int, bytes, int]] = ()) -> Index:
        """Rows of (person_id, name, vector bytes, dim), ordered by person; ``negatives``:
        (person_id, vector bytes, dim) ordered by person; ``where`` names the gallery in an
        error."""
        if not rows:
            return cls.empty()
        dims = {r[3] for r in rows}
        if len(dims) > 1:
            raise GalleryError(f"gallery {where} holds embeddings of sizes {sorted(dims)} "
                               "under one model fingerprint")
        matrix = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), -1)
        pids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
        names = tuple(rows[i][1] for i in starts)
        index = cls(np.ascontiguousarray(matrix), starts, pids[starts], names)
        return index.with_negatives(negatives)

    def with_negatives(self, rows: Sequence[tuple[int, bytes, int]]) -> Index:
        """This index with the negatives of its people (others' and other sizes are left out)."""
        dim = self.matrix.shape[1]
        pos = {int(p): b for b, p in enumerate(self.person_ids)}
        rows = [r for r in rows if int(r[0]) in pos and int(r[2]) == dim]
        if not rows:
            return self
        neg = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
        owners = np.fromiter((pos[int(r[0])] for r in rows), np.intp, len(rows))
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        return Index(self.matrix, self.starts, self.person_ids, self.names,
                     np.ascontiguousarray(neg), starts, owners[starts])

    def __len__(self) -> int:
        """Embeddings held (rows of the matrix)."""
        return int(self.matrix.shape[0])

    def vectors_of(self, person_id: int) -> np.ndarray:
        """The person's rows of the matrix (0 rows when they have none of this model)."""
        hit = np.flatnonzero(self.person_ids == person_id)
        if len(hit) == 0:
            return self.matrix[:0]
        b = int(hit[0])
        end = int(self.starts[b + 1]) if b + 1 < len(self.starts) else len(self.matrix)
        return self.matrix[int(self.starts[b]):end]

    def _decide(self, b: int, s: float, threshold: float) -> Match:
        if s >= threshold:
            return Match(self.names[b], s, int(self.person_ids[b]))
        return Match(None, s, None)

    def _vetoed(self, q: np.ndarray, per_person: np.ndarray) -> np.ndarray:
        """(N, P) per-person scores with every person whose negatives beat their best enrolled
        face set to -inf; ``q`` (N, D) unit rows."""
        assert self.negatives is not None and self.neg_starts is not None
        neg = np.maximum.reduceat(q @ self.negatives.T, self.neg_starts, axis=1)  # (N, owners)
        own = per_person[:, self.neg_owner]
        out = per_person.copy()
        out[:, self.neg_owner] = np.where(neg > own, -np.inf, own)
        return out

    def match(self, embedding: np.ndarray, threshold: float) -> Match:
        """The best person by maximum cosine over their embeddings; name None below threshold
        (or when their negatives veto them and nobody else is above it)."""
        q = np.asarray(embedding, np.float32).reshape(-1)
        if (len(self.names) == 0 or q.shape[0] != self.matrix.shape[1]
                or self.negatives is not None):
            return self.match_many(q[None], threshold)[0]
        # The hot path: one matrix-vector product (BLAS gemv) and a per-person max.
        per_person = np.maximum.reduceat(self.matrix @ q, self.starts)
        b = int(per_person.argmax())
        return self._decide(b, float(per_person[b]) / max(float(np.linalg.norm(q)), 1e-12),
                            threshold)

    def match_many(self, embeddings: np.ndarray, threshold: float) -> list[Match]:
        q = np.asarray(embeddings, np.float32)
        if q.ndim != 2:
            raise GalleryError(f"expected (N, D) embeddings, got shape {q.shape}")
        if len(self.names) == 0:
            return [Match(None, 0.0, None) for _ in range(len(q))]
        if q.shape[1] != self.matrix.shape[1]:
            raise GalleryError(f"embedding size {q.shape[1]} differs from the gallery's "
                               f"{self.matrix.shape[1]}")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        scores = q @ self.matrix.T  # (N, M) cosines: one BLAS call
        per_person = np.maximum.reduceat(scores, self.starts, axis=1)  # (N, P): rows are sorted
        allowed = per_person if self.negatives is None else self._vetoed(q, per_person)
        best = allowed.argmax(axis=1)
        out = []
        for i, b in enumerate(best):
            s = float(allowed[i, b])
            if not np.isfinite(s):  # everyone vetoed: unknown, with the best raw score
                out.append(Match(None, float(per_person[i].max()), None))
            else:
                out.append(self._decide(int(b), s, threshold))
        return out
