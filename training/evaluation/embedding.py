"""Embedding a pair set: each image's face (given landmarks or the main face a detector finds),
each image embedded once (images recur across pairs), and the per-image cache on disk."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeface_cam.detect import Detector, Face

from ..common import MainFace
from .backends import Backend, combine
from .pairsets import PairSet


class FaceFinder:
    """Image -> its main face, from given landmarks or from a detector (``common.MainFace``:
    pad, detect, ``min_face``, then the largest face or the one nearest the centre)."""

    def __init__(self, detector: Detector | None = None, pad: float = 0.0,
                 landmarks: dict[str, np.ndarray] | None = None, describe: str = "",
                 min_face: float = 0.0, pick: str = "largest") -> None:
        if detector is None and landmarks is None:
            raise ValueError("need a detector or landmarks")
        self.main = MainFace(detector, pad, min_face, pick) if detector is not None else None
        self.landmarks = landmarks
        self.description = describe or (
            "landmarks file" if landmarks is not None
            else f"{getattr(detector, 'name', 'detector')} (pad {pad:g})")

    def find(self, key: str, image: np.ndarray) -> Face | None:
        if self.landmarks is None:
            return self.main.find(image)
        pts = self.landmarks.get(key)
        if pts is None:
            return None
        lo, hi = pts.min(0), pts.max(0)
        return Face(np.r_[lo, hi - lo].astype(np.float32), pts, 1.0)


@dataclass
class Embedded:
    emb: np.ndarray  # (n_images, D); rows of images without a face are zero
    found: np.ndarray  # (n_images,) bool
    seconds: float = 0.0
    from_cache: int = 0


def stack_rows(rows: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """(matrix with a zero row for each None, found mask)."""
    dim = next((len(e) for e in rows if e is not None), 1)
    found = np.array([e is not None for e in rows], dtype=bool)
    if not len(rows):
        return np.zeros((0, dim), np.float32), found
    return np.stack([e if e is not None else np.zeros(dim, np.float32) for e in rows]), found


class EmbeddingCache:
    """Embeddings per image on disk, one .npz per (model, faces, flip) setting.

    A rerun (another --far, an ROC, a second pair file over the same images) costs nothing.
    """

    def __init__(self, folder: str | Path, setting: dict[str, Any]) -> None:
        digest = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(folder) / f"emb-{setting.get('model', {}).get('name', 'm')}-{digest}.npz"
        self.setting = setting
        self.data: dict[str, np.ndarray | None] = {}
        if self.path.is_file():
            z = np.load(self.path, allow_pickle=False)
            for k, e, ok in zip(z["keys"], z["emb"], z["found"], strict=True):
                self.data[str(k)] = e if ok else None

    def save(self) -> None:
        if not self.data:
            return
        keys = list(self.data)
        emb, found = stack_rows([self.data[k] for k in keys])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.stem + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), emb=emb, found=found)
        tmp.replace(self.path)


def _crop(ps: PairSet, key: str, backend: Backend, finder: FaceFinder | None) -> np.ndarray | None:
    img = ps.load(key)
    if ps.aligned:
        return img
    face = finder.find(key, img)
    return None if face is None else backend.align(img, face)


def _embed_chunk(ps: PairSet, idx: list[int], backend: Backend, finder: FaceFinder | None,
                 flip: bool) -> dict[int, np.ndarray]:
    """{image index: embedding} for the images of ``idx`` where a face was found."""
    crops = {i: c for i in idx if (c := _crop(ps, ps.keys[i], backend, finder)) is not None}
    if not crops:
        return {}
    batch = list(crops.values())
    out = backend.embed(np.ascontiguousarray(np.stack(batch + ([c[:, ::-1] for c in batch]
                                                               if flip else []))))
    m = len(batch)
    return {i: combine(backend, out[j], out[m + j] if flip else None)
            for j, i in enumerate(crops)}


def embed_set(ps: PairSet, backend: Backend, finder: FaceFinder | None, flip: bool = True,
              cache: EmbeddingCache | None = None, progress: bool = True,
              chunk: int = 16) -> Embedded:
    """Embed every image of the set once (images recur across pairs)."""
    from tqdm import tqdm

    ckeys = [f"{ps.origin}/{k}" for k in ps.keys]
    emb: list[np.ndarray | None] = [cache.data[k] if cache is not None and k in cache.data
                                    else None for k in ckeys]
    todo = [i for i, k in enumerate(ckeys) if cache is None or k not in cache.data]
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"embed {backend.name}", unit="img", disable=not progress,
               mininterval=2.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        for i, e in _embed_chunk(ps, part, backend, finder, flip).items():
            emb[i] = e
        if cache is not None:
            cache.data.update((ckeys[i], emb[i]) for i in part)
            if (start // chunk) % 50 == 49:  # a long run that dies keeps most of its work
                cache.save()
        bar.update(len(part))
    bar.close()
    if cache is not None and todo:
        cache.save()
    mat, found = stack_rows(emb)
    return Embedded(mat.astype(np.float32), found, time.perf_counter() - t0,
                    len(ckeys) - len(todo))
