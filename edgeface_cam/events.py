"""Event sinks: where "recognized" / "unknown" events go (JSON lines, MQTT, a webhook).

An event is a plain dict (see ``make_event``)::

    {"time": "2025-01-01T12:00:00.123+00:00", "source": "cam0", "event": "recognized",
     "track_id": 3, "box": [x, y, w, h], "name": "Alice", "score": 0.71}

``emit`` never blocks the pipeline on the network: MQTT and webhook sinks queue the event for
their own thread. ``close`` flushes what it can within a deadline and joins every thread.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import queue
import re
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

import numpy as np

log = logging.getLogger(__name__)

EVENT_KINDS = ("recognized", "unknown")


class SinkError(ValueError):
    """A bad sink specification or setting, with a one-line message."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def make_event(source: str, event: str, track_id: int, box: Sequence[float],
               name: str | None, score: float, time_iso: str | None = None) -> dict[str, Any]:
    """The agreed event dict, with plain JSON types (ints for the box)."""
    if event not in EVENT_KINDS:
        raise ValueError(f"event must be one of {EVENT_KINDS}, got {event!r}")
    return {"time": time_iso or now_iso(), "source": str(source), "event": event,
            "track_id": int(track_id), "box": [round(float(v)) for v in box],
            "name": None if name is None else str(name), "score": round(float(score), 4)}


def _json_default(o: object) -> object:
    # numpy scalars and arrays sneak into events from the pipeline; json can't encode them.
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def to_json(event: dict[str, Any]) -> str:
    return json.dumps(event, default=_json_default, ensure_ascii=False, separators=(",", ":"))


