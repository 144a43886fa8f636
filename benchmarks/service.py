"""The service as a user runs it: start-up to first frame, and resident memory over a long run.

    python benchmarks/service.py                 # the clip looped 10 times (2,750 frames)
    python benchmarks/service.py --loops 40      # a longer soak

Spawns ``edgeface-cam run`` on the fixture clip (looped into one long file), with Lin-Manuel
Miranda enrolled, and measures from the moment the process is spawned to its "first frame
processed" log line (imports, model load + self-test, detector, gallery, camera open), and samples
VmRSS from /proc every 0.5 s. Memory is flat when the last quarter's median is within a few MB of
the second quarter's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "assets" / "demo" / "lin_manuel_miranda_clip.mp4"
PHOTO = ROOT / "assets" / "demo" / "lin_manuel_miranda_1.png"


def loop_clip(out: Path, loops: int) -> int:
    """Write the clip ``loops`` times into one file; returns the frame count."""
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    for _ in range(loops):
        for f in frames:
            writer.write(f)
    writer.release()
    return len(frames) * loops


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", type=int, default=10)
    args = ap.parse_args()
    cli = [sys.executable, "-m", "edgeface_cam"]
    with tempfile.TemporaryDirectory() as tmp:
        db, video = Path(tmp) / "g.db", Path(tmp) / "looped.mp4"
        n = loop_clip(video, args.loops)
        subprocess.run([*cli, "enroll", "--db", str(db), "--name", "Lin-Manuel Miranda",
                        "--images", str(PHOTO)], cwd=ROOT, check=True, capture_output=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        proc = subprocess.Popen([*cli, "run", "--db", str(db), "--source", str(video),
                                 "--no-preview", "--events", os.devnull, "--log-level", "info"],
                                cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        first: list[float] = []

        def watch() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "first frame processed" in line and not first:
                    first.append(time.monotonic() - t0)

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        samples: list[tuple[float, float]] = []
        while proc.poll() is None:
            r = rss_mb(proc.pid)
            if r is not None:
                samples.append((time.monotonic() - t0, r))
            time.sleep(0.5)
        wall = time.monotonic() - t0
        reader.join(timeout=5)
    rss = [r for _, r in samples]
    q = max(1, len(rss) // 4)
    print(f"# service benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"frames={n} wall_s={wall:.1f} exit={proc.returncode}")
    print(f"first_frame_s={first[0]:.2f}" if first else "first_frame_s=n/a")
    print(f"rss_mb median={statistics.median(rss):.1f} max={max(rss):.1f} "
          f"q2={statistics.median(rss[q:2 * q]):.1f} q4={statistics.median(rss[-q:]):.1f} "
          f"samples={len(rss)}")
    return proc.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
