"""Event sinks against real receivers: a file, a mosquitto broker, a local HTTP server."""

from __future__ import annotations

import getpass
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edgeface_cam import config as configmod
from edgeface_cam.events import (
    SINKS,
    JsonLinesSink,
    MqttSink,
    SinkError,
    WebhookSink,
    make_event,
    make_sinks,
)


def event(i: int, name: str | None = "Barack Obama") -> dict:
    return make_event("cam0", "recognized" if name else "unknown", i, [10.4, 20, 30, 40.6], name,
                      0.5 + i / 1000)


def wait_until(cond, timeout: float = 10.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def sink_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("mqtt-sink", "webhook-sink")]


# ---- JSON lines -------------------------------------------------------------------------------
def test_make_event_has_the_agreed_fields():
    e = make_event("cam0", "recognized", np.int64(3), np.array([1.6, 2.2, 30.5, 40.0]), "Ann",
                   np.float32(0.61234))
    assert set(e) == {"time", "source", "event", "track_id", "box", "name", "score"}
    assert e["box"] == [2, 2, 30, 40] and all(type(v) is int for v in e["box"])
    assert e["time"].endswith("+00:00")  # UTC
    json.dumps(e)  # plain JSON types only
    with pytest.raises(ValueError, match="event must be one of"):
        make_event("cam0", "seen", 1, [0, 0, 1, 1], None, 0.0)


def test_make_event_time_and_optional_fields():
    # The pipeline passes the capture time; it is written in UTC to the millisecond.
    seen = datetime(2026, 1, 2, 4, 4, 5, 678901, tzinfo=timezone(timedelta(hours=1)))
    e = make_event("cam0", "unknown", 7, [0, 0, 10, 10], None, 0.1, time=seen,
                   snapshot="/snaps/a.jpg")
    assert e["time"] == "2026-01-02T03:04:05.678+00:00"
    assert list(e) == ["time", "source", "event", "track_id", "box", "name", "score",
                       "snapshot"]
    assert e["snapshot"] == "/snaps/a.jpg" and e["name"] is None
    # A snapshot the disk refused is null, not absent; a field never passed is absent.
    assert make_event("cam0", "unknown", 7, [0, 0, 1, 1], None, 0.1, snapshot=None)[
        "snapshot"] is None
    assert "snapshot" not in make_event("cam0", "unknown", 7, [0, 0, 1, 1], None, 0.1)
    # Optional fields come out in one fixed order, whatever order the producer passes them.
    e = make_event("cam0", "recognized", 1, [0, 0, 1, 1], "Ann", 0.9, sighting_id=12,
                   frame=40, snapshot=None)
    assert list(e)[-3:] == ["snapshot", "frame", "sighting_id"]
    with pytest.raises(ValueError, match="unknown event field"):
        make_event("cam0", "recognized", 1, [0, 0, 1, 1], "Ann", 0.9, snapshop="x")


def test_sink_types_are_the_ones_config_accepts():
    assert tuple(SINKS) == configmod.SINK_TYPES


def test_mqtt_spec_is_checked_before_connecting():
    with pytest.raises(SinkError, match=r"unknown setting\(s\) prot"):
        make_sinks([{"type": "mqtt", "host": "127.0.0.1", "prot": 1883}])
    with pytest.raises(SinkError, match=r"port must be 1\.\.65535"):
        make_sinks([{"type": "mqtt", "host": "127.0.0.1", "port": 70000}])
    with pytest.raises(SinkError, match="needs a broker host"):
        make_sinks([{"type": "mqtt", "host": ""}])
    assert not sink_threads()


def test_jsonl_file_is_appended_one_object_per_line_across_threads(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"earlier": true}\n')
    sink = JsonLinesSink(str(path))
    n_threads, per_thread = 8, 200

    def work(t: int) -> None:
        for i in range(per_thread):
            # A long name makes a torn/interleaved write visible as a broken line.
            sink.emit(event(t * 1000 + i, name=f"person-{t}-" + "x" * 300))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Flushed per line: readable before close.
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + n_threads * per_thread
    rows = [json.loads(line) for line in lines]
    assert rows[0] == {"earlier": True}
    ids = sorted(r["track_id"] for r in rows[1:])
    assert ids == sorted(t * 1000 + i for t in range(n_threads) for i in range(per_thread))
    sink.close()
    sink.emit(event(1))  # after close: ignored, no exception
    assert len(path.read_text().splitlines()) == len(lines)


def test_jsonl_stdout(capsys):
    sink = JsonLinesSink("-")
    sink.emit({**event(7), "extra": np.float32(0.25), "vec": np.arange(2)})
    sink.close()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    row = json.loads(out[0])
    assert row["track_id"] == 7 and row["extra"] == 0.25 and row["vec"] == [0, 1]


def test_jsonl_bad_path_is_one_line_error(tmp_path: Path):
    with pytest.raises(SinkError, match="cannot open event log"):
        JsonLinesSink(str(tmp_path / "missing-dir" / "e.jsonl"))