class EventSink:
    """The interface: ``emit(event)`` (cheap, never raises on delivery problems), ``close()``."""

    name = "sink"

    def emit(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> EventSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonLinesSink(EventSink):
    """One JSON object per line to stdout (path None or "-") or appended to a file."""

    name = "jsonl"

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()  # one whole line per write, even from several threads
        self._own = path not in (None, "-")
        if self._own:
            try:
                # buffering=1: line-buffered, each event reaches the file as it happens.
                self._f: TextIO = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise SinkError(f"cannot open event log {path}: {e.strerror}") from None
        else:
            self._f = sys.stdout

    def emit(self, event: dict[str, Any]) -> None:
        line = to_json(event) + "\n"
        with self._lock:
            if self._f.closed:
                return
            try:
                self._f.write(line)
                self._f.flush()
            except OSError as e:  # a full disk must not stop recognition
                log.warning("event log %s: %s", self.path or "stdout", e)

    def close(self) -> None:
        with self._lock:
            if self._own and not self._f.closed:
                self._f.close()


def slug(text: str) -> str:
    """An MQTT/Home Assistant safe id: lower case letters, digits and underscores."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s or "x"


class MqttSink(EventSink):
    """Events to an MQTT broker, with Home Assistant discovery.

    Topics (``prefix`` = "edgeface-cam", ``cam`` = slug of ``camera``):
      ``prefix/cam/event``            every event (QoS 1, not retained)
      ``prefix/cam/person``           retained: the latest event's name ("unknown" for a stranger)
      ``prefix/cam/person/<slug>``    retained "ON"/"OFF": that known person seen in the last
                                      ``presence_timeout`` seconds (a binary_sensor in HA)
      ``prefix/cam/status``           retained "online"/"offline" (also the last will)
    Discovery (retained, re-sent on every connect): a sensor per camera and a binary_sensor per
    name in ``people``, under ``discovery_prefix``.

    Delivery: paho's network thread reconnects with backoff (``reconnect_min``..``max`` s) and
    keeps QoS-1 messages queued while the broker is away (at most ``buffer_size``; beyond
    that the newest are dropped and counted), resending them on reconnect. Our own thread
    turns events into messages, so ``emit`` costs a queue put.
    """

    name = "mqtt"

    def __init__(self, host: str, port: int = 1883, camera: str = "camera",
                 people: Iterable[str] = (), username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_certs: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 tls_insecure: bool = False, client_id: str | None = None, keepalive: int = 60,
                 topic_prefix: str = "edgeface-cam", discovery: bool = True,
                 discovery_prefix: str = "homeassistant", presence_timeout: float = 30.0,
                 buffer_size: int = 1000, reconnect_min: float = 1.0,
                 reconnect_max: float = 60.0, flush_timeout: float = 5.0) -> None:
        try:
            import paho.mqtt.client as mqtt  # optional: the 'mqtt' extra
        except ImportError:
            raise SinkError("the MQTT sink needs paho-mqtt: pip install 'edgeface-cam[mqtt]'"
                            ) from None
        if not host:
            raise SinkError("the MQTT sink needs a broker host")
        if not 0 < int(port) < 65536:
            raise SinkError(f"MQTT port must be 1..65535, got {port}")
        if int(buffer_size) < 1:
            raise SinkError(f"MQTT buffer_size must be >= 1, got {buffer_size}")
        self._mqtt = mqtt
        self.host, self.port, self.camera = host, int(port), str(camera)
        self.cam = slug(self.camera)
        self.base = f"{topic_prefix.rstrip('/')}/{self.cam}"
        self.topic_event = f"{self.base}/event"
        self.topic_person = f"{self.base}/person"
        self.topic_status = f"{self.base}/status"
        self.people = sorted({str(p) for p in people})
        self.discovery = discovery
        self.discovery_prefix = discovery_prefix.rstrip("/")
        self.presence_timeout = float(presence_timeout)
        self.flush_timeout = float(flush_timeout)
        self.dropped = 0
        self.connected = threading.Event()
        self._state_lock = threading.Lock()
        self._last_person: str | None = None  # payload of the retained person topic
        self._seen: dict[str, float] = {}  # known person -> monotonic time last recognised
        self._on: set[str] = set()
        # Message ids handed to paho and not yet acknowledged (PUBACK) by the broker. An ack can
        # beat publish() returning its mid, hence the second set.
        self._pending: set[int] = set()
        self._early_acks: set[int] = set()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=int(buffer_size))

        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                        client_id=client_id or f"edgeface-cam-{self.cam}",
                        protocol=mqtt.MQTTv311)
        if username is not None:
            c.username_pw_set(username, password)
        if tls or ca_certs or certfile:
            try:
                c.tls_set(ca_certs=ca_certs, certfile=certfile, keyfile=keyfile,
                          cert_reqs=ssl.CERT_NONE if tls_insecure else ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as e:
                raise SinkError(f"MQTT TLS setup failed: {e}") from None
            c.tls_insecure_set(bool(tls_insecure))
        c.will_set(self.topic_status, "offline", qos=1, retain=True)
        c.max_queued_messages_set(int(buffer_size))
        c.reconnect_delay_set(min_delay=max(1, round(reconnect_min)),
                              max_delay=max(1, round(reconnect_max)))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c
        try:
            # connect_async: a broker that is down at start is retried by the loop thread.
            c.connect_async(host, self.port, keepalive=int(keepalive))
        except (OSError, ValueError) as e:
            raise SinkError(f"MQTT broker {host}:{port}: {e}") from None
        c.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._thread.start()

    # paho callbacks (its network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port,
                        reason)
            return
        log.info("MQTT connected to %s:%d", self.host, self.port)
        self.connected.set()
        # Retained state may be gone (a broker restart without persistence): send it again.
        self._publish(self.topic_status, "online", retain=True)
        if self.discovery:
            self._publish_discovery()
        with self._state_lock:
            last, on = self._last_person, set(self._on)
        if last is not None:
            self._publish(self.topic_person, last, retain=True)
        for p in self.people:
            self._publish(self._presence_topic(p), "ON" if p in on else "OFF", retain=True)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected.is_set():
            log.warning("MQTT disconnected from %s:%d (%s); buffering, reconnecting",
                        self.host, self.port, reason)
        self.connected.clear()

    def set_people(self, people: Iterable[str]) -> None:
        """Announce a changed list of known people (after an enrolment or removal)."""
        new = sorted({str(p) for p in people})
        with self._state_lock:
            gone = [p for p in self.people if p not in new]
            self.people = new
            self._on.difference_update(gone)
        node = f"edgeface_cam_{self.cam}"
        for p in gone:  # an empty retained config removes the entity from Home Assistant
            self._publish(f"{self.discovery_prefix}/binary_sensor/{node}/{slug(p)}/config", "",
                          retain=True)
            self._publish(self._presence_topic(p), "", retain=True)
        if self.discovery:
            self._publish_discovery()

    def _presence_topic(self, person: str) -> str:
        return f"{self.topic_person}/{slug(person)}"

    def _device(self) -> dict[str, Any]:
        return {"identifiers": [f"edgeface_cam_{self.cam}"], "name": f"edgeface-cam {self.camera}",
                "manufacturer": "edgeface-cam", "model": "EdgeFace"}

    def _publish_discovery(self) -> None:
        node = f"edgeface_cam_{self.cam}"
        common = {"availability_topic": self.topic_status, "device": self._device()}
        sensor = {"name": f"{self.camera} person", "unique_id": f"{node}_person",
                  "state_topic": self.topic_person, "icon": "mdi:face-recognition", **common}
        self._publish(f"{self.discovery_prefix}/sensor/{node}/person/config", to_json(sensor),
                      retain=True)
        for p in self.people:
            cfg = {"name": f"{p} at {self.camera}", "unique_id": f"{node}_{slug(p)}",
                   "state_topic": self._presence_topic(p), "payload_on": "ON",
                   "payload_off": "OFF", "device_class": "occupancy", **common}
            self._publish(f"{self.discovery_prefix}/binary_sensor/{node}/{slug(p)}/config",
                          to_json(cfg), retain=True)

    def _publish(self, topic: str, payload: str, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            log.warning("MQTT buffer full (%d dropped so far): broker %s:%d away too long",
                        self.dropped, self.host, self.port)
            return
        with self._state_lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
            else:
                self._pending.add(info.mid)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._state_lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._early_acks.add(mid)

    # our thread: events -> messages, presence timeouts
    def _run(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=0.5)
            except queue.Empty:
                event = {}
            if event is None:
                break
            try:
                if event:
                    self._handle(event)
                self._expire_presence()
            except Exception:  # a bad event must not kill the sink
                log.exception("MQTT sink could not publish an event")

    def _handle(self, event: dict[str, Any]) -> None:
        self._publish(self.topic_event, to_json(event))
        name = event.get("name")
        state = name if name else "unknown"
        with self._state_lock:
            changed = state != self._last_person
            self._last_person = state
        if changed:
            self._publish(self.topic_person, state, retain=True)
        if name and name in self.people:
            with self._state_lock:
                self._seen[name] = time.monotonic()
                turn_on = name not in self._on
                self._on.add(name)
            if turn_on:
                self._publish(self._presence_topic(name), "ON", retain=True)

    def _expire_presence(self) -> None:
        now = time.monotonic()
        with self._state_lock:
            gone = [p for p in self._on if now - self._seen.get(p, 0) > self.presence_timeout]
            self._on.difference_update(gone)
        for p in gone:
            self._publish(self._presence_topic(p), "OFF", retain=True)

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.warning("MQTT sink queue full: event dropped (%d so far)", self.dropped)

    def unacknowledged(self) -> int:
        """Messages handed to paho and not yet acknowledged by the broker."""
        with self._state_lock:
            return len(self._pending)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._queue.put(None)  # blocks only if full; the thread is draining it
        self._thread.join()
        self._publish(self.topic_status, "offline", retain=True)
        deadline = time.monotonic() + self.flush_timeout
        while self.unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.unacknowledged()
        if left:
            log.warning("MQTT sink closed with %d message(s) undelivered to %s:%d", left,
                        self.host, self.port)
        self._client.disconnect()
        self._client.loop_stop()


class WebhookSink(EventSink):
    """POST each event as JSON to ``url`` from its own thread.

    Retries connection errors, timeouts, 429 and 5xx with exponential backoff (``backoff`` s,
    doubled per try, ``retries`` times); other 4xx are the receiver's "no" and are not retried.
    The queue is bounded (``queue_size``): when the receiver is away too long the oldest events
    are dropped and counted. urllib: no extra dependency on the device.
    """

    name = "webhook"

    def __init__(self, url: str, timeout: float = 5.0, retries: int = 3, backoff: float = 0.5,
                 headers: dict[str, str] | None = None, queue_size: int = 100,
                 flush_timeout: float = 10.0) -> None:
        if not re.match(r"^https?://", str(url)):
            raise SinkError(f"webhook url must start with http:// or https://, got {url!r}")
        if int(queue_size) < 1 or int(retries) < 0 or float(timeout) <= 0:
            raise SinkError("webhook needs queue_size >= 1, retries >= 0 and timeout > 0")
        self.url = url
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.headers = {"Content-Type": "application/json", "User-Agent": "edgeface-cam",
                        **(headers or {})}
        self.flush_timeout = float(flush_timeout)
        self.sent = 0
        self.dropped = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._maxlen = int(queue_size)
        self._cv = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="webhook-sink", daemon=True)
        self._thread.start()

    def emit(self, event: dict[str, Any]) -> None:
        with self._cv:
            if self._closing:
                return
            if len(self._queue) >= self._maxlen:
                self._queue.popleft()  # the newest events matter most
                self.dropped += 1
                log.warning("webhook queue full: oldest event dropped (%d so far)", self.dropped)
            self._queue.append(event)
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                event = self._queue.popleft()
            self._deliver(event)

    def _past_deadline(self) -> bool:
        return time.monotonic() > self._deadline

    def _deliver(self, event: dict[str, Any]) -> None:
        data = to_json(event).encode()
        for attempt in range(self.retries + 1):
            if self._past_deadline():
                self.dropped += 1
                return
            req = urllib.request.Request(self.url, data=data, headers=self.headers,
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    r.read()
                self.sent += 1
                return
            except urllib.error.HTTPError as e:
                with contextlib.suppress(OSError):
                    e.read()
                if e.code < 500 and e.code not in (408, 429):
                    log.warning("webhook %s refused an event: HTTP %d", self.url, e.code)
                    self.dropped += 1
                    return
                why = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                why = str(getattr(e, "reason", e))
            if attempt < self.retries:
                delay = self.backoff * 2 ** attempt
                log.info("webhook %s: %s; retry %d/%d in %.1fs", self.url, why, attempt + 1,
                         self.retries, delay)
                with self._cv:  # close() wakes us so a flush is not stuck in a long sleep
                    self._cv.wait_for(self._past_deadline, timeout=delay)
        log.warning("webhook %s: event dropped after %d tries (%s)", self.url,
                    self.retries + 1, why)
        self.dropped += 1

    def close(self) -> None:
        """Deliver what is queued (giving up after ``flush_timeout`` s) and join the thread."""
        with self._cv:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + self.flush_timeout
            self._cv.notify_all()
        # The last attempt may still wait out its HTTP timeout.
        self._thread.join(self.flush_timeout + self.timeout + 1)
        with self._cv:
            if self._queue:
                log.warning("webhook %s: %d event(s) not delivered at close", self.url,
                            len(self._queue))
                self.dropped += len(self._queue)
                self._queue.clear()


SINKS: dict[str, type[EventSink]] = {"jsonl": JsonLinesSink, "mqtt": MqttSink,
                                     "webhook": WebhookSink}


def make_sinks(specs: Iterable[dict[str, Any]]) -> list[EventSink]:
    """Build sinks from specs such as ``{"type": "jsonl", "path": "-"}``.

    On a bad spec the sinks already built are closed and SinkError says which spec is wrong.
    """
    sinks: list[EventSink] = []
    try:
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or "type" not in spec:
                raise SinkError(f"event sink #{i + 1} needs a 'type' ({', '.join(SINKS)})")
            kind = spec["type"]
            cls = SINKS.get(kind)
            if cls is None:
                raise SinkError(f"unknown event sink type {kind!r} (choose {', '.join(SINKS)})")
            args = {k: v for k, v in spec.items() if k != "type"}
            accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
            unknown = sorted(set(args) - set(accepted))
            if unknown:
                raise SinkError(f"{kind} sink: unknown setting(s) {', '.join(unknown)} "
                                f"(accepted: {', '.join(accepted)})")
            try:
                sinks.append(cls(**args))
            except TypeError as e:
                raise SinkError(f"{kind} sink: {e}") from None
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks
