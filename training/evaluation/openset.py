"""Open-set (1:N) evaluation: a gallery of N enrolled people, probes of enrolled people (DIR:
recognised as the right person) and of strangers never enrolled (FPIR: named at all), at the
threshold the device would use (``edgeface_cam.threshold``) and at fixed FPIRs.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeface_cam.threshold import Calibration, Threshold

from .. import verification as V
from . import EvalError
from .backends import Backend
from .embedding import EmbeddingCache, FaceFinder, embed_set
from .identities import IdentitySet, part

FIXED_FPIRS = (0.001, 0.01, 0.1)


@dataclass
class EmbeddedSet:
    """Unit embeddings of the images of an identity set where a face was found."""

    emb: np.ndarray  # (n, D) float32
    labels: np.ndarray  # (n,) int identity index
    identities: list[str]  # (n,) label per row
    keys: list[str]  # (n,) image key per row
    images: int  # images in the set
    seconds: float = 0.0

    @property
    def without_face(self) -> int:
        return self.images - len(self.emb)

    def subset(self, keep: np.ndarray) -> EmbeddedSet:
        idx = np.flatnonzero(keep)
        ids = [self.identities[i] for i in idx]
        return EmbeddedSet(self.emb[idx], np.unique(ids, return_inverse=True)[1], ids,
                           [self.keys[i] for i in idx], len(idx))


def embed_identities(s: IdentitySet, backend: Backend, finder: FaceFinder | None,
                     cache_dir: str | Path | None = None, progress: bool = True) -> EmbeddedSet:
    """Every image embedded the device's way: found, aligned, the crop alone (no flip)."""
    setting = {"model": backend.identity(), "faces": None if s.aligned else finder.description,
               "flip": False}
    key = {**setting, "model": {k: v for k, v in setting["model"].items()
                                if k not in ("model", "checkpoint")}}
    cache = EmbeddingCache(cache_dir, key) if cache_dir else None
    e = embed_set(s, backend, finder, flip=False, cache=cache, progress=progress)  # type: ignore[arg-type]
    ok = np.flatnonzero(e.found)
    ids = [s.identities[i] for i in ok]
    return EmbeddedSet(e.emb[ok], np.unique(ids, return_inverse=True)[1], ids,
                       [s.keys[i] for i in ok], len(s.keys), e.seconds)


@dataclass
class OpenSetRow:
    """One gallery size and photos-per-person setting, pooled over its trials."""

    size: int
    photos: int  # at most this many enrolment photos a person
    trials: int
    embeddings: float  # mean gallery embeddings
    threshold: float  # the auto threshold (mean over trials; equal when the counts are)
    strangers: int  # stranger probes, all trials
    named: int  # of them named (FPIR numerator)
    probes: int  # enrolled people's probes, all trials
    correct: int  # of them named as the right person (DIR numerator)
    expected_fpir: float
    at_fpir: dict[str, dict[str, float]]  # target FPIR -> {"threshold", "dir", "fpir"}

    @property
    def fpir(self) -> float:
        return self.named / max(self.strangers, 1)

    @property
    def dir(self) -> float:
        return self.correct / max(self.probes, 1)


@dataclass
class _Trial:
    """One random gallery: who is enrolled (rows), their probes and the strangers."""

    gallery_rows: np.ndarray
    gallery_people: np.ndarray  # label per gallery row
    probe_rows: np.ndarray
    stranger_rows: np.ndarray


def _draw(e: EmbeddedSet, size: int, photos: int, rng: np.random.Generator) -> _Trial | None:
    """``size`` people among those with >= 2 images, each enrolling min(photos, n - 1) photos
    (the rest are their probes); every image of everyone else is a stranger."""
    labels = e.labels
    counts = np.bincount(labels)
    eligible = np.flatnonzero(counts >= 2)
    if len(eligible) < size or (counts.size - size) < 1:
        return None
    chosen = rng.choice(eligible, size=size, replace=False)
    gal, gal_people, probes = [], [], []
    for lab in chosen:
        rows = rng.permutation(np.flatnonzero(labels == lab))
        n = min(photos, len(rows) - 1)
        gal.extend(rows[:n])
        gal_people.extend([lab] * n)
        probes.extend(rows[n:])
    strangers = np.flatnonzero(~np.isin(labels, chosen))
    return _Trial(np.array(gal), np.array(gal_people), np.array(probes), strangers)


