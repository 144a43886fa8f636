"""The web server inside `run`, as `edgeface-cam web` and under `demo --web`, each in a fresh
process: it serves, shows the camera, and stops cleanly with SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from edgeface_cam.demo import DEMO_CLIP
from edgeface_cam.web import AuthStore

from .conftest import ROOT

pytestmark = pytest.mark.device


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], tmp_path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DISPLAY", None)
    env.pop("EDGEFACE_CAM_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "edgeface_cam", *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _get(url: str, token: str | None = None, timeout: float = 60.0) -> dict:
    """GET url as JSON, retrying while the server starts."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def test_run_serves_the_camera_and_stops_with_sigterm(tmp_path):
    port = _port()
    AuthStore(tmp_path).set_password("service password")
    token = AuthStore(tmp_path).new_token("test")
    proc = _start(["run", "--source", str(DEMO_CLIP), "--no-preview", "--db",
                   str(tmp_path / "gallery.db"), "--events", str(tmp_path / "events.jsonl"),
                   "--set", "camera.fps=10", "--set", "recognizer.threads=1",
                   "--set", f"web.listen=127.0.0.1:{port}"], tmp_path)
    try:
        assert _get(f"http://127.0.0.1:{port}/api/health")["status"] == "ok"
        deadline = time.monotonic() + 60
        while True:
            status = _get(f"http://127.0.0.1:{port}/api/status", token)
            cams = status["cameras"]
            if (cams and cams[0]["frames"] > 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert cams and cams[0]["state"] == "running" and cams[0]["frames"] > 0, status
    finally:
        code, _, err = _stop(proc)
    assert code == 0, err
    assert "SIGTERM: stopping" in err and "frames" in err  # the run's summary
    with socket.socket() as s:  # nobody listens there any more (TIME_WAIT aside)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_web_without_a_camera_and_sigint(tmp_path):
    port = _port()
    proc = _start(["web", "--listen", f"0.0.0.0:{port}", "--db", str(tmp_path / "g.db")],
                  tmp_path)
    try:
        health = _get(f"http://127.0.0.1:{port}/api/health")
        assert health["password_set"] is False
    finally:
        code, _, err = _stop(proc, signal.SIGINT)
    assert code == 0, err
    # No password yet: loopback only, and it says how to set one.
    assert f"127.0.0.1:{port} only" in err and "edgeface-cam passwd" in err


def test_a_port_in_use_does_not_stop_the_camera(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _start(["run", "--source", str(ROOT / "assets/selftest/face.jpg"),
                       "--no-preview", "--db", str(tmp_path / "g.db"), "--events",
                       str(tmp_path / "ev.jsonl"), "--set", f"web.listen=127.0.0.1:{port}"],
                      tmp_path)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert re.search(r"web UI off: web.listen: cannot listen on 127.0.0.1:\d+", err), err


@pytest.mark.slow
def test_demo_web_prints_a_one_time_password_that_logs_in(tmp_path):
    port = _port()
    proc = _start(["demo", "--web", "--listen", f"127.0.0.1:{port}", "--no-preview"], tmp_path)
    try:
        _get(f"http://127.0.0.1:{port}/api/health")
        line = ""
        while "password:" not in line:
            line = proc.stderr.readline()
            assert line, "demo --web printed no password"
        password = line.split("password: ")[1].split()[0]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/login", method="POST",
                                     data=json.dumps({"password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and "edgeface_session=" in r.headers["set-cookie"]
    finally:
        code, _, err = _stop(proc, signal.SIGINT)
    assert code == 0, err


def test_tls_serves_https_with_a_secure_cookie_and_hsts(tmp_path):
    """web.tls_cert / web.tls_key: HTTPS, the session cookie Secure, Strict-Transport-Security."""
    import shutil
    import ssl

    from edgeface_cam import config as configmod
    from edgeface_cam.web import start_web

    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(tmp_path / "web.key"),
                    "-out", str(tmp_path / "web.crt")], check=True, capture_output=True)
    (tmp_path / "config.yaml").write_text("web:\n  tls_cert: web.crt\n  tls_key: web.key\n")
    cfg = configmod.replace(configmod.load(tmp_path / "config.yaml"),
                            gallery={"path": str(tmp_path / "gallery.db")})
    AuthStore(tmp_path).set_password("tls password")
    port = _port()
    server = start_web(cfg, listen=f"127.0.0.1:{port}")
    try:
        assert server.url == f"https://127.0.0.1:{port}"
        ctx = ssl.create_default_context(cafile=str(tmp_path / "web.crt"))
        ctx.check_hostname = False
        req = urllib.request.Request(f"{server.url}/api/login", method="POST",
                                     data=json.dumps({"password": "tls password"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            assert "Secure" in r.headers["set-cookie"]
            assert r.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP there
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5).read()
    finally:
        server.stop()


def test_a_missing_certificate_is_one_line(tmp_path):
    (tmp_path / "config.yaml").write_text("web:\n  tls_cert: nope.crt\n  tls_key: nope.key\n")
    r = subprocess.run([sys.executable, "-m", "edgeface_cam", "web", "--config",
                        str(tmp_path / "config.yaml"), "--db", str(tmp_path / "g.db"),
                        "--listen", f"127.0.0.1:{_port()}"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("edgeface-cam: error: web.tls_cert")
    assert "nope.crt" in r.stderr and "Traceback" not in r.stderr
