"""Issue 14's targets for the web UI, measured in one run.

    python benchmarks/web.py                 # everything, Markdown on stdout
    python benchmarks/web.py --only live     # one part: live, api, rss, startup, fps
    python benchmarks/web.py --json out.json

- live: the server's process CPU (user + system, all threads) over a 10 s window while a feeder
  hands the hub 640x480 frames at 15 fps (as the pipeline's on_frame does), with nobody watching
  and with one MJPEG client (curl, another process) at web.live_fps 5. The difference is what
  the live view costs.
- api: a real server (uvicorn, keep-alive HTTP) over a gallery of 50 people and 10,000
  sightings (when the gallery keeps sightings): median and p90 ms of each page and API call
  (history and /api/sightings paged at 50).
- rss: `edgeface-cam run` (a subprocess, as the service runs) on the demo clip paced at 15 fps,
  web.enabled true and false: peak RSS (VmHWM) and the time to the first processed frame.
- startup: importing the web stack (FastAPI, uvicorn, Jinja2, the routes) in a fresh Python:
  seconds and the RSS it adds.
- fps: the pipeline unpaced on the demo clip, with the hub attached (nobody watching) and
  without, alternating 3 runs each: median fps.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.pipeline import machine  # noqa: E402

CLIP = ROOT / "assets" / "demo" / "lin_manuel_miranda_clip.mp4"
PASSWORD = "benchmark password"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _frames(n: int = 60) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(cv2.resize(img, (640, 480)))
    cap.release()
    return out


def _server(folder: Path, hub=None):
    from edgeface_cam import config as configmod
    from edgeface_cam.config import Config
    from edgeface_cam.web import AuthStore, start_web

    cfg = configmod.replace(Config(), recognizer={"threads": 1},
                            gallery={"path": str(folder / "gallery.db")})
    store = AuthStore(folder)
    store.set_password(PASSWORD)
    token = store.new_token(f"bench{time.monotonic_ns()}")
    return start_web(cfg, hub=hub, listen=f"127.0.0.1:{_port()}"), token


def live(window: float = 10.0) -> dict:
    from edgeface_cam.web import LiveHub

    frames = _frames()
    hub = LiveHub(live_fps=5)
    hub.cameras = ["door"]
    track = SimpleNamespace(box=(200, 120, 120, 150), name="Somebody", score=0.61, id=3,
                            embeddings=2)
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            hub.on_frame(SimpleNamespace(frame=SimpleNamespace(image=frames[i % len(frames)],
                                                               source="door"), tracks=[track]))
            i += 1
            time.sleep(1 / 15)

    with tempfile.TemporaryDirectory() as tmp:
        server, token = _server(Path(tmp), hub)
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(2)

        def measure() -> float:
            c0, t0 = _cpu(), time.monotonic()
            time.sleep(window)
            return 100 * (_cpu() - c0) / (time.monotonic() - t0)

        idle = measure()
        before = hub.encoded
        curl = subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-H",
                                 f"Authorization: Bearer {token}",
                                 f"{server.url}/api/cameras/door/stream.mjpg"])
        time.sleep(1)
        watched = measure()
        encoded = (hub.encoded - before) / (window + 1)
        curl.terminate()
        curl.wait()
        stop.set()
        server.stop()
    return {"idle_cpu_percent": round(idle, 1), "watched_cpu_percent": round(watched, 1),
            "extra_percent_of_one_core": round(watched - idle, 1),
            "jpegs_per_s": round(encoded, 2)}


def _fill(folder: Path, people: int = 50, sightings: int = 10_000) -> bool:
    """A gallery of ``people`` (one real face each) and ``sightings`` unknown ones, recorded as
    the pipeline records them: 200 strangers' faces (a real crop, vectors spread around 200
    centres) so that they gather into groups."""
    from datetime import datetime, timedelta, timezone

    from edgeface_cam.app import App
    from edgeface_cam.config import Config
    from edgeface_cam.enroll import samples_from_images
    from edgeface_cam.gallery import SightingRecorder

    photo = ROOT.parent / "shared/fixtures/people/obama/obama_1.jpg"
    rng = np.random.default_rng(0)
    with App(Config(), str(folder / "gallery.db")) as app:
        sample = samples_from_images(app, [photo])[0]
        g = app.gallery()
        for i in range(people):
            v = sample.result.embedding + 0.05 * rng.standard_normal(512).astype(np.float32)
            g.enroll(f"Person {i:03d}", v[None], crops=[sample.result.crop])
        recorder = SightingRecorder(g.path, g.fingerprint)
        centres = rng.standard_normal((200, 512)).astype(np.float32)
        start = datetime.now(timezone.utc) - timedelta(days=5)
        for i in range(sightings):
            v = centres[i % 200] + 0.6 * rng.standard_normal(512).astype(np.float32)
            track = SimpleNamespace(id=i, score=0.1, best_quality=0.8, decided_name=None,
                                    best_crop=sample.result.crop, best_embedding=v,
                                    best_file=None)
            recorder.record(track, "door", start + timedelta(seconds=40 * i), {"frame": i})
            if i % 200 == 199:
                recorder.flush()  # a camera's pace, not a bulk load: the queue never overflows
        recorder.close()
    return True


def api(calls: int = 40) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        has_sightings = _fill(Path(tmp))
        print(f"filled in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        server, token = _server(Path(tmp))
        paths = ["/api/health", "/api/people", "/api/status", "/metrics", "/live", "/people",
                 "/status", "/strangers", "/history"]
        if has_sightings:
            paths += ["/api/sightings?limit=50", "/api/unknowns", "/history?unknown=true"]
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        out = {}
        for path in paths:
            times = []
            for i in range(calls + 2):
                t0 = time.perf_counter()
                conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
                r = conn.getresponse()
                r.read()
                if i >= 2:  # the first calls warm the caches
                    times.append(1e3 * (time.perf_counter() - t0))
                assert r.status == 200, (path, r.status)
            out[path] = {"median_ms": round(float(np.median(times)), 1),
                         "p90_ms": round(float(np.percentile(times, 90)), 1)}
        conn.close()
        server.stop()
    return {"sightings": 10_000 if has_sightings else 0, "people": 50, "calls": out}


def _run_service(web: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("DISPLAY", None)
        args = [sys.executable, "-m", "edgeface_cam", "run", "--source", str(CLIP),
                "--no-preview", "--db", f"{tmp}/g.db", "--events", f"{tmp}/ev.jsonl",
                "--set", "camera.fps=15", "--set", "recognizer.threads=1",
                "--set", f"web.enabled={'true' if web else 'false'}",
                "--set", f"web.listen=127.0.0.1:{_port()}"]
        t0 = time.monotonic()
        proc = subprocess.Popen(args, cwd=tmp, env=env, stderr=subprocess.PIPE, text=True)
        first, hwm = None, 0.0
        for line in proc.stderr:
            if first is None and "first frame processed" in line:
                first = time.monotonic() - t0
                hwm = _hwm(proc.pid)
        hwm = max(hwm, _hwm(proc.pid))
        proc.wait()
    return {"peak_rss_mb": hwm, "first_frame_s": round(first or -1, 2)}


def _hwm(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def rss() -> dict:
    """Peak RSS sampled at the last line the service writes (VmHWM is the high-water mark)."""
    out = {}
    for web in (False, True):
        runs = [_run_service_sampled(web) for _ in range(2)]
        out["web_on" if web else "web_off"] = {
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "first_frame_s": round(float(np.median([r["first_frame_s"] for r in runs])), 2)}
    out["web_adds_mb"] = round(out["web_on"]["peak_rss_mb"] - out["web_off"]["peak_rss_mb"], 1)
    return out


def _run_service_sampled(web: bool) -> dict:
    """``_run_service``, sampling VmHWM until the process ends."""
    result: dict = {}
    peak = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid in _children_named("edgeface_cam"):
                peak[0] = max(peak[0], _hwm(pid))
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    result = _run_service(web)
    done.set()
    t.join()
    result["peak_rss_mb"] = max(result["peak_rss_mb"], peak[0])
    return result


def _children_named(word: str) -> list[int]:
    me = str(os.getpid())
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "stat").read_text().split()[3] == me and \
                    word in (d / "cmdline").read_bytes().decode(errors="replace"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


def startup() -> dict:
    code = ("import resource, time; import edgeface_cam.app; r0 = resource.getrusage("
            "resource.RUSAGE_SELF).ru_maxrss; t = time.perf_counter(); {imp}; "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
            " - r0)")
    runs = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code.format(
            imp="import edgeface_cam.web.server, edgeface_cam.web.pages")],
            capture_output=True, text=True, cwd=ROOT, check=True)
        secs, kb = r.stdout.split()
        runs.append((float(secs), int(kb) / 1024))
    return {"import_s": round(float(np.median([s for s, _ in runs])), 2),
            "import_adds_mb": round(float(np.median([m for _, m in runs])), 1)}


def fps(repeats: int = 3) -> dict:
    from edgeface_cam.app import App
    from edgeface_cam.config import Config
    from edgeface_cam.sources import open_source
    from edgeface_cam.web import LiveHub

    out: dict[str, list[float]] = {"without_hub": [], "with_hub": []}
    app = App(Config())
    try:
        for _ in range(repeats):
            for key in out:
                source = open_source(str(CLIP))
                pipeline = app.pipeline(source, None, [])
                if key == "with_hub":
                    LiveHub().attach(pipeline)
                out[key].append(pipeline.run().fps)
                source.close()
    finally:
        app.close()
    return {k: round(float(np.median(v)), 1) for k, v in out.items()} | {
        "runs": {k: [round(x, 1) for x in v] for k, v in out.items()}}


PARTS = {"live": live, "api": api, "rss": rss, "startup": startup, "fps": fps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=list(PARTS), action="append")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if shutil.which("curl") is None and (not args.only or "live" in args.only):
        sys.exit("benchmarks/web.py needs curl (the MJPEG client)")
    results = {"machine": machine()}
    for name in args.only or list(PARTS):
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = PARTS[name]()
        print(json.dumps(results[name], indent=1), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