def _best(e: EmbeddedSet, t: _Trial, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best person's score, best person's label) for each probe row, by maximum cosine over
    a person's embeddings (as ``edgeface_cam.gallery.Index``)."""
    order = np.argsort(t.gallery_people, kind="stable")
    people = t.gallery_people[order]
    starts = np.flatnonzero(np.r_[True, people[1:] != people[:-1]])
    best_s, best_p = [], []
    for a in range(0, len(rows), 4096):
        s = e.emb[rows[a:a + 4096]] @ e.emb[t.gallery_rows[order]].T
        per = np.maximum.reduceat(s, starts, axis=1)
        b = per.argmax(1)
        best_s.append(per[np.arange(len(b)), b])
        best_p.append(people[starts[b]])
    return np.concatenate(best_s), np.concatenate(best_p)


def openset_row(e: EmbeddedSet, size: int, photos: int, threshold: Threshold, trials: int = 10,
                fpirs: Sequence[float] = FIXED_FPIRS, seed: int = 0) -> OpenSetRow | None:
    """DIR and FPIR at ``threshold`` (auto: for each trial's gallery) and at fixed FPIRs, over
    ``trials`` random galleries of ``size`` people; None when the set is too small."""
    rng = np.random.default_rng([seed, size, photos])
    tally = np.zeros(4, np.int64)  # strangers, named, probes, correct
    thr, n_emb, expected = [], [], []
    fixed: dict[float, list[tuple[float, float]]] = {q: [] for q in fpirs}
    for _ in range(trials):
        t = _draw(e, size, photos, rng)
        if t is None:
            return None
        cut = threshold.at(size, len(t.gallery_rows))
        ss, _ = _best(e, t, t.stranger_rows)
        ps, pp = _best(e, t, t.probe_rows)
        right = pp == e.labels[t.probe_rows]
        tally += [len(ss), int((ss >= cut).sum()), len(ps), int(((ps >= cut) & right).sum())]
        thr.append(cut)
        n_emb.append(len(t.gallery_rows))
        expected.append(threshold.expected_fpir(size, len(t.gallery_rows)) or 0.0)
        for q in fpirs:
            tq = V.threshold_at_far(ss, np.zeros(len(ss), bool), q)
            fixed[q].append((tq, float(((ps >= tq) & right).mean())))
    at = {f"{q:g}": {"threshold": round(float(np.mean([a for a, _ in v])), 4),
                     "dir": round(float(np.mean([b for _, b in v])), 4)}
          for q, v in fixed.items()}
    return OpenSetRow(size, photos, trials, float(np.mean(n_emb)), float(np.mean(thr)),
                      int(tally[0]), int(tally[1]), int(tally[2]), int(tally[3]),
                      float(np.mean(expected)), at)


@dataclass
class OpenSetReport:
    rows: list[OpenSetRow]
    set_name: str
    held_out: str  # what was evaluated, in words
    calibration: dict[str, Any]  # the calibration the auto threshold came from
    calibration_source: str
    false_accept: float


