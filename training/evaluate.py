"""Face verification benchmark: ``python -m training.evaluate``.

Pair sources: insightface ``.bin`` files (aligned crops), the LFW layout (``pairs.txt`` + image
folders, faces found by the device detector or given as landmarks), or a pair TSV. Models: a torch
checkpoint (``--arch`` + ``--checkpoint``; torch is imported only then) or an exported ``.tflite``
run exactly as the device runs it (``edgeface_cam.embed.Embedder``).

Protocol: each image's embedding is the sum of the L2-normalised embeddings of the aligned crop and
its horizontal flip, re-normalised (``--no-flip``: the crop alone, as the device matches); the
score of a pair is the cosine similarity; 10-fold accuracy, TAR at FAR and thresholds come from
``training.verification``. A pair with an image where no face was found gets the lowest possible
score (it is rejected, as the device would reject it); such images are counted and reported.
The last line printed reads ``accuracy=0.XXXX std=0.XXXX``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import pickle
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeface_cam.align import CROP_SIZE, align_face, normalize, to_bgr
from edgeface_cam.detect import Detector, Face
from edgeface_cam.embed import file_sha256, l2_normalize

from . import verification as V

DEFAULT_FARS = V.FARS


class EvalError(ValueError):
    """A user mistake (bad path, malformed pair file): reported as one line, no traceback."""


# ---------------------------------------------------------------------------------- pair sets


@dataclass
class PairSet:
    """Pairs of images by index into ``keys``; ``load(key)`` gives the BGR image."""

    name: str
    keys: list[str]
    pairs: np.ndarray  # (P, 2) int indices into keys
    issame: np.ndarray  # (P,) bool
    load: Callable[[str], np.ndarray]
    folds: np.ndarray | None = None  # (P,) fold id; None: stratified folds
    identities: list[str] | None = None  # per key; allows extra impostor pairs
    aligned: bool = False  # images are already aligned 112x112 crops (.bin)
    fold_rule: str = "stratified"
    origin: str = ""  # the folder or file keys are relative to: cache entries are origin/key

    def __post_init__(self) -> None:
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(self.issame, dtype=bool)
        if len(self.pairs) != len(self.issame):
            raise EvalError(f"{self.name}: {len(self.pairs)} pairs but {len(self.issame)} labels")
        if len(self.pairs) == 0:
            raise EvalError(f"{self.name}: no pairs")

    def subset(self, limit: int, seed: int = 0) -> PairSet:
        """At most ``limit`` pairs, half same and half different, drawn with a fixed seed and
        kept in file order (for quick runs while developing)."""
        if limit >= len(self.pairs):
            return self
        rng = np.random.default_rng(seed)
        pick = []
        for cls, n in ((True, limit // 2), (False, limit - limit // 2)):
            idx = np.flatnonzero(self.issame == cls)
            pick.append(rng.choice(idx, size=min(n, len(idx)), replace=False))
        sel = np.sort(np.concatenate(pick))
        used = np.unique(self.pairs[sel])
        remap = np.full(len(self.keys), -1)
        remap[used] = np.arange(len(used))
        return PairSet(
            name=f"{self.name} (limit {len(sel)})",
            keys=[self.keys[i] for i in used],
            pairs=remap[self.pairs[sel]],
            issame=self.issame[sel],
            load=self.load,
            folds=None if self.folds is None else self.folds[sel],
            identities=None if self.identities is None else [self.identities[i] for i in used],
            aligned=self.aligned,
            fold_rule=self.fold_rule,
            origin=self.origin,
        )


def imread(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise EvalError(f"cannot read image {path}")
    if img.dtype != np.uint8:  # 16-bit PNGs
        img = (img / 257).astype(np.uint8)
    return to_bgr(img)


def _index(keys: list[str], key: str, table: dict[str, int]) -> int:
    if key not in table:
        table[key] = len(keys)
        keys.append(key)
    return table[key]


def read_bin(path: str | Path) -> PairSet:
    """An insightface verification ``.bin``: pickle of (encoded images, issame list), the pair i
    being images 2i and 2i+1; folds are contiguous, as insightface's KFold(shuffle=False)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"no such .bin file: {path}")
    try:
        with open(path, "rb") as f:
            bins, issame = pickle.load(f, encoding="bytes")
    except Exception as e:  # a pickle can fail in many ways; all mean "not a .bin file"
        raise EvalError(f"{path} is not an insightface .bin file ({type(e).__name__})") from None
    issame = np.asarray(list(issame), dtype=bool)
    if len(bins) != 2 * len(issame):
        raise EvalError(f"{path}: {len(bins)} images for {len(issame)} pairs (want 2 per pair)")
    blobs = [bytes(b) for b in bins]

    def load(key: str) -> np.ndarray:
        img = cv2.imdecode(np.frombuffer(blobs[int(key)], np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise EvalError(f"{path}: image {key} cannot be decoded")
        if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
            img = cv2.resize(img, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
        return img

    n = len(issame)
    return PairSet(path.name, [str(i) for i in range(2 * n)], np.arange(2 * n).reshape(n, 2),
                   issame, load, folds=V.contiguous_folds(n) if n >= 10 else None, aligned=True,
                   fold_rule="contiguous (insightface)" if n >= 10 else "stratified",
                   origin=f"{path.resolve()}#{file_sha256(path)[:16]}")


def write_bin(path: str | Path, crops_bgr: Sequence[np.ndarray], issame: Sequence[bool],
              ext: str = ".jpg") -> Path:
    """Write an insightface-style ``.bin`` (crops 2i and 2i+1 form pair i)."""
    if len(crops_bgr) != 2 * len(issame):
        raise ValueError(f"{len(crops_bgr)} crops for {len(issame)} pairs")
    bins = []
    for c in crops_bgr:
        ok, buf = cv2.imencode(ext, c)
        if not ok:
            raise ValueError("cannot encode a crop")
        bins.append(buf.tobytes())
    path = Path(path)
    with open(path, "wb") as f:
        pickle.dump((bins, [bool(s) for s in issame]), f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def read_lfw(root: str | Path, pairs_file: str | Path | None = None) -> PairSet:
    """The LFW layout: ``pairs.txt`` (header "folds n", then per fold n same lines ``name i j``
    and n different lines ``name1 i name2 j``) and ``root/Name/Name_0001.jpg``."""
    root = Path(root)
    pairs_file = Path(pairs_file) if pairs_file else root / "pairs.txt"
    if not pairs_file.is_file():
        raise EvalError(f"no pairs file: {pairs_file}")
    lines = [ln.split() for ln in pairs_file.read_text().splitlines() if ln.strip()]
    try:
        header = [int(x) for x in lines[0]]
    except (ValueError, IndexError):
        raise EvalError(f"{pairs_file}: first line must be 'folds pairs_per_class'") from None
    n_folds, per = header if len(header) == 2 else (1, header[0])
    body = lines[1:]
    if len(body) != n_folds * 2 * per:
        raise EvalError(f"{pairs_file}: header says {n_folds} x 2 x {per} pairs, found {len(body)}")
    keys: list[str] = []
    table: dict[str, int] = {}
    ids: list[str] = []
    pairs, same, folds = [], [], []

    def key(name: str, num: str) -> int:
        k = f"{name}/{name}_{int(num):04d}.jpg"
        if k not in table:
            ids.append(name)
        return _index(keys, k, table)

    for i, f in enumerate(body):
        if len(f) == 3:
            pairs.append((key(f[0], f[1]), key(f[0], f[2])))
            same.append(True)
        elif len(f) == 4:
            pairs.append((key(f[0], f[1]), key(f[2], f[3])))
            same.append(False)
        else:
            raise EvalError(f"{pairs_file}: line {i + 2} has {len(f)} fields (want 3 or 4)")
        folds.append(i // (2 * per))
    use_folds = np.array(folds) if n_folds > 1 else None
    return PairSet(f"lfw:{root.name}", keys, np.array(pairs), np.array(same),
                   lambda k: imread(root / k), folds=use_folds, identities=ids,
                   fold_rule="the pairs file's folds" if n_folds > 1 else "stratified",
                   origin=str(root.resolve()))


def read_pairs_tsv(path: str | Path, root: str | Path | None = None) -> PairSet:
    """A tab-separated pair list ``image_a image_b same`` (header optional; optional columns
    ``fold``, ``id_a``, ``id_b``); paths relative to ``root`` (default: the TSV's folder)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"no such pair file: {path}")
    root = Path(root) if root else path.parent
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r and not r[0].startswith("#")]
    if not rows:
        raise EvalError(f"{path}: empty")
    names = ["image_a", "image_b", "same"]
    if rows[0][2].strip() not in ("0", "1"):
        names, rows = [c.strip() for c in rows[0]], rows[1:]
        missing = {"image_a", "image_b", "same"} - set(names)
        if missing:
            raise EvalError(f"{path}: header lacks {', '.join(sorted(missing))}")
    col = {n: i for i, n in enumerate(names)}
    keys: list[str] = []
    table: dict[str, int] = {}
    id_of: dict[str, str] = {}
    pairs, same, folds = [], [], []
    has_fold, has_ids = "fold" in col, "id_a" in col and "id_b" in col
    for ln, r in enumerate(rows, start=2):
        try:
            a, b, s = r[col["image_a"]], r[col["image_b"]], int(r[col["same"]])
            if has_fold:
                folds.append(int(r[col["fold"]]))
            if has_ids:
                id_of[a], id_of[b] = r[col["id_a"]], r[col["id_b"]]
        except (IndexError, ValueError):
            raise EvalError(f"{path}: line {ln} is malformed: {r}") from None
        if s not in (0, 1):
            raise EvalError(f"{path}: line {ln}: 'same' must be 0 or 1")
        pairs.append((_index(keys, a, table), _index(keys, b, table)))
        same.append(bool(s))
    ids = [id_of[k] for k in keys] if has_ids else _folder_identities(keys, pairs, same)
    return PairSet(path.name, keys, np.array(pairs), np.array(same), lambda k: imread(root / k),
                   folds=np.array(folds) if has_fold else None, identities=ids,
                   fold_rule="the file's fold column" if has_fold else "stratified",
                   origin=str(root.resolve()))


def _folder_identities(keys: list[str], pairs: list, same: list) -> list[str] | None:
    """Parent folder as identity, but only when every label agrees with it (else None)."""
    ids = [Path(k).parent.as_posix() for k in keys]
    if any(ids[a] == "." for a, _ in pairs):
        return None
    if all((ids[a] == ids[b]) == s for (a, b), s in zip(pairs, same, strict=True)):
        return ids
    return None


def read_landmarks(path: str | Path) -> dict[str, np.ndarray]:
    """Lines ``relative/path.jpg x1 y1 ... x5 y5`` -> {path: (5, 2)}."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"no such landmarks file: {path}")
    out = {}
    for ln, line in enumerate(path.read_text().splitlines(), start=1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        if len(f) != 11:
            raise EvalError(f"{path}: line {ln} needs a path and 10 numbers, has {len(f)} fields")
        try:
            out[f[0]] = np.array(f[1:], dtype=np.float32).reshape(5, 2)
        except ValueError:
            raise EvalError(f"{path}: line {ln}: landmarks are not numbers") from None
    return out


# ----------------------------------------------------------------------------- finding faces


class FaceFinder:
    """Image -> its main face (the largest), from given landmarks or from a detector.

    ``pad`` (a fraction of the longer side) replicates the border before detecting: tight crops
    leave the detector no margin around the face. Landmarks are mapped back to the original
    image; ``align_face`` replicates the border too, so the crop is the same.
    """

    def __init__(self, detector: Detector | None = None, pad: float = 0.0,
                 landmarks: dict[str, np.ndarray] | None = None, describe: str = "") -> None:
        if detector is None and landmarks is None:
            raise ValueError("need a detector or landmarks")
        self.detector = detector
        self.pad = float(pad)
        self.landmarks = landmarks
        self.description = describe or (
            "landmarks file" if landmarks is not None
            else f"{getattr(detector, 'name', 'detector')} (pad {self.pad:g})")

    def find(self, key: str, image: np.ndarray) -> Face | None:
        if self.landmarks is not None:
            pts = self.landmarks.get(key)
            if pts is None:
                return None
            lo, hi = pts.min(0), pts.max(0)
            return Face(np.r_[lo, hi - lo].astype(np.float32), pts, 1.0)
        p = round(self.pad * max(image.shape[:2]))
        if p > 0:
            image = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_REPLICATE)
        faces = self.detector.detect(image)
        if not faces:
            return None
        f = faces[0]
        if p > 0:
            shift = np.float32(p)
            f = Face(f.box - np.array([shift, shift, 0, 0], np.float32), f.landmarks - shift,
                     f.score, f.landmark_names)
        return f


def make_detector(name: str, min_face: float, score: float) -> Detector:
    """A device detector by name (yunet, blazeface, mediapipe) with these filter settings."""
    from edgeface_cam.detect import make_detector as device_detector

    try:
        return device_detector(name, score_threshold=score, min_face=min_face, num_threads=1)
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise EvalError(f"cannot make detector {name!r}: {e}") from None


# ------------------------------------------------------------------------------- embedders


class Backend:
    """Aligned crops -> embeddings. Peers (``benchmarks/peers.py``) override ``align`` too."""

    name = "backend"
    metric = "cosine"  # or "euclidean": scores are then -distance
    worst_score = -1.0  # given to pairs with a missing face: below every real score

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        return align_face(image, face.landmarks, face.landmark_names)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) BGR uint8 crops -> (N, D) float32 raw embeddings."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What makes two runs' embeddings interchangeable (for the cache and the report)."""
        return {"name": self.name}


class TorchBackend(Backend):
    """A ``training.models`` architecture with a checkpoint; torch imported only here."""

    def __init__(self, arch: str, checkpoint: str | Path | None, threads: int = 1,
                 batch: int = 32) -> None:
        import torch

        from .models import load_model

        torch.set_num_threads(max(1, threads))
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise EvalError(f"no such checkpoint: {checkpoint}")
        self._torch = torch
        self.model = load_model(arch, checkpoint)
        self.name = arch
        self.batch = batch
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.sha256 = file_sha256(checkpoint) if checkpoint else None

    def embed(self, crops: np.ndarray) -> np.ndarray:
        out = []
        with self._torch.inference_mode():
            for i in range(0, len(crops), self.batch):
                x = self._torch.from_numpy(normalize(crops[i:i + self.batch], "NCHW"))
                out.append(self.model(x).float().numpy())
        return np.concatenate(out)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": "torch", "checkpoint": self.checkpoint,
                "sha256": self.sha256}


class LiteRTBackend(Backend):
    """An exported ``.tflite`` through the device's own Embedder (card, self-test, quantization)."""

    def __init__(self, model: str | Path, threads: int = 1) -> None:
        from edgeface_cam.embed import Embedder

        if not Path(model).is_file():
            raise EvalError(f"no such model: {model}")
        self.embedder = Embedder(model, num_threads=threads, self_test=True)
        self.name = self.embedder.name
        self.model = str(model)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self.embedder.embed(crops)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": self.embedder.runtime, "model": self.model,
                "sha256": self.embedder.fingerprint,
                "quantization": self.embedder.card.raw.get("quantization")}


# ---------------------------------------------------------------------------- embedding a set


@dataclass
class Embedded:
    emb: np.ndarray  # (n_images, D); rows of images without a face are zero
    found: np.ndarray  # (n_images,) bool
    seconds: float = 0.0
    from_cache: int = 0


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
        dim = next((len(v) for v in self.data.values() if v is not None), 1)
        keys = list(self.data)
        emb = np.stack([self.data[k] if self.data[k] is not None else np.zeros(dim, np.float32)
                        for k in keys])
        found = np.array([self.data[k] is not None for k in keys])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.stem + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), emb=emb, found=found)
        tmp.replace(self.path)


