"""Pair scores, and extra random impostor pairs for the FAR figures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import EvalError
from .backends import Backend
from .embedding import Embedded


def score_pairs(backend: Backend, e: Embedded, pairs: np.ndarray) -> np.ndarray:
    a, b = e.emb[pairs[:, 0]], e.emb[pairs[:, 1]]
    if backend.metric == "cosine":
        s = (a * b).sum(1).astype(np.float64)
    else:
        s = -np.linalg.norm(a - b, axis=1).astype(np.float64)
    ok = e.found[pairs[:, 0]] & e.found[pairs[:, 1]]
    return np.where(ok, s, backend.worst_score)


def impostor_pairs(identities: Sequence[str], n: int, seed: int = 0,
                   usable: np.ndarray | None = None) -> np.ndarray:
    """``n`` distinct random pairs of images of different identities (fixed seed)."""
    ids = np.asarray(identities)
    pool = np.arange(len(ids)) if usable is None else np.flatnonzero(usable)
    if len(np.unique(ids[pool])) < 2:
        raise EvalError("extra impostor pairs need images of at least two identities")
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    _, counts = np.unique(ids[pool], return_counts=True)
    max_pairs = (len(pool) * (len(pool) - 1) - int((counts * (counts - 1)).sum())) // 2
    while len(out) < n and len(seen) < max_pairs:
        a = rng.choice(pool, size=2 * (n - len(out)))
        b = rng.choice(pool, size=len(a))
        for i, j in zip(a.tolist(), b.tolist(), strict=True):
            if ids[i] == ids[j]:
                continue
            p = (min(i, j), max(i, j))
            if p not in seen:
                seen.add(p)
                out.append(p)
                if len(out) == n:
                    break
    return np.array(out, dtype=np.int64).reshape(-1, 2)


