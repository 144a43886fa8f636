"""Pair sets: insightface ``.bin`` files (aligned crops), the LFW layout (``pairs.txt`` + image
folders), pair TSVs, and landmarks files that stand in for a detector."""

from __future__ import annotations

import csv
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeface_cam.align import CROP_SIZE, to_bgr
from edgeface_cam.embed import file_sha256

from .. import verification as V
from . import EvalError


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


