"""Impostor-score calibration for a model card: ``python -m training.calibrate MODEL.tflite``.

The device derives its match threshold from the card (``edgeface_cam.threshold``): for the
gallery it holds, the threshold at which a stranger is named with probability
``recognizer.false_accept``. That needs the upper tail of the different-identity score
distribution, measured the device's way, far enough down (FAR 1e-6) for a gallery of a thousand
people with several photos each. Here:

- faces of an identity-labelled set (default: CelebA's ``celeba-subset`` + ``celeba-10k``,
  their calibration half of the identities: ``identities.in_calibration_part``; the other half
  is held out for ``training.evaluate --openset``) are found by YuNet, aligned by
  ``edgeface_cam.align`` and embedded by the ``.tflite`` through ``edgeface_cam.embed``, the
  crop alone (no flip): exactly as the device matches;
- every pair of images of different identities is scored (tens of millions of pairs, in chunks
  of the similarity matrix, into a histogram of 1e-4 wide bins);
- the card gets ``calibration``: the score s with P(impostor >= s) = q for q from 1e-1 down to
  1e-6 (4 per decade, interpolated in log q by the device), the pair count, and how much a
  person's extra photos add to a stranger's chances (``photos_exponent``; see ``photo_gain``).

Only the card's ``calibration`` key is written; every other field (and the model) is left as
it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edgeface_cam.embed import ModelCard

from .evaluation import EvalError
from .evaluation.backends import LiteRTBackend
from .evaluation.embedding import FaceFinder
from .evaluation.identities import IdentitySet, merge, read_identity_set, split
from .evaluation.openset import EmbeddedSet, embed_identities

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
CELEBA = ("celeba-subset", "celeba-10k-identities.tsv")
# q = P(impostor >= s): 1e-1 .. 1e-6, four points a decade.
FARS = tuple(float(f"{q:.3g}") for q in np.logspace(-1, -6, 21))
BIN = 1e-4  # histogram bin width in cosine: far below the noise of any threshold
N_BINS = round(2 / BIN) + 1
PROTOCOL = ("device: YuNet (score 0.8, no size filter, no padding; align_face replicates the "
            "border of tight crops) -> edgeface_cam.align 5-point similarity warp to 112x112 -> "
            "this .tflite via edgeface_cam.embed (LiteRT), the crop alone (no flip); cosine of "
            "the unit embeddings")


def impostor_histogram(emb: np.ndarray, labels: np.ndarray,
                       chunk: int = 2048) -> tuple[np.ndarray, int]:
    """(counts per 1e-4 score bin over [-1, 1], pairs) of every different-identity pair
    i < j, one (chunk x N) block of the similarity matrix at a time."""
    emb = np.ascontiguousarray(emb, np.float32)
    counts = np.zeros(N_BINS, np.int64)
    n = len(emb)
    for a in range(0, n, chunk):
        s = emb[a:a + chunk] @ emb[a:].T  # rows a.., columns a..: the upper triangle
        rows = np.arange(a, min(a + chunk, n))[:, None]
        keep = (np.arange(a, n)[None, :] > rows) & (labels[a:a + chunk, None] != labels[None, a:])
        b = np.clip(np.rint((s[keep] + 1) / BIN), 0, N_BINS - 1).astype(np.intp)
        counts += np.bincount(b, minlength=N_BINS)
    return counts, int(counts.sum())


def upper_quantiles(counts: np.ndarray, fars: tuple[float, ...] = FARS) -> list[float]:
    """For each q, the lowest bin score s with P(score >= s) <= q (a threshold accepts
    ``score >= s``), i.e. the upper tail quantile, to the bin width."""
    tail = np.cumsum(counts[::-1])[::-1] / counts.sum()  # tail[i] = P(score >= bin i)
    out = []
    for q in fars:
        i = int(np.argmax(tail <= q))  # first bin whose tail share is at most q
        out.append(round(float(i * BIN - 1), 4))
    return out


def photo_gain(e: EmbeddedSet, threshold: float, max_photos: int = 4,
               max_strangers: int = 4000, seed: int = 0) -> dict[str, float]:
    """How much more often a stranger reaches ``threshold`` against a person's best of m photos
    than against one photo: {m: ratio}. Photos of one person are alike, so their chances
    overlap: ratio(m) = m ** alpha with alpha < 1 (0: no gain, 1: independent)."""
    rng = np.random.default_rng(seed)
    by_id: dict[int, np.ndarray] = {}
    for lab in np.unique(e.labels):
        rows = np.flatnonzero(e.labels == lab)
        if len(rows) >= max_photos:
            by_id[int(lab)] = rng.permutation(rows)[:max_photos]
    people = np.array(list(by_id))
    strangers = rng.permutation(len(e.emb))[:max_strangers]
    hits = np.zeros(max_photos)
    trials = 0
    for lab in people:
        photos = e.emb[by_id[lab]]
        s = e.emb[strangers[e.labels[strangers] != lab]] @ photos.T  # (strangers, m)
        best = np.maximum.accumulate(s, axis=1)  # best of the first m photos
        hits += (best >= threshold).sum(0)
        trials += len(s)
    return {str(m + 1): float(hits[m] / hits[0]) if hits[0] else float("nan")
            for m in range(max_photos)} | {"people": len(people), "trials": trials,
                                           "single_photo_hits": int(hits[0])}


def photos_exponent(gain: dict[str, float]) -> float:
    """alpha of ratio(m) = m ** alpha, least squares in log-log through the origin."""
    ms = [int(k) for k in gain if k.isdigit() and int(k) > 1 and np.isfinite(gain[k])
          and gain[k] > 0]
    if not ms:
        return 1.0
    x = np.log(ms)
    y = np.log([gain[str(m)] for m in ms])
    return round(float(np.clip((x @ y) / (x @ x), 0.0, 1.0)), 3)


def celeba(datasets: str | Path = DATASETS) -> IdentitySet:
    """CelebA's two pools as one identity-labelled set (identity numbers shared)."""
    return merge([read_identity_set(Path(datasets) / p) for p in CELEBA])


