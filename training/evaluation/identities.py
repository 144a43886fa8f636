"""Identity-labelled image sets (for open-set evaluation and threshold calibration): an image
folder per identity, or an ``image<TAB>identity`` list such as ``celeba-10k-identities.tsv``;
several merge into one (CelebA's two pools share identity numbers and some photos).

An ``IdentitySet`` has what ``embedding.embed_set`` reads of a pair set (``keys``, ``load``,
``aligned``, ``origin``, ``name``), so images are embedded and cached the same way.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import EvalError
from .pairsets import imread

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _label(name: str) -> str:
    """An identity label; numbers compare as numbers ('07201' is CelebA identity 7201)."""
    name = name.strip()
    return str(int(name)) if name.isdigit() else name


@dataclass
class IdentitySet:
    """Images by key (a path relative to ``origin``) with an identity label each."""

    name: str
    keys: list[str]
    identities: list[str]
    origin: str
    aligned: bool = False

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.identities):
            raise EvalError(f"{self.name}: {len(self.keys)} images, {len(self.identities)} labels")
        if not self.keys:
            raise EvalError(f"{self.name}: no images")

    @property
    def load(self) -> Callable[[str], np.ndarray]:
        root = Path(self.origin)
        return lambda k: imread(root / k)

    def labels(self) -> np.ndarray:
        """(N,) int identity index per image (0..number of identities - 1)."""
        return np.unique(np.asarray(self.identities), return_inverse=True)[1]

    def subset(self, keep: np.ndarray, name: str | None = None) -> IdentitySet:
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return IdentitySet(name or self.name, [self.keys[i] for i in idx],
                           [self.identities[i] for i in idx], self.origin, self.aligned)


def read_folders(root: str | Path) -> IdentitySet:
    """``root/IDENTITY/*.jpg``: one folder per identity."""
    root = Path(root)
    keys, ids = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for img in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            keys.append(f"{d.name}/{img.name}")
            ids.append(_label(d.name))
    return IdentitySet(f"folders:{root.name}", keys, ids, str(root.resolve()))


def _list_root(path: Path, first: str, root: str | Path | None) -> Path:
    """Where a list's image names live: ``root``, the list's folder, or (celeba-10k's layout)
    the folder named like the list without '-identities'."""
    if root is not None:
        return Path(root)
    beside = path.parent / path.stem.removesuffix("-identities")
    return beside if not (path.parent / first).is_file() and beside.is_dir() else path.parent


def read_list(path: str | Path, root: str | Path | None = None) -> IdentitySet:
    """Tab-separated ``image identity`` lines; a header line ('image ...') is skipped."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("image", "file", "path"):
        rows = rows[1:]
    if not rows or any(len(r) < 2 for r in rows):
        raise EvalError(f"{path}: want 'image<TAB>identity' lines")
    base = _list_root(path, rows[0][0].strip(), root)
    return IdentitySet(f"list:{path.name}", [r[0].strip() for r in rows],
                       [_label(r[1]) for r in rows], str(base.resolve()))


def read_identity_set(spec: str | Path, root: str | Path | None = None) -> IdentitySet:
    """A folder per identity, or an ``image<TAB>identity`` list file."""
    p = Path(spec)
    if p.is_dir():
        return read_folders(p)
    if p.is_file():
        return read_list(p, root)
    raise EvalError(f"no such identity folder or list: {spec}")


def merge(sets: Sequence[IdentitySet]) -> IdentitySet:
    """One set over several, keys relative to their common folder. A photo present in two
    (same file name, same identity: CelebA's pools share 318) is kept once, so it is never
    compared with itself."""
    if len(sets) == 1:
        return sets[0]
    origins = [Path(s.origin) for s in sets]
    common = Path(*Path(origins[0]).parts[:len(_common_parts(origins))])
    keys, ids, seen = [], [], set()
    for s, o in zip(sets, origins, strict=True):
        rel = o.relative_to(common)
        for k, i in zip(s.keys, s.identities, strict=True):
            if (Path(k).name, i) not in seen:
                seen.add((Path(k).name, i))
                keys.append((rel / k).as_posix())
                ids.append(i)
    return IdentitySet(" + ".join(s.name for s in sets), keys, ids, str(common))


def _common_parts(paths: Sequence[Path]) -> tuple[str, ...]:
    parts = [p.parts for p in paths]
    out = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        out.append(level[0])
    return tuple(out)


def in_calibration_part(identity: str) -> bool:
    """The fixed identity split: crc32 of the label even -> calibration, odd -> held out.
    Stable across runs, machines and set orderings, so ``training.calibrate`` (the card) and
    ``training.evaluate --openset`` (the held-out check) agree without sharing a file."""
    return zlib.crc32(identity.encode()) % 2 == 0


def part(s: IdentitySet, calibration: bool) -> IdentitySet:
    """The calibration part of the identities, or the held-out part (``in_calibration_part``);
    EvalError when it holds no image."""
    mask = np.array([in_calibration_part(i) == calibration for i in s.identities])
    return s.subset(mask, f"{s.name} ({'calibration part' if calibration else 'held out'})")


def split(s: IdentitySet) -> tuple[IdentitySet, IdentitySet]:
    """(calibration part, held-out part): disjoint in identities."""
    return part(s, True), part(s, False)