def combine(backend: Backend, e: np.ndarray, e_flip: np.ndarray | None) -> np.ndarray:
    """One image's embedding from the crop's and (optionally) its flip's."""
    if backend.metric == "cosine":
        return (l2_normalize(l2_normalize(e) + l2_normalize(e_flip)) if e_flip is not None
                else l2_normalize(e))
    return (e + e_flip) / 2 if e_flip is not None else e


def embed_set(ps: PairSet, backend: Backend, finder: FaceFinder | None, flip: bool = True,
              cache: EmbeddingCache | None = None, progress: bool = True,
              chunk: int = 16) -> Embedded:
    """Embed every image of the set once (images recur across pairs)."""
    from tqdm import tqdm

    n = len(ps.keys)
    emb: list[np.ndarray | None] = [None] * n
    todo = []
    ckeys = [f"{ps.origin}/{k}" for k in ps.keys]
    for i, k in enumerate(ckeys):
        if cache is not None and k in cache.data:
            emb[i] = cache.data[k]
        else:
            todo.append(i)
    from_cache = n - len(todo)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"embed {backend.name}", unit="img", disable=not progress,
               mininterval=2.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    for start in range(0, len(todo), chunk):
        idx, crops = [], []
        for i in todo[start:start + chunk]:
            img = ps.load(ps.keys[i])
            if ps.aligned:
                crop = img
            else:
                face = finder.find(ps.keys[i], img)
                crop = None if face is None else backend.align(img, face)
            if crop is not None:
                idx.append(i)
                crops.append(crop)
        if crops:
            batch = np.stack(crops + ([c[:, ::-1] for c in crops] if flip else []))
            out = backend.embed(np.ascontiguousarray(batch))
            m = len(crops)
            for j, i in enumerate(idx):
                emb[i] = combine(backend, out[j], out[m + j] if flip else None)
        if cache is not None:
            for i in todo[start:start + chunk]:
                cache.data[ckeys[i]] = emb[i]
            if (start // chunk) % 50 == 49:  # a long run that dies keeps most of its work
                cache.save()
        bar.update(len(todo[start:start + chunk]))
    bar.close()
    if cache is not None and todo:
        cache.save()
    dim = next((len(e) for e in emb if e is not None), 1)
    found = np.array([e is not None for e in emb], dtype=bool)
    mat = np.stack([e if e is not None else np.zeros(dim, np.float32) for e in emb]) if n else \
        np.zeros((0, dim), np.float32)
    return Embedded(mat.astype(np.float32), found, time.perf_counter() - t0, from_cache)


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


# ------------------------------------------------------------------------------ the run


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


# --------------------------------------------------------------------------------- the CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="10-fold face verification accuracy, TAR at FAR and thresholds.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bin", help="insightface verification .bin (aligned 112x112 pairs)")
    src.add_argument("--lfw", help="LFW-layout folder with pairs.txt and Name/Name_0001.jpg")
    src.add_argument("--pairs", help="TSV: image_a image_b same [fold id_a id_b]")
    ap.add_argument("--lfw-pairs", help="pairs file for --lfw (default DIR/pairs.txt)")
    ap.add_argument("--root", help="folder the TSV's image paths are relative to")
    ap.add_argument("--landmarks", help="file of 'path x1 y1 .. x5 y5' lines instead of detecting")
    ap.add_argument("--detector", default="yunet", help="device detector to find faces")
    # Defaults: the device's detector score, but no size filter: min face is a device policy,
    # and here we measure the recognizer on every face the detector is sure of.
    ap.add_argument("--min-face", type=float, default=0.0, help="smallest face side in pixels")
    ap.add_argument("--score", type=float, default=0.8, help="detector score threshold")
    ap.add_argument("--pad", type=float, default=0.0,
                    help="replicate the border by this fraction of the longer side before "
                         "detecting (for tight crops)")
    m = ap.add_mutually_exclusive_group(required=True)
    m.add_argument("--model", help="exported .tflite (with its .json card), run as the device")
    m.add_argument("--arch", help="training.models architecture name (with --checkpoint)")
    ap.add_argument("--checkpoint", help="torch checkpoint for --arch")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    ap.add_argument("--no-flip", action="store_true",
                    help="embed the crop alone (as the device does) instead of crop + flip")
    ap.add_argument("--far", type=float, action="append", default=[],
                    help="print the threshold for this FAR (repeatable)")
    ap.add_argument("--at", type=float, action="append", default=[],
                    help="print TAR and FAR at this threshold (repeatable)")
    ap.add_argument("--impostors", type=int, default=0,
                    help="also score N random different-identity image pairs for the FAR figures")
    ap.add_argument("--limit", type=int, help="evaluate at most N pairs (half same), fixed seed")
    ap.add_argument("--cache", help="folder to cache embeddings per image")
    ap.add_argument("--roc", help="write the ROC curve to this PNG")
    ap.add_argument("--json", help="write all figures to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def load_pair_set(args: argparse.Namespace) -> PairSet:
    if args.bin:
        return read_bin(args.bin)
    if args.lfw:
        return read_lfw(args.lfw, args.lfw_pairs)
    return read_pairs_tsv(args.pairs, args.root)


def make_backend(args: argparse.Namespace) -> Backend:
    if args.model:
        return LiteRTBackend(args.model, args.threads)
    if args.checkpoint is None:
        raise EvalError("--arch needs --checkpoint (weights) to give meaningful figures")
    return TorchBackend(args.arch, args.checkpoint, args.threads)


def make_finder(args: argparse.Namespace) -> FaceFinder:
    if args.landmarks:
        return FaceFinder(landmarks=read_landmarks(args.landmarks))
    det = make_detector(args.detector, args.min_face, args.score)
    return FaceFinder(det, args.pad, describe=f"{args.detector} (score {args.score:g}, min face "
                                             f"{args.min_face:g}px, pad {args.pad:g})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cv2.setNumThreads(max(1, args.threads))
        ps = load_pair_set(args)
        if args.limit:
            ps = ps.subset(args.limit)
        finder = None if ps.aligned else make_finder(args)
        backend = make_backend(args)
        fars = tuple(dict.fromkeys([*DEFAULT_FARS, *args.far]))
        r = evaluate(ps, backend, finder, flip=not args.no_flip, fars=fars,
                     impostors=args.impostors, cache_dir=args.cache, progress=not args.quiet)
        if args.roc:
            far, tar, _ = V.roc(r.far_scores, r.far_issame)
            V.save_roc_png({backend.name: (far, tar)}, args.roc, f"ROC: {ps.name}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            d = result_dict(r, vars(args))
            d["at_threshold"] = {f"{t:g}": dict(zip(("tar", "far"),
                                                    V.rates_at(r.far_scores, r.far_issame, t),
                                                    strict=True)) for t in args.at}
            Path(args.json).write_text(json.dumps(d, indent=1))
        print_result(r, args.far, at=args.at)
    except (EvalError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
