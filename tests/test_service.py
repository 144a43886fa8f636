"""Service plumbing: sd_notify over a fake NOTIFY_SOCKET, journal logging, signals, serve()."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml

from edgeface_cam.service import Notifier, configure_logging, install_signal_handlers, serve

from .conftest import PEOPLE, ROOT, VIDEO

pytestmark = pytest.mark.device


class FakeSystemd:
    """The manager's end of $NOTIFY_SOCKET: a datagram socket collecting what the app sends."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"edgeface-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            # A short folder: unix socket paths are limited to 107 bytes.
            self._dir = tempfile.mkdtemp(prefix="efn")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append(data.decode())
                self._cond.notify_all()

    def fields(self) -> list[str]:
        with self._cond:
            return [f for m in self.messages for f in m.split("\n")]

    def wait_for(self, field: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(f == field for m in self.messages for f in m.split("\n")) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {count}x {field!r} within {timeout} s; "
                                         f"got {self.messages}")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        if hasattr(self, "_dir"):
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def systemd(monkeypatch):
    fake = FakeSystemd()
    monkeypatch.setenv("NOTIFY_SOCKET", fake.address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.close()


# --- Notifier ------------------------------------------------------------------------------------
def test_notifier_sends_ready_status_watchdog_stopping(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier()
    assert n.enabled and n.watchdog_interval == pytest.approx(15.0)
    assert n.ready("starting up")
    assert n.watchdog()
    assert n.status("2 faces\nseen")
    assert n.stopping()
    systemd.wait_for("STOPPING=1")
    assert systemd.messages[0] == "READY=1\nSTATUS=starting up"
    assert "WATCHDOG=1" in systemd.messages
    assert "STATUS=2 faces seen" in systemd.messages  # one line: a newline would end the field


def test_notifier_abstract_socket(monkeypatch):
    fake = FakeSystemd(abstract=True)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", fake.address)
        assert Notifier().ready()
        fake.wait_for("READY=1")
    finally:
        fake.close()


def test_watchdog_is_rate_limited_to_half_the_timeout(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # pings at most every 0.2 s
    n = Notifier()
    sent = [n.watchdog() for _ in range(50)]
    assert sent[0] and not any(sent[1:])
    time.sleep(0.25)
    assert n.watchdog()
    systemd.wait_for("WATCHDOG=1", count=2)
    time.sleep(0.05)
    assert systemd.fields().count("WATCHDOG=1") == 2


def test_watchdog_for_another_process_or_absent_is_not_pinged(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog() is False
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.delenv("WATCHDOG_USEC")
    assert Notifier().watchdog() is False  # no WatchdogSec= in the unit
    Notifier().ready()
    systemd.wait_for("READY=1")
    assert "WATCHDOG=1" not in systemd.fields()


def test_notifier_without_systemd_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not any([n.ready(), n.watchdog(), n.status("x"), n.reloading(), n.stopping()])


def test_notifier_survives_a_vanished_manager(tmp_path, caplog):
    n = Notifier(address=str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.WARNING, logger="edgeface_cam.service"):
        assert n.ready() is False
        assert n.status("still here") is False
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


# --- logging -------------------------------------------------------------------------------------
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_through(stream, level: str = "INFO") -> None:
    configure_logging(level, stream=stream)
    logging.getLogger("edgeface_cam.test").warning("camera lost")
    logging.getLogger("edgeface_cam.test").debug("hidden at INFO")
    for h in logging.getLogger().handlers:
        h.flush()


def test_logging_has_time_on_a_terminal(monkeypatch, restore_logging):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    out = io.StringIO()
    _log_through(out)
    assert TIMESTAMP.match(out.getvalue())
    assert "WARNING edgeface_cam.test: camera lost" in out.getvalue()
    assert "hidden" not in out.getvalue()


@pytest.mark.parametrize("var", ["JOURNAL_STREAM", "INVOCATION_ID"])
def test_logging_under_systemd_has_no_time(monkeypatch, restore_logging, var):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.setenv(var, "8:12345" if var == "JOURNAL_STREAM" else "0123abcd")
    out = io.StringIO()
    _log_through(out)
    assert out.getvalue() == "WARNING edgeface_cam.test: camera lost\n"


def test_logging_into_the_journal_stream_carries_priorities(tmp_path, monkeypatch,
                                                           restore_logging):
    # JOURNAL_STREAM names the journal's socket as dev:inode; a file stands in for it here.
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("DEBUG", stream=stream)
        log = logging.getLogger("edgeface_cam.test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e\nsecond line")
    lines = (tmp_path / "journal").read_text().splitlines()
    assert lines == ["<7>DEBUG edgeface_cam.test: d", "<6>INFO edgeface_cam.test: i",
                     "<4>WARNING edgeface_cam.test: w", "<3>ERROR edgeface_cam.test: e",
                     "<3>second line"]


# --- signals -------------------------------------------------------------------------------------
def test_signals_call_the_right_callbacks():
    calls: list[str] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    restore = install_signal_handlers(lambda: calls.append("stop"),
                                      lambda: calls.append("reload"))
    try:
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGHUP)
        assert calls == ["reload", "reload"]
        signal.raise_signal(signal.SIGTERM)
        assert calls == ["reload", "reload", "stop"]
    finally:
        restore()
    assert {s: signal.getsignal(s) for s in before} == before


def test_second_interrupt_falls_back_to_the_default():
    calls: list[str] = []
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        restore = install_signal_handlers(lambda: calls.append("stop"))
        try:
            signal.raise_signal(signal.SIGINT)
            assert calls == ["stop"]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
                time.sleep(0.5)  # the re-sent signal is handled at the next bytecode
        finally:
            restore()
    finally:
        signal.signal(signal.SIGINT, old)
    assert calls == ["stop"]


# --- serve ---------------------------------------------------------------------------------------
class FakePipeline:
    """Runs until stopped, calling the heartbeat like Pipeline's worker loop does."""

    def __init__(self, settings: str, heartbeat) -> None:
        self.settings = settings
        self.heartbeat = heartbeat
        self._stop = threading.Event()

    def run(self) -> str:
        while not self._stop.wait(0.005):
            self.heartbeat()
        return f"ran {self.settings}"

    def stop(self) -> None:
        self._stop.set()


def _signal_later(steps: list[tuple[str, int, signal.Signals]],
                  fake: FakeSystemd) -> threading.Thread:
    """Wait for each (field, count) from the app, then send it the signal."""
    def drive() -> None:
        for field, count, sig in steps:
            fake.wait_for(field, count)
            os.kill(os.getpid(), sig)

    t = threading.Thread(target=drive, daemon=True)
    t.start()
    return t


def test_serve_ready_watchdog_reload_and_stop(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    built: list[str] = []
    closed: list[str] = []

    class Running:  # a context manager, as the CLI passes: closes what it opened
        def __init__(self, settings, heartbeat):
            built.append(settings)
            self.p = FakePipeline(settings, heartbeat)

        def __enter__(self):
            return self.p

        def __exit__(self, *exc):
            closed.append(self.p.settings)

    # SIGHUP after the pipeline's own heartbeats (beyond the ping sent with READY) came through.
    driver = _signal_later([("WATCHDOG=1", 3, signal.SIGHUP), ("READY=1", 2, signal.SIGTERM)],
                           systemd)
    before = signal.getsignal(signal.SIGHUP)
    result = serve("v1", Running, reload_settings=lambda: "v2")
    driver.join(5)
    assert result == "ran v2"
    assert built == ["v1", "v2"] and closed == ["v1", "v2"]
    systemd.wait_for("STOPPING=1")
    fields = systemd.fields()
    assert fields.index("READY=1") < fields.index("RELOADING=1") < fields.index("STOPPING=1")
    assert signal.getsignal(signal.SIGHUP) == before


def test_serve_keeps_running_settings_when_reload_fails(systemd):
    built: list[str] = []

    def build(settings, heartbeat):
        built.append(settings)
        if settings == "broken":
            raise ValueError("camera.source: no such file")
        return FakePipeline(settings, heartbeat)

    answers = iter([ValueError("config.yaml: not valid YAML at line 3"), "broken"])

    def reload_settings():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    driver = _signal_later([("READY=1", 1, signal.SIGHUP), ("READY=1", 2, signal.SIGHUP),
                            ("READY=1", 3, signal.SIGTERM)], systemd)
    assert serve("good", build, reload_settings=reload_settings) == "ran good"
    driver.join(5)
    # An unreadable file: rebuilt on the old settings; settings that fail to build: tried once,
    # then the old ones again.
    assert built == ["good", "good", "broken", "good"]


def test_serve_first_start_failure_propagates_and_restores_handlers(systemd):
    before = signal.getsignal(signal.SIGTERM)

    def build(settings, heartbeat):
        raise ValueError("recognizer.model: model file not found")

    with pytest.raises(ValueError, match="model file not found"):
        serve("s", build)
    assert signal.getsignal(signal.SIGTERM) == before
    assert "READY=1" not in systemd.fields()


def test_serve_returns_when_the_source_ends(systemd):
    class OneShot(FakePipeline):
        def run(self) -> str:
            self.heartbeat()
            return "done"

    assert serve("s", lambda s, hb: OneShot(s, hb)) == "done"
    systemd.wait_for("STOPPING=1")


def test_serve_with_the_real_pipeline_pings_from_its_heartbeat(systemd, monkeypatch, tmp_path):
    """The real detector, embedder and Pipeline on real photos: READY, heartbeat pings, end."""
    from edgeface_cam.detect import make_detector
    from edgeface_cam.embed import Embedder
    from edgeface_cam.pipeline import Pipeline, PipelineOptions
    from edgeface_cam.recognize import Recognizer
    from edgeface_cam.sources import open_source

    monkeypatch.setenv("WATCHDOG_USEC", "2000")  # ping at most every millisecond
    photos = tmp_path / "frames"
    photos.mkdir()
    for i, p in enumerate(sorted((PEOPLE / "obama").glob("*.jpg"))[:4]):
        shutil.copy(p, photos / f"{i}.jpg")
    recognizer = Recognizer(make_detector("yunet"), Embedder(num_threads=1), min_face=40)

    def build(folder, heartbeat):
        return Pipeline(open_source(str(folder)), recognizer, None, [], heartbeat=heartbeat,
                        options=PipelineOptions(realtime=False, heartbeat_interval=0.0))

    stats = serve(photos, build)
    assert stats.frames == 4 and stats.faces >= 4
    systemd.wait_for("STOPPING=1")
    fields = systemd.fields()
    assert fields.count("READY=1") == 1
    assert fields.count("WATCHDOG=1") >= 2


@pytest.mark.slow
def test_cli_run_as_a_notify_service_reloads_on_sighup_and_stops_on_sigterm(systemd, tmp_path):
    """`edgeface-cam run` in a subprocess, as systemd starts it: READY=1 once the model and
    camera are up, SIGHUP -> RELOADING=1 and READY=1 again, SIGTERM -> STOPPING=1, exit 0."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        # The clip paced at 5 fps stands in for a camera that keeps going (55 s of frames).
        "camera": {"source": str(VIDEO / "lin_manuel_miranda_clip.mp4"), "fps": 5},
        "recognizer": {"threads": 1},
        "gallery": {"path": str(tmp_path / "gallery.db")},
        "preview": {"enabled": False},
    }))
    env = dict(os.environ, NOTIFY_SOCKET=systemd.address, WATCHDOG_USEC="10000000",
               EDGEFACE_CAM_CONFIG=str(cfg), INVOCATION_ID="0123456789abcdef",
               OMP_NUM_THREADS="1")
    env.pop("DISPLAY", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeface_cam", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        systemd.wait_for("READY=1", timeout=60)
        proc.send_signal(signal.SIGHUP)
        systemd.wait_for("RELOADING=1")
        systemd.wait_for("READY=1", count=2, timeout=60)
        systemd.wait_for("WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    systemd.wait_for("STOPPING=1")
    assert "SIGHUP: reloading" in err and "SIGTERM: stopping" in err
    assert not TIMESTAMP.search(err)  # INVOCATION_ID set: the journal stamps the time


def test_a_reload_keeps_the_tracks_and_counts(systemd, tmp_path):
    """SIGHUP rebuilds the pipeline; a person in view keeps their track id and is not announced
    again, and the statistics go on counting (issue 12, finding 12)."""
    from edgeface_cam.detect import make_detector
    from edgeface_cam.embed import Embedder
    from edgeface_cam.pipeline import Pipeline
    from edgeface_cam.recognize import Recognizer
    from edgeface_cam.sources import open_source
    from edgeface_cam.track import Tracker

    photo = sorted((PEOPLE / "obama").glob("*.jpg"))[0]
    recognizer = Recognizer(make_detector("yunet"), Embedder(num_threads=1), min_face=40)
    events: list[dict] = []
    frames: list[int] = []  # frames processed, by every pipeline built
    built: list[Pipeline] = []

    class Sink:
        def emit(self, ev: dict) -> None:
            events.append(ev)

    def build(_settings, heartbeat):
        # The same photo at 30 fps, forever: someone standing in front of the camera.
        p = Pipeline(open_source(str(photo), fps=30, loop=True), recognizer, None, [Sink()],
                     tracker=Tracker(embed_every=1), heartbeat=heartbeat,
                     on_frame=lambda r: frames.append(r.frame.index))
        built.append(p)
        return p

    def drive() -> None:
        deadline = time.monotonic() + 30
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGHUP)
        systemd.wait_for("READY=1", 2)
        seen = len(frames)
        while len(frames) < seen + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=drive, daemon=True).start()
    stats = serve("settings", build, reload_settings=lambda: "settings")
    assert len(built) == 2
    assert built[0].stats().frames < stats.frames == len(frames)  # counts went on
    assert [(e["track_id"], e["event"]) for e in events] == [(1, "unknown")]  # announced once
    assert stats.tracks == 1 and stats.events == 1