def test_make_sinks(tmp_path: Path):
    sinks = make_sinks([{"type": "jsonl", "path": str(tmp_path / "a.jsonl")},
                        {"type": "webhook", "url": "http://127.0.0.1:9/x", "retries": 0}])
    assert [type(s).__name__ for s in sinks] == ["JsonLinesSink", "WebhookSink"]
    for s in sinks:
        s.close()
    with pytest.raises(SinkError, match="unknown event sink type 'smtp'"):
        make_sinks([{"type": "smtp"}])
    with pytest.raises(SinkError, match="unknown setting"):
        make_sinks([{"type": "jsonl", "paht": "x"}])
    with pytest.raises(SinkError, match="needs a 'type'"):
        make_sinks([{"path": "x"}])
    with pytest.raises(SinkError, match="http:// or https://"):
        make_sinks([{"type": "webhook", "url": "ftp://x"}])
    assert not sink_threads()


# ---- webhook ----------------------------------------------------------------------------------
class Receiver:
    """A local HTTP server: fails the first ``fail_first`` requests with ``status``."""

    def __init__(self, fail_first: int = 0, status: int = 500) -> None:
        self.bodies: list[dict] = []
        self.requests = 0
        self.fail_first, self.status = fail_first, status
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    outer.requests += 1
                    fail = outer.requests <= outer.fail_first
                    if not fail:
                        outer.bodies.append(json.loads(body))
                self.send_response(outer.status if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_webhook_retries_on_500_then_delivers(receiver):
    r = receiver(fail_first=2, status=500)
    sink = WebhookSink(r.url, retries=3, backoff=0.05)
    sink.emit(event(1))
    assert wait_until(lambda: len(r.bodies) == 1)
    assert r.requests == 3  # two 500s, then the delivery
    assert r.bodies[0] == event(1) | {"time": r.bodies[0]["time"]}
    sink.close()
    assert sink.sent == 1 and sink.dropped == 0
    assert not sink_threads()


def test_webhook_gives_up_after_retries_and_does_not_retry_4xx(receiver):
    r = receiver(fail_first=100, status=503)
    sink = WebhookSink(r.url, retries=2, backoff=0.02)
    sink.emit(event(1))
    assert wait_until(lambda: sink.dropped == 1)
    assert r.requests == 3
    sink.close()

    r4 = receiver(fail_first=100, status=400)
    sink = WebhookSink(r4.url, retries=5, backoff=0.02)
    sink.emit(event(2))
    assert wait_until(lambda: sink.dropped == 1)
    sink.close()
    assert r4.requests == 1


def test_webhook_close_flushes_the_queue_in_order(receiver):
    r = receiver()
    sink = WebhookSink(r.url, queue_size=100)
    for i in range(30):
        sink.emit(event(i))
    sink.close()
    assert [b["track_id"] for b in r.bodies] == list(range(30))
    assert not sink_threads()


def test_webhook_unreachable_receiver_does_not_hang_close():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(f"http://127.0.0.1:{port}/", retries=50, backoff=0.5, timeout=1,
                       flush_timeout=1.0, queue_size=5)
    for i in range(8):  # 3 beyond the queue: the oldest are dropped
        sink.emit(event(i))
    t = time.monotonic()
    sink.close()
    assert time.monotonic() - t < 4
    assert sink.sent == 0 and sink.dropped == 8
    assert not sink_threads()


# ---- MQTT against a real mosquitto ------------------------------------------------------------
MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto not installed (apt-get install -y mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on a loopback port, with persistence so sessions survive a restart."""

    def __init__(self, folder: Path, extra: str = "") -> None:
        self.folder, self.port = folder, free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # As root, mosquitto drops to user "mosquitto", which cannot write its persistence
            # file into our temporary folder; naming the current user keeps it as is.
            f"user {getpass.getuser()}\n"
            + ("" if "password_file" in extra else "allow_anonymous true\n")
            + f"persistence true\npersistence_location {folder}/\n{extra}")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.folder / "mosquitto.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        if not wait_until(up, 10):
            raise RuntimeError((self.folder / "mosquitto.log").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path)
    yield b
    b.stop()


class Subscriber:
    """A paho client that records (topic, payload, retain) for topics under ``#``."""

    def __init__(self, port: int, client_id: str, persistent: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self.subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=not persistent)
        c.reconnect_delay_set(1, 1)

        def on_connect(client, userdata, flags, reason, props):
            client.subscribe([("edgeface-cam/#", 1), ("homeassistant/#", 1)])

        c.on_connect = on_connect
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = lambda cl, ud, m: self.messages.append(
            (m.topic, m.payload.decode(), bool(m.retain)))
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert self.subscribed.wait(10)
        self.client = c

    def payloads(self, topic: str) -> list[str]:
        return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@needs_mosquitto
def test_mqtt_events_discovery_retained_state_and_presence(broker: Broker):
    live = Subscriber(broker.port, "live")
    sink = MqttSink("127.0.0.1", broker.port, camera="Front Door",
                    people=["Barack Obama", "Joe Biden"], presence_timeout=1.0)
    assert sink.connected.wait(10)
    sink.emit(event(1, "Barack Obama"))
    sink.emit(event(2, None))
    ev = "edgeface-cam/front_door/event"
    assert wait_until(lambda: len(live.payloads(ev)) == 2)
    got = [json.loads(p) for p in live.payloads(ev)]
    assert [g["track_id"] for g in got] == [1, 2] and got[0]["name"] == "Barack Obama"

    # Home Assistant discovery: one sensor for the camera, one binary_sensor per known person.
    sensor = json.loads(live.payloads(
        "homeassistant/sensor/edgeface_cam_front_door/person/config")[0])
    assert sensor["state_topic"] == "edgeface-cam/front_door/person"
    assert sensor["availability_topic"] == "edgeface-cam/front_door/status"
    for who in ("barack_obama", "joe_biden"):
        cfg = json.loads(live.payloads(
            f"homeassistant/binary_sensor/edgeface_cam_front_door/{who}/config")[0])
        assert cfg["state_topic"] == f"edgeface-cam/front_door/person/{who}"
        assert cfg["unique_id"].endswith(who)

    # A client arriving later gets the retained state.
    late = Subscriber(broker.port, "late")
    assert wait_until(lambda: late.payloads("edgeface-cam/front_door/person/joe_biden"))
    retained = {t: p for t, p, r in late.messages if r}
    assert retained["edgeface-cam/front_door/person"] == "unknown"  # the latest event
    assert retained["edgeface-cam/front_door/person/barack_obama"] == "ON"
    assert retained["edgeface-cam/front_door/person/joe_biden"] == "OFF"
    assert retained["edgeface-cam/front_door/status"] == "online"
    assert not late.payloads(ev)  # events are not retained
    late.close()

    # Presence times out: OFF after presence_timeout without a sighting.
    sink.emit(event(3, "Joe Biden"))
    assert wait_until(lambda: live.payloads("edgeface-cam/front_door/person/joe_biden")[-1:]
                      == ["ON"])
    assert wait_until(lambda: live.payloads("edgeface-cam/front_door/person/joe_biden")[-1:]
                      == ["OFF"], timeout=5)
    sink.close()
    assert wait_until(lambda: live.payloads("edgeface-cam/front_door/status")[-1:]
                      == ["offline"])
    live.close()
    assert not sink_threads()


@needs_mosquitto
@pytest.mark.slow
def test_mqtt_buffers_events_across_a_broker_restart(broker: Broker):
    sub = Subscriber(broker.port, "keeper", persistent=True)  # session survives the restart
    sink = MqttSink("127.0.0.1", broker.port, camera="cam0", reconnect_min=1, reconnect_max=2)
    assert sink.connected.wait(10)
    ev = "edgeface-cam/cam0/event"
    for i in range(3):
        sink.emit(event(i))
    assert wait_until(lambda: len(sub.payloads(ev)) == 3)

    broker.stop()
    assert wait_until(lambda: not sink.connected.is_set())
    for i in range(3, 8):  # the broker is away: these must wait in the buffer
        sink.emit(event(i))
    time.sleep(0.5)
    assert sink.unacknowledged() >= 5
    broker.start()

    assert wait_until(lambda: len({json.loads(p)["track_id"] for p in sub.payloads(ev)}) == 8,
                      timeout=20), sub.payloads(ev)
    assert wait_until(lambda: sink.unacknowledged() == 0)  # every PUBACK came back
    sink.close()
    sub.close()
    assert not sink_threads()


@needs_mosquitto
def test_mqtt_username_password(tmp_path: Path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "cam", "s3cret"], check=True,
                   capture_output=True)
    b = Broker(tmp_path, extra=f"allow_anonymous false\npassword_file {pw}\n")
    try:
        bad = MqttSink("127.0.0.1", b.port, username="cam", password="wrong", flush_timeout=0.2)
        good = MqttSink("127.0.0.1", b.port, username="cam", password="s3cret")
        assert good.connected.wait(10)
        assert not bad.connected.is_set()
        bad.close()
        good.close()
    finally:
        b.stop()


@needs_mosquitto
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed for a test cert")
def test_mqtt_tls(tmp_path: Path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    b = Broker(tmp_path, extra=f"cafile {cert}\ncertfile {cert}\nkeyfile {key}\n")
    try:
        sink = MqttSink("127.0.0.1", b.port, tls=True, ca_certs=str(cert))
        assert sink.connected.wait(10)
        sink.close()
        with pytest.raises(SinkError, match="TLS"):
            MqttSink("127.0.0.1", b.port, ca_certs=str(tmp_path / "missing.pem"))
    finally:
        b.stop()
