"""Issue 15's targets, measured side by side in one run: the idle cost of `edgeface-cam run` on a
static scene with the motion gate on and off, the gated demo against the ungated one, three
cameras in one process against one, and whether embedding faces in batches pays.

    python benchmarks/cameras.py                  # everything, Markdown on stdout
    python benchmarks/cameras.py --only idle      # one part: idle, demo, cameras, batch
    python benchmarks/cameras.py --json out.json

- idle: `edgeface-cam run` (a subprocess, as the service runs) on a still 640x480 room with
  sensor noise at 30 fps, nobody in view; CPU time (user + system, all its threads, decoding
  included) over a window after start-up, divided by the window's wall time. Two sources: the
  scene as an MPEG-4 file paced at 30 fps (`--set camera.fps=30`), and camera-like: the same
  frames served as an MJPEG stream over HTTP at 30 fps (an IP camera: live, reconnecting,
  newest-frame-wins; JPEG decoding in the measured process).
- demo: the bundled demo clip at 30 fps, motion.enabled true and false: who is recognised,
  the frame of each person's first recognition, frames skipped.
- cameras: `edgeface-cam bench --cameras N` for N = 1 and 3 on the demo clip: peak RSS (the
  kernel's ru_maxrss of that process) and per-camera FPS.
- motion: the running-average difference (``motion.MotionGate``) against OpenCV's MOG2
  background subtractor on the same thumbnails: frames flagged as motion on the made scenes
  and milliseconds a frame.
- batch: LiteRT invoke time per face with a batch of 1, 2, 3 and 4 crops (the interpreter's
  input resized) against one invoke per crop.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.pipeline import machine  # noqa: E402
from tests import scenes  # noqa: E402

FPS = 30.0
DEMO = ROOT / "assets" / "demo" / "lin_manuel_miranda_clip.mp4"
CLI = [sys.executable, "-m", "edgeface_cam"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_run(source: str, gate: bool, tmp: Path, warmup: float, window: float) -> dict:
    """`edgeface-cam run` on ``source``: CPU seconds per wall second over ``window`` seconds
    after ``warmup`` seconds of start-up (model load, self-test, first frames)."""
    cmd = [*CLI, "run", "--source", source, "--db", str(demo_db(tmp)), "--events",
           str(tmp / "events.jsonl"), "--no-preview", "--set",
           f"motion.enabled={'true' if gate else 'false'}", "--log-level", "WARNING"]
    if not source.startswith("http"):
        cmd += ["--set", f"camera.fps={FPS:g}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"run ended early: {proc.stderr.read()[-500:]}")
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    frames = next((ln for ln in err.splitlines() if ln.startswith("frames ")), "")
    return {"cores": round((c1 - c0) / (t1 - t0), 3), "window_s": round(t1 - t0, 1),
            "summary": frames}


class MjpegServer:
    """Serves frames as multipart/x-mixed-replace JPEGs at ``fps``, looping: an IP camera."""

    def __init__(self, frames: list[np.ndarray], fps: float = FPS) -> None:
        jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
                 for f in frames]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                t = time.monotonic()
                try:
                    for i in range(10 ** 9):
                        data = jpegs[i % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(data)}\r\n\r\n".encode()
                                         + data + b"\r\n")
                        t += 1.0 / fps
                        time.sleep(max(0.0, t - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def idle(tmp: Path, warmup: float, window: float) -> list[dict]:
    n = round((warmup + window + 10) * FPS)
    clip = scenes.write_video(tmp / "still.mp4", scenes.still(n, sigma=3.0, jpeg=None))
    server = MjpegServer(list(scenes.still(60, sigma=3.0, jpeg=None)))
    rows = []
    try:
        for kind, source in (("file, paced 30 fps", str(clip)), ("MJPEG stream 30 fps",
                                                                  server.url)):
            for gate in (False, True):
                r = measure_run(source, gate, tmp, warmup, window)
                rows.append({"source": kind, "motion": gate, **r})
                print(f"  idle {kind}, motion {'on' if gate else 'off'}: {r['cores']:.3f} of a "
                      f"core ({r['summary']})", file=sys.stderr)
    finally:
        server.close()
    return rows


def demo_db(tmp: Path) -> Path:
    """A gallery holding the demo person (as a user's would hold somebody)."""
    db = tmp / "demo.db"
    if not db.exists():
        photo = ROOT / "assets" / "demo" / "lin_manuel_miranda_1.png"
        subprocess.run([*CLI, "enroll", "--name", "Lin-Manuel Miranda", "--images", str(photo),
                        "--db", str(db)], cwd=ROOT, check=True, capture_output=True)
    return db


def demo(tmp: Path) -> list[dict]:
    """The demo clip paced at 30 fps through `run`, gate on and off: names, first frames."""
    rows = []
    for gate in (False, True):
        events = tmp / f"demo-{gate}.jsonl"
        db = demo_db(tmp)
        t0 = time.monotonic()
        proc = subprocess.run([*CLI, "run", "--source", str(DEMO), "--db", str(db), "--events",
                               str(events), "--no-preview", "--set",
                               f"motion.enabled={'true' if gate else 'false'}", "--set",
                               f"camera.fps={FPS:g}"], cwd=ROOT, capture_output=True,
                              text=True, check=True)
        evs = [json.loads(ln) for ln in events.read_text().splitlines()]
        first: dict[str, int] = {}
        for e in evs:
            if e["name"]:
                first[e["name"]] = min(first.get(e["name"], e["frame"]), e["frame"])
        summary = next(ln for ln in proc.stderr.splitlines() if ln.startswith("frames "))
        rows.append({"motion": gate, "first_recognition_frame": first, "events": len(evs),
                     "summary": summary, "wall_s": round(time.monotonic() - t0, 1)})
        print(f"  demo motion {'on' if gate else 'off'}: {first} ({summary})", file=sys.stderr)
    return rows


def peak_rss_mib(cmd: list[str]) -> tuple[float, str]:
    """Run ``cmd``; its peak RSS (MiB, ru_maxrss of that child alone) and stdout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss / 1024, out


def many_cameras(frames: int) -> list[dict]:
    rows = []
    for n in (1, 3):
        rss, out = peak_rss_mib([*CLI, "bench", "--cameras", str(n), "--frames", str(frames),
                                 "--json"])
        report = json.loads(out)
        rows.append({"cameras": n, "peak_rss_mib": round(rss, 1), "fps_total": report["fps"],
                     "per_camera_fps": {k: v["fps"] for k, v in report["cameras"].items()}})
        print(f"  {n} camera(s): peak RSS {rss:.1f} MiB, {rows[-1]['per_camera_fps']}",
              file=sys.stderr)
    return rows


def batch(repeats: int = 200) -> list[dict]:
    """Per-face invoke time at batch 1..4, with LiteRT's default XNNPACK delegate and without
    it (the reference kernels: the only way the exported model takes a batch > 1 here)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeface_cam.embed import DEFAULT_MODEL

    rows = []
    for delegate in ("xnnpack", "builtin"):
        resolver = (OpResolverType.AUTO if delegate == "xnnpack"
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        for n in (1, 2, 3, 4):
            interp = Interpreter(str(DEFAULT_MODEL), num_threads=2,
                                 experimental_op_resolver_type=resolver)
            inp = interp.get_input_details()[0]
            shape = list(inp["shape"])
            try:
                interp.resize_tensor_input(inp["index"], [n, *shape[1:]])
                interp.allocate_tensors()
            except RuntimeError as e:
                rows.append({"delegate": delegate, "batch": n, "ms_per_face": None,
                             "error": " ".join(str(e).split())[:120]})
                continue
            x = np.zeros([n, *shape[1:]], inp["dtype"])
            times = []
            for _ in range(max(10, repeats // n)):
                interp.set_tensor(inp["index"], x)
                t = time.perf_counter()
                interp.invoke()
                times.append(time.perf_counter() - t)
            ms = float(np.median(times)) * 1e3
            rows.append({"delegate": delegate, "batch": n, "ms_per_face": round(ms / n, 2)})
        print(f"  batch ({delegate}): {[r['ms_per_face'] for r in rows[-4:]]} ms a face",
              file=sys.stderr)
    return rows


class Mog2Gate:
    """The alternative measured against ``MotionGate.moving``: OpenCV's MOG2 background
    subtractor on the same thumbnail, with the same opening and share/area test."""

    def __init__(self, gate_cls: type, learning_rate: float = -1.0) -> None:
        self.gate = gate_cls()
        self.mog = cv2.createBackgroundSubtractorMOG2(history=500, varThreshold=16,
                                                      detectShadows=False)
        self.rate = learning_rate

    def moving(self, image: np.ndarray) -> bool:
        from edgeface_cam.motion import _KERNEL, thumbnail

        small = thumbnail(image).astype(np.uint8)
        mask = (self.mog.apply(small, learningRate=self.rate) > 0).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL)
        share = np.count_nonzero(mask) / mask.size
        if share < self.gate.threshold:
            return False
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        h, w = image.shape[:2]
        return int(stats[1:, cv2.CC_STAT_AREA].max()) * h * w / mask.size >= self.gate.min_area


def motion_methods() -> list[dict]:
    """Frames flagged as motion (after the first 30, which train MOG2) and ms a frame."""
    from edgeface_cam.motion import MotionGate

    person = ROOT.parent / "shared" / "fixtures" / "people" / "obama" / "obama_1.jpg"
    jump = [np.clip(f.astype(int) + (40 if i >= 150 else 0), 0, 255).astype(np.uint8)
            for i, f in enumerate(scenes.still(300))]
    made = {"still (noise 4, JPEG 75)": list(scenes.still(300)),
            "still (noise 8, JPEG 40)": list(scenes.still(300, sigma=8.0, jpeg=40)),
            "ramp +60 levels / 10 s": list(scenes.ramp(300)),
            "lights +40 levels at once": jump,
            "walk-in at frame 240 (of 300)": list(scenes.walk_in(person, idle=240, stay=40))}
    rows = []
    for scene, frames in made.items():
        for method, gate in (("running average", MotionGate()),
                             ("MOG2", Mog2Gate(MotionGate))):
            flagged, times = [], []
            for i, f in enumerate(frames):
                t = time.perf_counter()
                m = gate.moving(f)
                times.append(time.perf_counter() - t)
                if i >= 30 and m:
                    flagged.append(i)
            rows.append({"scene": scene, "method": method, "moving_frames": len(flagged),
                         "first": flagged[0] if flagged else None,
                         "ms": round(float(np.median(times)) * 1e3, 3)})
            print(f"  motion {scene}, {method}: {rows[-1]}", file=sys.stderr)
    return rows


def report(meta: dict, res: dict) -> str:
    out = [f"`{meta['command']}` · {meta['date']} · {meta['machine']}", ""]
    if "idle" in res:
        out += ["| idle source | motion off: cores | motion on: cores |", "| --- | --- | --- |"]
        for kind in dict.fromkeys(r["source"] for r in res["idle"]):
            off, on = (next(r["cores"] for r in res["idle"] if r["source"] == kind
                            and r["motion"] is g) for g in (False, True))
            out.append(f"| {kind} | {off:.3f} | {on:.3f} |")
        out.append("")
    if "demo" in res:
        out += ["| demo at 30 fps | first recognition (frame) | events | run summary |",
                "| --- | --- | --- | --- |"]
        for r in res["demo"]:
            out.append(f"| motion {'on' if r['motion'] else 'off'} | "
                       f"{r['first_recognition_frame']} | {r['events']} | {r['summary']} |")
        out.append("")
    if "cameras" in res:
        out += ["| cameras in one process | peak RSS MiB | per-camera FPS |", "| --- | --- | --- |"]
        for r in res["cameras"]:
            out.append(f"| {r['cameras']} | {r['peak_rss_mib']} | {r['per_camera_fps']} |")
        out.append("")
    if "motion" in res:
        out += ["| scene (300 frames) | running average: moving frames, first, ms | "
                "MOG2: moving frames, first, ms |", "| --- | --- | --- |"]
        for scene in dict.fromkeys(r["scene"] for r in res["motion"]):
            cells = [next(f"{r['moving_frames']}, {r['first']}, {r['ms']}" for r in res["motion"]
                          if r["scene"] == scene and r["method"] == m)
                     for m in ("running average", "MOG2")]
            out.append(f"| {scene} | {cells[0]} | {cells[1]} |")
        out.append("")
    if "batch" in res:
        out += ["| embed batch (2 threads) | XNNPACK ms/face | reference kernels ms/face |",
                "| --- | --- | --- |"]
        for n in (1, 2, 3, 4):
            per = [next(r["ms_per_face"] for r in res["batch"] if r["batch"] == n and
                        r["delegate"] == d) for d in ("xnnpack", "builtin")]
            shown = [("refused" if v is None else v) for v in per]
            out.append(f"| {n} | {shown[0]} | {shown[1]} |")
        errors = {r["error"] for r in res["batch"] if r.get("error")}
        out += [f"(refused: {e})" for e in sorted(errors)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts = ("idle", "demo", "cameras", "motion", "batch")
    ap.add_argument("--only", nargs="+", choices=parts, default=list(parts))
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring idle")
    ap.add_argument("--window", type=float, default=20.0, help="seconds measured (idle)")
    ap.add_argument("--frames", type=int, default=275, help="frames a camera (cameras)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgeface-bench-") as tmp:
        for part in args.only:
            if part == "idle":
                res["idle"] = idle(Path(tmp), args.warmup, args.window)
            elif part == "demo":
                res["demo"] = demo(Path(tmp))
            elif part == "cameras":
                res["cameras"] = many_cameras(args.frames)
            elif part == "motion":
                res["motion"] = motion_methods()
            else:
                res["batch"] = batch()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "load": round(os.getloadavg()[0], 2),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "versions": f"python {platform.python_version()}, opencv {cv2.__version__}"}
    print(report(meta, res))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
