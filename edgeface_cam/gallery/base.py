"""What the gallery's parts share: its error, its records, the name rule and vector checks."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

MAX_NAME_LENGTH = 64


class GalleryError(ValueError):
    """A user-facing gallery problem, with a one-line message."""


@dataclass(frozen=True)
class Match:
    name: str | None  # None: unknown (best score below the threshold, or an empty gallery)
    score: float  # best cosine similarity found, also for an unknown face
    person_id: int | None


@dataclass(frozen=True)
class Person:
    name: str  # the stored spelling
    created_at: str
    notes: str | None
    embeddings: int  # embeddings of the current model (the ones matched)
    other_model: int  # embeddings of another model: stale until re-embedded
    id: int


def validate_name(name: object) -> str:
    """The trimmed name, or GalleryError saying what is wrong with it."""
    if not isinstance(name, str):
        raise GalleryError(f"a name must be text, got {type(name).__name__}")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise GalleryError("a name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"name too long ({len(name)} characters, at most {MAX_NAME_LENGTH})")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    if bad:
        raise GalleryError(f"name {name.encode('unicode_escape').decode()!r} contains a control "
                           f"character ({bad[0].encode('unicode_escape').decode()})")
    return name


def name_key(name: str) -> str:
    """The one name rule: two names are the same person when their keys are equal (trimmed,
    compared case-insensitively, also beyond ASCII: "zoë" is "ZOË", which SQLite's NOCASE
    alone would not see)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).strip().casefold())


def closest_name(name: str, names: Iterable[str]) -> str | None:
    """The stored name most like ``name`` (for a did-you-mean), or None."""
    by_key = {name_key(n): n for n in names}
    near = difflib.get_close_matches(name_key(name), list(by_key), n=1, cutoff=0.6)
    return by_key[near[0]] if near else None


def unit_rows(x: object, what: str = "embeddings") -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise GalleryError(f"{what} must be an (N, D) array with N, D >= 1, got shape "
                           f"{np.shape(x)}")
    if not np.isfinite(a).all():
        raise GalleryError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise GalleryError(f"{what} contain an all-zero vector")
    return np.ascontiguousarray(a / norms, dtype=np.float32)