def run_openset(s: IdentitySet, backend: Backend, finder: FaceFinder | None,
                sizes: Sequence[int], options: OpenSetOptions) -> OpenSetReport:
    """Calibrate on one part of the identities (or take the model card's calibration), then
    measure DIR and FPIR on the other, held-out part (``identities.split``)."""
    from ..calibrate import calibration_of

    held = part(s, calibration=False)
    e = embed_identities(held, backend, finder, options.cache_dir, options.progress)
    if options.calibration == "card":
        cal = getattr(backend, "embedder", None)
        cal = None if cal is None else cal.card.calibration
        if cal is None:
            raise EvalError("--calibration card needs --model with a calibrated card "
                            "(python -m training.calibrate MODEL)")
        source = f"the model card ({cal.get('data', '?')})"
    else:
        cal_part = part(s, calibration=True)
        ec = embed_identities(cal_part, backend, finder, options.cache_dir, options.progress)
        cal = calibration_of(ec, f"{cal_part.name}: {len(ec.emb)} images")
        source = (f"the calibration part of this set ({len(set(ec.identities))} identities, "
                  f"{len(ec.emb)} images, {cal['pairs']} impostor pairs)")
    th = Threshold(calibration=Calibration.from_dict(cal), false_accept=options.false_accept)
    rows = [r for size in sizes for p in options.photos
            if (r := openset_row(e, size, p, th, options.trials, options.fpirs)) is not None]
    if not rows:
        raise EvalError(f"{held.name}: too few identities for gallery sizes {list(sizes)}")
    held_out = (f"{held.name}: {e.images} images of {len(set(held.identities))} identities "
                f"(no face in {e.without_face})")
    return OpenSetReport(rows, s.name, held_out, cal, source, options.false_accept)


@dataclass
class OpenSetOptions:
    photos: Sequence[int] = (1, 5)  # at most this many enrolment photos a person
    trials: int = 10
    false_accept: float = 0.01
    fpirs: Sequence[float] = FIXED_FPIRS
    calibration: str = "split"  # or "card"
    cache_dir: str | Path | None = None
    progress: bool = True


def print_openset(r: OpenSetReport, out: Any = None) -> None:
    out = out or sys.stdout
    p = lambda s: print(s, file=out)  # noqa: E731
    p(f"open set: held out {r.held_out}")
    p(f"auto threshold: recognizer.false_accept {r.false_accept:g}, calibrated on "
      f"{r.calibration_source}; photos_exponent {r.calibration.get('photos_exponent')}")
    fixed = " | ".join(f"FPIR {float(q):.1%}: thr / DIR" for q in r.rows[0].at_fpir)
    p(f"size  photos  emb/person  threshold  FPIR (named/strangers)  expected  DIR      | {fixed}")
    for row in r.rows:
        at = " | ".join(f"{v['threshold']:.4f} / {v['dir']:.4f}" for v in row.at_fpir.values())
        p(f"{row.size:>4}  {row.photos:>6}  {row.embeddings / row.size:>10.2f}  "
          f"{row.threshold:>9.4f}  {row.fpir:>6.2%} ({row.named}/{row.strangers})"
          f"{'':>4}{row.expected_fpir:>7.2%}  {row.dir:.4f} | {at}")
    lo, hi = min(x.fpir for x in r.rows), max(x.fpir for x in r.rows)
    p(f"fpir_min={lo:.4f} fpir_max={hi:.4f} target={r.false_accept:g}")


def openset_dict(r: OpenSetReport, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"set": r.set_name, "held_out": r.held_out, "calibration": r.calibration_source,
            "false_accept": r.false_accept,
            "rows": [{**vars(x), "fpir": round(x.fpir, 5),
                      "dir": round(x.dir, 5)} for x in r.rows],
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "date": time.strftime("%Y-%m-%d"), "args": args or {}}


def write_openset_rows(model: str | Path, r: OpenSetReport, command: str) -> None:
    """Store the measured DIR per gallery size in the model card's calibration (only there:
    the rest of the card is left as it is)."""
    path = Path(model).with_suffix(".json")
    card = json.loads(path.read_text())
    card["calibration"]["openset"] = {
        "data": r.held_out, "command": command, "date": time.strftime("%Y-%m-%d"),
        "rows": [{"size": x.size, "photos": x.photos,
                  "embeddings_per_person": round(x.embeddings / x.size, 3),
                  "threshold": round(x.threshold, 4), "fpir": round(x.fpir, 5),
                  "dir": round(x.dir, 4)} for x in r.rows]}
    path.write_text(json.dumps(card, indent=1) + "\n")
