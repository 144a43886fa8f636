"""What a run reports: the printed figures (last line ``accuracy=0.XXXX std=0.XXXX``) and the
JSON summary."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import verification as V
from .run import Result


def result_dict(r: Result, args: dict[str, Any] | None = None) -> dict[str, Any]:
    n_img = len(r.pair_set.keys)
    computed = n_img - r.embedded.from_cache
    return {
        "pairs": r.pair_set.name,
        "folds": r.pair_set.fold_rule,
        "model": r.info["setting"]["model"],
        "faces": r.info["setting"]["faces"],
        "flip": r.info["setting"]["flip"],
        "images": n_img,
        "images_without_face": len(r.missing_images),
        "pairs_with_missing_face": r.pairs_with_missing,
        "missing_face_rule": "pair scored as the lowest possible score (rejected)",
        "missing_examples": r.missing_images[:20],
        "embed_seconds": round(r.embedded.seconds, 2),
        "images_from_cache": r.embedded.from_cache,
        "ms_per_image": round(1000 * r.embedded.seconds / computed, 2) if computed else None,
        **r.report.as_dict(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "args": args or {},
    }


def print_result(r: Result, requested_fars: Sequence[float] = (), out: Any = None,
                 at: Sequence[float] = ()) -> None:
    out = out or sys.stdout
    rep = r.report
    ident = r.info["setting"]["model"]
    p = lambda s: print(s, file=out)  # noqa: E731
    p(f"model: {ident.get('name')} ({ident.get('runtime', '')}, sha256 "
      f"{(ident.get('sha256') or '-')[:16]})")
    p(f"pairs: {r.pair_set.name}: {rep.n_same} same + {rep.n_diff} different; folds: "
      f"{r.pair_set.fold_rule}; flip: {'yes' if r.info['setting']['flip'] else 'no'}")
    if not r.pair_set.aligned:
        p(f"faces: {r.info['setting']['faces']}: no face in {len(r.missing_images)} of "
          f"{len(r.pair_set.keys)} images; {r.pairs_with_missing} pairs touch one and are scored "
          "as rejected (lowest score)")
    for far, (tar, thr) in rep.tar.items():
        note = "" if V.far_resolved(rep.impostors, far) else (
            f" (not resolved: {rep.impostors} impostor pairs < 1/FAR; threshold is just above"
            " the highest impostor score)")
        p(f"TAR@FAR={far:.0e}: {tar:.4f} threshold={thr:.4f} on {rep.impostors} impostor "
          f"pairs{note}")
    for far in requested_fars:
        p(f"threshold at FAR={far:.0e}: {rep.tar[far][1]:.4f}")
    for thr in at:
        tar, far = V.rates_at(r.far_scores, r.far_issame, thr)
        p(f"at threshold={thr:.4f}: TAR={tar:.4f} FAR={far:.2e} on {rep.impostors} impostor "
          "pairs")
    p(f"best thresholds per fold: {np.round(rep.kfold.thresholds, 4).tolist()}")
    p(f"accuracy={rep.kfold.mean:.4f} std={rep.kfold.std:.4f}")


