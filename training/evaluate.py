"""Face verification benchmark: ``python -m training.evaluate``.

Pair sources: insightface ``.bin`` files (aligned crops), the LFW layout (``pairs.txt`` + image
folders, faces found by the device detector or given as landmarks), or a pair TSV. The main face
of a photo is the largest one (``--pick largest``), or on the LFW layout, whose pictures are
centred on their subject, the one nearest the centre (``--pick centre``, its default). Models: a
torch checkpoint (``--arch`` + ``--checkpoint``; torch is imported only then) or an exported
``.tflite`` run exactly as the device runs it (``edgeface_cam.embed.Embedder``).

Protocol: each image's embedding is the sum of the L2-normalised embeddings of the aligned crop and
its horizontal flip, re-normalised (``--no-flip``: the crop alone, as the device matches); the
score of a pair is the cosine similarity; 10-fold accuracy, TAR at FAR and thresholds come from
``training.verification``. A pair with an image where no face was found gets the lowest possible
score (it is rejected, as the device would reject it); such images are counted and reported.
The last line printed reads ``accuracy=0.XXXX std=0.XXXX``.

This module is the CLI; the run lives in ``training.evaluation`` (readers, backends, embedding,
scoring, report). Its public names are importable from here too (``benchmarks/peers.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from . import verification as V
from .common import PICKS, open_detector
from .evaluation import EvalError
from .evaluation.backends import Backend, LiteRTBackend, TorchBackend, combine
from .evaluation.embedding import Embedded, EmbeddingCache, FaceFinder, embed_set
from .evaluation.identities import merge, read_identity_set
from .evaluation.openset import (
    OpenSetOptions,
    openset_dict,
    print_openset,
    run_openset,
    write_openset_rows,
)
from .evaluation.pairsets import (
    PairSet,
    imread,
    read_bin,
    read_landmarks,
    read_lfw,
    read_pairs_tsv,
    write_bin,
)
from .evaluation.report import print_result, result_dict
from .evaluation.run import DEFAULT_FARS, Result, evaluate
from .evaluation.scoring import impostor_pairs, score_pairs

__all__ = [
    "DEFAULT_FARS", "Backend", "Embedded", "EmbeddingCache", "EvalError", "FaceFinder",
    "LiteRTBackend", "PairSet", "Result", "TorchBackend", "build_parser", "combine", "embed_set",
    "evaluate", "impostor_pairs", "imread", "main", "print_result", "read_bin", "read_landmarks",
    "read_lfw", "read_pairs_tsv", "result_dict", "score_pairs", "write_bin",
]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="10-fold face verification accuracy, TAR at FAR and thresholds.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bin", help="insightface verification .bin (aligned 112x112 pairs)")
    src.add_argument("--lfw", help="LFW-layout folder with pairs.txt and Name/Name_0001.jpg")
    src.add_argument("--pairs", help="TSV: image_a image_b same [fold id_a id_b]")
    src.add_argument("--identities", action="append",
                     help="for --openset: an image folder per identity, or an 'image<TAB>"
                          "identity' list (repeatable: merged)")
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
    ap.add_argument("--pick", choices=PICKS,
                    help="which face of a photo is its subject: the largest, or the one nearest "
                         "the centre (default: centre for --lfw, whose pictures are centred on "
                         "their subject; largest otherwise)")
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
    add_openset_arguments(ap)
    return ap


def add_openset_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("open set (1:N), with --identities")
    g.add_argument("--openset", metavar="SIZES", type=_int_list,
                   help="gallery sizes, e.g. 10,100,1000: DIR and FPIR at the auto threshold "
                        "and at fixed FPIRs, on the held-out part of the identities")
    g.add_argument("--photos", type=_int_list, default=[1, 5],
                   help="enrolment photos a person, at most (default 1,5)")
    g.add_argument("--trials", type=int, default=10, help="random galleries per size")
    g.add_argument("--false-accept", type=float, default=0.01,
                   help="recognizer.false_accept for the auto threshold (default 0.01)")
    g.add_argument("--calibration", choices=("split", "card"), default="split",
                   help="calibrate on this set's calibration part (default), or take the "
                        "model card's calibration (CelebA's, for a held-out CelebA check)")
    g.add_argument("--write-card", action="store_true",
                   help="with --calibration card: store the measured DIR per gallery size in "
                        "the card's calibration (doctor and list quote it)")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want integers like 10,100,1000") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want positive integers like 10,100,1000")
    return values


def main_openset(args: argparse.Namespace) -> int:
    """``--identities ... --openset SIZES``."""
    if not args.openset:
        raise EvalError("--identities is for --openset SIZES (open-set DIR and FPIR)")
    data = merge([read_identity_set(d, args.root) for d in args.identities])
    finder = make_finder(args)
    opts = OpenSetOptions(photos=args.photos, trials=args.trials, false_accept=args.false_accept,
                          calibration=args.calibration, cache_dir=args.cache,
                          progress=not args.quiet)
    if args.write_card and not (args.model and args.calibration == "card"):
        raise EvalError("--write-card needs --model and --calibration card")
    r = run_openset(data, make_backend(args), finder, args.openset, opts)
    if args.write_card:
        write_openset_rows(args.model, r, "python -m training.evaluate " + " ".join(sys.argv[1:]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(openset_dict(r, vars(args)), indent=1))
    print_openset(r)
    return 0


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
    pick = args.pick or ("centre" if args.lfw else "largest")
    try:
        det = open_detector(args.detector, args.score)
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise EvalError(f"cannot make detector {args.detector!r}: {e}") from None
    return FaceFinder(det, args.pad, min_face=args.min_face, pick=pick,
                      describe=f"{args.detector} (score {args.score:g}, min face "
                               f"{args.min_face:g}px, pad {args.pad:g}, {pick} face)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cv2.setNumThreads(max(1, args.threads))
        if args.identities or args.openset:
            if not args.identities:
                raise EvalError("--openset needs --identities (an identity-labelled set)")
            return main_openset(args)
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
