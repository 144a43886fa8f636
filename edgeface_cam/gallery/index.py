"""The in-memory match index: this model's embeddings as one matrix, grouped by person.

Immutable and swapped whole on reload, so matching needs no lock. Nothing here touches SQLite:
the store hands over the rows, the index answers "who is this?".
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

    @classmethod
    def empty(cls) -> Index:
        return cls(np.zeros((0, 0), np.float32), np.zeros(0, np.intp), np.zeros(0, np.int64), ())

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, bytes, int]], where: str) -> Index:
        """Rows of (person_id, name, vector bytes, dim), ordered by person; ``where`` names the
        gallery in an error."""
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
        return cls(np.ascontiguousarray(matrix), starts, pids[starts], names)

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

    def match(self, embedding: np.ndarray, threshold: float) -> Match:
        """The best person by maximum cosine over their embeddings; name None below threshold."""
        q = np.asarray(embedding, np.float32).reshape(-1)
        if len(self.names) == 0 or q.shape[0] != self.matrix.shape[1]:
            return self.match_many(q[None], threshold)[0]  # the empty / wrong-size answers
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
        best = per_person.argmax(axis=1)
        return [self._decide(int(b), float(per_person[i, b]), threshold)
                for i, b in enumerate(best)]
