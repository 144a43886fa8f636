"""One pair set with one model: embed, score, and the verification report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import verification as V
from . import EvalError
from .backends import Backend
from .embedding import Embedded, EmbeddingCache, FaceFinder, embed_set
from .pairsets import PairSet
from .scoring import impostor_pairs, score_pairs

DEFAULT_FARS = V.FARS


@dataclass
class Result:
    report: V.Report
    scores: np.ndarray
    pair_set: PairSet
    embedded: Embedded
    missing_images: list[str]
    pairs_with_missing: int
    far_scores: np.ndarray
    far_issame: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def evaluate(ps: PairSet, backend: Backend, finder: FaceFinder | None, flip: bool = True,
             fars: Sequence[float] = DEFAULT_FARS, impostors: int = 0,
             cache_dir: str | Path | None = None, progress: bool = True) -> Result:
    """Embed, score and report one pair set with one model."""
    if not ps.aligned and finder is None:
        raise EvalError(f"{ps.name}: images are not aligned; need a detector or landmarks")
    setting = {"model": backend.identity(), "faces": None if ps.aligned else finder.description,
               "flip": flip}
    # The cache key names files by content (sha256), not by the path they were given as.
    key = {**setting, "model": {k: v for k, v in setting["model"].items()
                                if k not in ("model", "checkpoint")}}
    cache = EmbeddingCache(cache_dir, key) if cache_dir else None
    e = embed_set(ps, backend, finder, flip=flip, cache=cache, progress=progress)
    scores = score_pairs(backend, e, ps.pairs)
    far_scores, far_issame = scores, ps.issame
    if impostors > 0:
        if ps.identities is None:
            raise EvalError(f"{ps.name}: --impostors needs identities (id_a/id_b columns, the LFW"
                            " layout or one folder per identity)")
        extra = impostor_pairs(ps.identities, impostors, seed=0, usable=e.found)
        far_scores = np.r_[scores, score_pairs(backend, e, extra)]
        far_issame = np.r_[ps.issame, np.zeros(len(extra), bool)]
    rep = V.report(scores, ps.issame, ps.folds, tuple(fars), far_scores, far_issame)
    missing = [k for k, ok in zip(ps.keys, e.found, strict=True) if not ok]
    bad = int((~(e.found[ps.pairs[:, 0]] & e.found[ps.pairs[:, 1]])).sum())
    return Result(rep, scores, ps, e, missing, bad, far_scores, far_issame,
                  info={"setting": setting})