def calibration_of(e: EmbeddedSet, data: str, command: str = "") -> dict:
    """The card's ``calibration`` object for embedded images of the calibration part."""
    counts, pairs = impostor_histogram(e.emb, e.labels)
    if pairs < 1 / FARS[-1]:
        raise EvalError(f"{pairs} impostor pairs cannot resolve FAR {FARS[-1]:g}: need more "
                        "images")
    score = upper_quantiles(counts)
    # The photos' overlap where the statistics are good (FAR 1e-4: >100 single-photo hits)
    # and where galleries of tens to hundreds of people operate.
    gain = photo_gain(e, score[FARS.index(1e-4)])
    return {
        "kind": "impostor score upper tail: score[i] is the s with P(different-identity "
                "score >= s) = far[i]; interpolate in log10(far)",
        "far": list(FARS),
        "score": score,
        "pairs": pairs,
        "images": e.images,
        "images_without_face": e.without_face,
        "identities": len(np.unique(e.labels)),
        "photos_exponent": photos_exponent(gain),
        "photos_gain_at_far_1e-4": gain,
        "data": data,
        "protocol": PROTOCOL,
        "score_bin": BIN,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": command,
    }


def write_calibration(card_path: str | Path, calibration: dict) -> None:
    """Set the card's ``calibration`` key, leaving every other field as it is."""
    path = Path(card_path)
    card = json.loads(path.read_text())
    card["calibration"] = calibration
    path.write_text(json.dumps(card, indent=1) + "\n")


def calibrate(model: str | Path, data: IdentitySet, finder: FaceFinder,
              cache_dir: str | Path | None = None, progress: bool = True,
              command: str = "") -> dict:
    """Embed ``data``'s calibration part with ``model`` (the device's way) and return the
    card's ``calibration`` object."""
    part, held = split(data)
    backend = LiteRTBackend(model, 1)
    e = embed_identities(part, backend, finder, cache_dir, progress)
    where = os.path.relpath(data.origin, ROOT)
    what = (f"{data.name} ({where}): the calibration part of the identities "
            f"(crc32 of the identity label even; {len(set(part.identities))} identities, "
            f"{len(part.keys)} images); the other {len(set(held.identities))} identities "
            f"({len(held.keys)} images) are held out for training.evaluate --openset. "
            "Every pair of images of different identities")
    return calibration_of(e, what, command)


def device_finder(detector: str = "yunet", score: float = 0.8, pad: float = 0.0) -> FaceFinder:
    """The device's way of finding the face of a photo: its detector at its score, no size
    filter (min face is a device policy, not the recogniser's accuracy), the largest face."""
    from .evaluate import make_finder

    return make_finder(argparse.Namespace(landmarks=None, lfw=None, pick="largest",
                                          min_face=0.0, detector=detector, score=score, pad=pad))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.calibrate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("model", help="exported .tflite with its .json card beside it")
    ap.add_argument("--data", action="append", default=[],
                    help="identity-labelled set: an image folder per identity or an "
                         "'image<TAB>identity' list (repeatable, merged; default: CelebA's "
                         f"{' + '.join(CELEBA)} in {DATASETS})")
    ap.add_argument("--root", help="folder a list's image names are relative to")
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--score", type=float, default=0.8, help="detector score threshold")
    ap.add_argument("--pad", type=float, default=0.0,
                    help="replicate the border by this fraction before detecting")
    ap.add_argument("--cache", help="folder to cache embeddings per image")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the card")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cv2.setNumThreads(1)
        ModelCard.for_model(args.model)  # a missing or broken card: say so before embedding
        data = (merge([read_identity_set(d, args.root) for d in args.data]) if args.data
                else celeba())
        finder = device_finder(args.detector, args.score, args.pad)
        command = "python -m training.calibrate " + " ".join(argv if argv is not None
                                                               else sys.argv[1:])
        cal = calibrate(args.model, data, finder, args.cache, not args.quiet, command)
    except (EvalError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{cal['pairs']} impostor pairs, photos_exponent {cal['photos_exponent']}: "
          + ", ".join(f"FAR {q:g}: {s:.4f}" for q, s in zip(cal["far"], cal["score"],
                                                             strict=True)))
    if not args.dry_run:
        write_calibration(Path(args.model).with_suffix(".json"), cal)
        print(f"wrote calibration into {Path(args.model).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
