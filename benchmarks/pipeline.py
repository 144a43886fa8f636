"""End-to-end pipeline speed: per-stage latency (median, p90) and FPS on the fixture clips.

    python benchmarks/pipeline.py                          # 2 threads, YuNet 640, all scenes
    python benchmarks/pipeline.py --input-width 320 --scenes clip480
    python benchmarks/pipeline.py --json out.json
    python benchmarks/pipeline.py --motion off             # without the motion gate only

Scenes: ``clip`` (640x360, the stage clip as decoded), ``clip480`` (the same frames resized to
640x480: the target case, 1 face in most frames and 2-6 in a third of them), ``street``
(1920x1080, 4-8 small faces a frame). Every frame is processed (``realtime=False``), with the
decoder on the capture thread as in the service, so FPS is the sustained throughput. The gallery
holds Lin-Manuel Miranda plus 99 random identities. Prints a Markdown table with the machine,
versions, load average and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edgeface_cam.detect import make_detector  # noqa: E402
from edgeface_cam.embed import DEFAULT_MODEL, Embedder  # noqa: E402
from edgeface_cam.gallery import Gallery  # noqa: E402
from edgeface_cam.motion import MotionGate  # noqa: E402
from edgeface_cam.pipeline import STAGES, FrameReport, Pipeline, PipelineOptions  # noqa: E402
from edgeface_cam.recognize import Recognizer  # noqa: E402
from edgeface_cam.shotcut import ShotCutDetector  # noqa: E402
from edgeface_cam.sources import Frame, FrameSource, open_source  # noqa: E402
from edgeface_cam.track import Tracker  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures"
CLIP = FIXTURES / "video" / "lin_manuel_miranda_clip.mp4"
STREET = FIXTURES / "video" / "street_scene.mp4"
LIN = FIXTURES / "people" / "lin_manuel_miranda" / "lin_manuel_miranda_1.png"
SCENES = {"clip": (CLIP, None), "clip480": (CLIP, (640, 480)), "street": (STREET, None)}


class Resized(FrameSource):
    """Another source's frames scaled to cover ``size`` and centre-cropped (faces keep their
    shape, as with a 4:3 camera), on the capture thread like a camera's own scaler."""

    def __init__(self, inner: FrameSource, size: tuple[int, int]) -> None:
        super().__init__(f"{inner.name}@{size[0]}x{size[1]}")
        self.inner, self.size = inner, size

    def read(self) -> Frame | None:
        f = self.inner.read()
        if f is None:
            return None
        h, w = f.image.shape[:2]
        s = max(self.size[0] / w, self.size[1] / h)
        img = cv2.resize(f.image, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
        y0, x0 = (img.shape[0] - self.size[1]) // 2, (img.shape[1] - self.size[0]) // 2
        img = np.ascontiguousarray(img[y0:y0 + self.size[1], x0:x0 + self.size[0]])
        return Frame(img, f.t, f.index, self.name)

    def close(self) -> None:
        self.inner.close()


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), platform.processor())
    except (OSError, subprocess.SubprocessError):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores visible, {platform.system()} {platform.machine()}"


def run_scene(name: str, recognizer: Recognizer, gallery: Gallery, embed_every: int,
              max_embeds: int, motion: bool = False) -> dict:
    path, size = SCENES[name]
    src: FrameSource = open_source(str(path))
    if size:
        src = Resized(src, size)
    by_faces: dict[int, list[float]] = {}

    def on_frame(r: FrameReport) -> None:
        by_faces.setdefault(len(r.tracks), []).append(r.total_s)

    with src:
        opts = PipelineOptions(realtime=False, max_embeds_per_frame=max_embeds or None)
        p = Pipeline(src, recognizer, gallery, [], tracker=Tracker(embed_every=embed_every),
                     cuts=ShotCutDetector(), motion=MotionGate() if motion else None,
                     options=opts, on_frame=on_frame)
        stats = p.run()
    upto3 = [t for n, ts in by_faces.items() if n <= 3 for t in ts]
    return {
        "scene": name,
        "motion": motion,
        "frames": stats.frames,
        "skipped": stats.skipped,
        "fps": round(stats.fps, 1),
        "faces_per_frame": {str(k): len(v) for k, v in sorted(by_faces.items())},
        "embeddings": stats.embeddings,
        "tracks": stats.tracks,
        "events": stats.events,
        "first_frame_ms": round((stats.first_frame_latency_s or 0) * 1e3, 1),
        "total_ms_upto3_faces_median": round(float(np.median(upto3)) * 1e3, 2) if upto3 else None,
        "stages": {k: {"median_ms": round(t.median_ms, 2), "p90_ms": round(t.p90_ms, 2),
                       "n": t.count} for k, t in stats.timings.items()},
    }


