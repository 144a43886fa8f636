"""Detector speed and yield side by side on one clip: YuNet at 640 and 320 wide, BlazeFace.

    python benchmarks/detectors.py                      # the fixture clip, 1 and 2 threads
    python benchmarks/detectors.py --video my.mp4 --threads 4 --frames 100 --json out.json

Frames are decoded into memory first so only detection is timed (letterbox/resize included).
Prints a Markdown table for BENCHMARKS.md with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edgeface_cam.detect import DetectorError, make_detector  # noqa: E402

CLIP = ROOT.parent / "shared" / "fixtures" / "video" / "lin_manuel_miranda_clip.mp4"
# (label, make_detector kwargs)
CONFIGS = [
    ("yunet 640", {"backend": "yunet", "input_width": 640}),
    ("yunet 320", {"backend": "yunet", "input_width": 320}),
    ("blazeface short (128)", {"backend": "blazeface", "model": "short"}),
    ("blazeface full (192)", {"backend": "blazeface", "model": "full"}),
    ("blazeface full_sparse (192)", {"backend": "blazeface", "model": "full_sparse"}),
]


def read_frames(path: Path, limit: int | None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        sys.exit(f"error: cannot open video {path}")
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        sys.exit(f"error: no frames in {path}")
    return frames


def bench(label: str, kwargs: dict, frames: list[np.ndarray], threads: int, score: float,
          min_face: float, warmup: int = 5) -> dict | None:
    cv2.setNumThreads(threads)  # YuNet (OpenCV dnn) and the resizes
    kw = dict(kwargs, score_threshold=score)
    if kw["backend"] != "yunet":
        kw["num_threads"] = threads  # LiteRT's own thread pool
    try:
        det = make_detector(**kw)
    except DetectorError as e:
        print(f"skip {label}: {e}", file=sys.stderr)
        return None
    for f in frames[:warmup]:
        det.detect(f)
    times, counts = [], []
    for f in frames:
        t0 = time.perf_counter()
        faces = det.detect(f)
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(sum(g.size >= min_face for g in faces))  # as Recognizer.min_face
    t = np.array(times)
    c = np.array(counts)
    return {"detector": label, "threads": threads, "median_ms": float(np.median(t)),
            "p90_ms": float(np.percentile(t, 90)), "fps_at_median": 1000 / float(np.median(t)),
            "frames": len(frames), "frames_with_face": int((c > 0).sum()),
            "faces_per_frame": float(c.mean()), "max_faces": int(c.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=CLIP)
    ap.add_argument("--frames", type=int, default=None, help="first N frames only")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--score", type=float, default=0.8, help="score threshold for all (0.8)")
    ap.add_argument("--min-face", type=float, default=0, help="min face (px); 0 counts all")
    ap.add_argument("--only", nargs="+", help="labels starting with these words (yunet, blazeface)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)

    frames = read_frames(args.video, args.frames)
    h, w = frames[0].shape[:2]
    configs = [c for c in CONFIGS if not args.only or c[0].split()[0] in args.only]
    rows = []
    for threads in args.threads:
        for label, kwargs in configs:
            row = bench(label, kwargs, frames, threads, args.score, args.min_face)
            if row:
                rows.append(row)

    from edgeface_cam.runtime import interpreter_class

    runtime = interpreter_class()[1]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nDetectors on {args.video.name} ({len(frames)} frames, {w}x{h}), score >= {args.score}"
          f", min face {args.min_face:g} px")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
          f"{platform.processor() or ''} ({os.cpu_count()} CPUs, load {load:.1f}), "
          f"Python {platform.python_version()}, OpenCV {cv2.__version__}, {runtime}\n")
    print("| detector | threads | median ms | p90 ms | frames with a face | faces/frame | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['detector']} | {r['threads']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['frames_with_face']}/{r['frames']} | {r['faces_per_frame']:.2f} | "
              f"{r['max_faces']} |")
    if args.json:
        args.json.write_text(json.dumps({"video": str(args.video), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