def cpu_costs(args: argparse.Namespace, frames: int = 120) -> dict:
    """CPU milliseconds each stage costs on ONE thread (time.thread_time), for the clip at
    640x480. Unlike wall-clock timings these barely move when other processes share the cores,
    so they say what the pipeline needs from a quiet machine."""
    cv2.setNumThreads(1)
    embedder = Embedder(args.model, num_threads=1)
    rec = Recognizer(make_detector(args.detector, input_width=args.input_width, num_threads=1),
                     embedder, min_face=args.min_face)
    src = Resized(open_source(str(CLIP)), (640, 480))
    cost: dict[str, list[float]] = {"decode+resize": [], "detect": [], "align+quality": [],
                                    "embed_face": []}
    with src:
        for _ in range(frames):
            t = time.thread_time()
            f = src.read()
            if f is None:
                break
            cost["decode+resize"].append(time.thread_time() - t)
            t = time.thread_time()
            faces = rec.detect(f.image)
            cost["detect"].append(time.thread_time() - t)
            t = time.thread_time()
            crops = [rec.align(f.image, face) for face in faces]
            for face, crop in zip(faces, crops, strict=True):
                rec.quality(face, crop)
            cost["align+quality"].append(time.thread_time() - t)
            if crops:
                t = time.thread_time()
                rec.embed(crops[:1])
                cost["embed_face"].append(time.thread_time() - t)
    cv2.setNumThreads(args.threads)
    return {k: {"median_ms": round(float(np.median(v)) * 1e3, 2),
                "p90_ms": round(float(np.percentile(v, 90)) * 1e3, 2), "n": len(v)}
            for k, v in cost.items() if v}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="OpenCV and LiteRT threads")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--input-width", type=int, default=640, help="YuNet detection width")
    ap.add_argument("--min-face", type=float, default=40)
    ap.add_argument("--embed-every", type=int, default=10)
    ap.add_argument("--max-embeds", type=int, default=2, help="per frame (0: no limit)")
    ap.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    ap.add_argument("--motion", choices=("off", "on", "both"), default="both",
                    help="the motion gate (motion.enabled) off, on, or each scene both ways")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    for f in (CLIP, STREET, LIN):
        if not f.is_file():
            sys.exit(f"error: fixture not found: {f}")

    cv2.setNumThreads(args.threads)
    embedder = Embedder(args.model, num_threads=args.threads)
    detector = make_detector(args.detector, input_width=args.input_width,
                             num_threads=args.threads)
    recognizer = Recognizer(detector, embedder, min_face=args.min_face)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Gallery(Path(tmp) / "bench.db", embedder.fingerprint)
        (lin,) = recognizer.analyze(cv2.imread(str(LIN)))[:1]
        gallery.enroll("Lin-Manuel Miranda", lin.embedding[None])
        rng = np.random.default_rng(0)
        for i in range(99):
            v = rng.standard_normal((1, embedder.card.embedding_size)).astype(np.float32)
            gallery.enroll(f"person {i:02d}", v / np.linalg.norm(v))
        gallery.refresh()
        gates = {"off": [False], "on": [True], "both": [False, True]}[args.motion]
        for scene in args.scenes:
            for gate in gates:
                load = os.getloadavg()[0]
                row = run_scene(scene, recognizer, gallery, args.embed_every, args.max_embeds,
                                gate)
                row["load_before"] = round(load, 2)
                rows.append(row)
        gallery.close()

    costs = cpu_costs(args)
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "threads": args.threads, "detector": f"{args.detector} {args.input_width}",
        "model": Path(args.model).name, "embed_every": args.embed_every,
        "max_embeds_per_frame": args.max_embeds or None,
        "versions": f"python {platform.python_version()}, opencv {cv2.__version__}, "
                    f"numpy {np.__version__}, runtime {embedder.runtime}",
    }
    print(f"\n{meta['command']}\n{meta['date']} | {meta['machine']} | {meta['versions']}\n"
          f"threads {meta['threads']}, detector {meta['detector']}, model {meta['model']}, "
          f"embed every {meta['embed_every']} frames, at most {meta['max_embeds_per_frame']} "
          "a frame\n")
    shown = [s for s in STAGES if s not in ("events", "preview")]
    print("| scene | motion | frames | skipped | FPS | faces/frame (frames) | embeds | " +
          " | ".join(f"{s} med/p90 ms" for s in shown) + " | load |")
    print("|" + " --- |" * (8 + len(shown)))
    for r in rows:
        cells = []
        for s in shown:
            t = r["stages"].get(s)
            cells.append(f"{t['median_ms']:.1f} / {t['p90_ms']:.1f}" if t else "-")
        faces = ", ".join(f"{k}:{v}" for k, v in r["faces_per_frame"].items())
        print(f"| {r['scene']} | {'on' if r['motion'] else 'off'} | {r['frames']} | "
              f"{r['skipped']} | {r['fps']:.1f} | {faces} | {r['embeddings']} | "
              + " | ".join(cells) + f" | {r['load_before']} |")
    for r in rows:
        if r["total_ms_upto3_faces_median"]:
            ms = r["total_ms_upto3_faces_median"]
            print(f"{r['scene']} (motion {'on' if r['motion'] else 'off'}): frames with <= 3 "
                  f"faces take {ms:.1f} ms median "
                  f"(~{1e3 / ms:.0f} fps of worker time); first frame after "
                  f"{r['first_frame_ms']:.0f} ms")
    print("\nCPU cost on one thread (time.thread_time; clip at 640x480, "
          f"{costs['detect']['n']} frames):")
    for k, v in costs.items():
        print(f"  {k:<14} median {v['median_ms']:6.2f} ms  p90 {v['p90_ms']:6.2f} ms")
    ref = next((r for r in rows if r["scene"] == "clip480"), rows[0])
    per_frame = ref["embeddings"] / max(1, ref["frames"])
    worker = costs["detect"]["median_ms"] + costs["align+quality"]["median_ms"] + \
        costs["embed_face"]["median_ms"] * per_frame
    print(f"  worker CPU per frame (detect + align + {per_frame:.2f} embeddings a frame as in "
          f"{ref['scene']}) ~{worker:.1f} ms -> ~{1e3 / worker:.0f} fps on one core, the "
          "decoder on the other")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "cpu_cost": costs},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
