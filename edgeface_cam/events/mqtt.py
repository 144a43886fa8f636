"""The ``mqtt`` sink: events and retained state to an MQTT broker (needs the 'mqtt' extra).

Three pieces: ``MqttSettings`` (the spec, validated), ``MqttTransport`` (the paho client:
TLS, last will, reconnects, QoS-1 publishing with acknowledgement tracking) and ``MqttSink``
(our topics, presence state and the thread that turns events into messages). Home Assistant
discovery is in ``homeassistant``.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import ModuleType
from typing import Any

from .base import EventSink, SinkError, register, to_json
from .homeassistant import Discovery, slug

log = logging.getLogger(__name__)


def _import_paho() -> ModuleType:
    try:
        import paho.mqtt.client as mqtt  # optional: the 'mqtt' extra
    except ImportError:
        raise SinkError("the MQTT sink needs paho-mqtt: pip install 'edgeface-cam[mqtt]'"
                        ) from None
    return mqtt


@dataclass
class TlsSettings:
    """TLS is used when ``tls`` is set or a CA / client certificate is named."""

    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False  # skip the certificate check (testing only)

    @property
    def wanted(self) -> bool:
        return bool(self.tls or self.ca_certs or self.certfile)


@dataclass
class BrokerSettings:
    """Where the broker is and how to keep talking to it."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str | None = None  # default: edgeface-cam-<camera slug>
    keepalive: int = 60
    buffer_size: int = 1000  # QoS-1 messages kept while the broker is away
    reconnect_min: float = 1.0  # reconnect backoff, seconds
    reconnect_max: float = 60.0
    flush_timeout: float = 5.0  # at close: seconds to wait for acknowledgements

    def __post_init__(self) -> None:
        if not self.host:
            raise SinkError("the MQTT sink needs a broker host")
        if not 0 < int(self.port) < 65536:
            raise SinkError(f"MQTT port must be 1..65535, got {self.port}")
        if int(self.buffer_size) < 1:
            raise SinkError(f"MQTT buffer_size must be >= 1, got {self.buffer_size}")
        self.port, self.buffer_size = int(self.port), int(self.buffer_size)
        self.keepalive, self.flush_timeout = int(self.keepalive), float(self.flush_timeout)


@dataclass
class MqttSettings:
    """An ``mqtt`` spec: the broker, TLS, and what is published for which camera."""

    broker: BrokerSettings
    secure: TlsSettings = field(default_factory=TlsSettings)
    camera: str = "camera"
    people: tuple[str, ...] = ()  # known people: a presence topic (and HA entity) each
    topic_prefix: str = "edgeface-cam"
    discovery: bool = True  # Home Assistant discovery
    discovery_prefix: str = "homeassistant"
    presence_timeout: float = 30.0  # seconds a person stays "ON" after their last sighting

    def __post_init__(self) -> None:
        self.camera = str(self.camera)
        self.people = tuple(sorted({str(p) for p in self.people}))
        self.presence_timeout = float(self.presence_timeout)

    @staticmethod
    def keys() -> tuple[str, ...]:
        """The flat setting names of a spec (besides ``type``)."""
        return tuple(f.name for c in (BrokerSettings, TlsSettings, MqttSettings)
                     for f in fields(c) if f.name not in ("broker", "secure"))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> MqttSettings:
        """Settings from a flat spec; SinkError on an unknown or bad setting."""
        unknown = sorted(set(spec) - set(cls.keys()))
        if unknown:
            raise SinkError(f"mqtt sink: unknown setting(s) {', '.join(unknown)} "
                            f"(accepted: {', '.join(cls.keys())})")

        def pick(c: type) -> dict[str, Any]:
            return {f.name: spec[f.name] for f in fields(c) if f.name in spec}
        return cls(BrokerSettings(**pick(BrokerSettings)), TlsSettings(**pick(TlsSettings)),
                   **pick(cls))


class MqttTransport:
    """The paho client. Its network thread reconnects with backoff and keeps QoS-1 messages
    queued while the broker is away (at most ``buffer_size``; beyond that the newest are
    dropped and counted), resending them on reconnect. ``on_connect`` runs on every
    (re)connect, in paho's thread."""

    def __init__(self, mqtt: ModuleType, broker: BrokerSettings, tls: TlsSettings,
                 client_id: str, will_topic: str, on_connect: Callable[[], None]) -> None:
        self._mqtt = mqtt
        self.broker = broker
        self.host, self.port = broker.host, broker.port
        self.dropped = 0
        self.connected = threading.Event()
        self._on_connect_hook = on_connect
        self._lock = threading.Lock()
        # Message ids handed to paho and not yet acknowledged (PUBACK) by the broker. An ack can
        # beat publish() returning its mid, hence the second set.
        self._pending: set[int] = set()
        self._early_acks: set[int] = set()
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                        client_id=client_id, protocol=mqtt.MQTTv311)
        if broker.username is not None:
            c.username_pw_set(broker.username, broker.password)
        if tls.wanted:
            try:
                c.tls_set(ca_certs=tls.ca_certs, certfile=tls.certfile, keyfile=tls.keyfile,
                          cert_reqs=ssl.CERT_NONE if tls.tls_insecure else ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as e:
                raise SinkError(f"MQTT TLS setup failed: {e}") from None
            c.tls_insecure_set(bool(tls.tls_insecure))
        c.will_set(will_topic, "offline", qos=1, retain=True)
        c.max_queued_messages_set(broker.buffer_size)
        c.reconnect_delay_set(min_delay=max(1, round(broker.reconnect_min)),
                              max_delay=max(1, round(broker.reconnect_max)))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c

    def start(self) -> None:
        try:
            # connect_async: a broker that is down at start is retried by the loop thread.
            self._client.connect_async(self.host, self.port, keepalive=self.broker.keepalive)
        except (OSError, ValueError) as e:
            raise SinkError(f"MQTT broker {self.host}:{self.port}: {e}") from None
        self._client.loop_start()

    # paho callbacks (its network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port,
                        reason)
            return
        log.info("MQTT connected to %s:%d", self.host, self.port)
        self.connected.set()
        self._on_connect_hook()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected.is_set():
            log.warning("MQTT disconnected from %s:%d (%s); buffering, reconnecting",
                        self.host, self.port, reason)
        self.connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._early_acks.add(mid)

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        """Hand one QoS-1 message to paho (never blocks; counted as dropped if it is full)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            log.warning("MQTT buffer full (%d dropped so far): broker %s:%d away too long",
                        self.dropped, self.host, self.port)
            return
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
            else:
                self._pending.add(info.mid)

    def unacknowledged(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Wait up to ``flush_timeout`` s for the broker's acks, then disconnect."""
        deadline = time.monotonic() + self.broker.flush_timeout
        while self.unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.unacknowledged()
        if left:
            log.warning("MQTT sink closed with %d message(s) undelivered to %s:%d", left,
                        self.host, self.port)
        self._client.disconnect()
        self._client.loop_stop()


@register("mqtt")
class MqttSink(EventSink):
    """Events to an MQTT broker, with Home Assistant discovery.

    Topics (``prefix`` = "edgeface-cam", ``cam`` = slug of ``camera``):
      ``prefix/cam/event``            every event (QoS 1, not retained)
      ``prefix/cam/person``           retained: the latest event's name ("unknown" for a stranger)
      ``prefix/cam/person/<slug>``    retained "ON"/"OFF": that known person seen in the last
                                      ``presence_timeout`` seconds (a binary_sensor in HA)
      ``prefix/cam/status``           retained "online"/"offline" (also the last will)
    Discovery (retained, re-sent on every connect): a sensor per camera and a binary_sensor per
    name in ``people``, under ``discovery_prefix``. The retained state is re-sent too.

    ``options``: the other settings of an ``mqtt`` spec (``MqttSettings.keys()``). Our own
    thread turns events into messages, so ``emit`` costs a queue put.
    """

    name = "mqtt"

    def __init__(self, host: str, port: int = 1883, **options: Any) -> None:
        paho = _import_paho()
        self.settings = s = MqttSettings.from_spec({"host": host, "port": port, **options})
        self.host, self.port, self.camera = s.broker.host, s.broker.port, s.camera
        self.cam = slug(self.camera)
        self.base = f"{s.topic_prefix.rstrip('/')}/{self.cam}"
        self.topic_event = f"{self.base}/event"
        self.topic_person = f"{self.base}/person"
        self.topic_status = f"{self.base}/status"
        self.people = list(s.people)
        self.discovery = Discovery(s.camera, s.discovery_prefix) if s.discovery else None
        self.presence_timeout = s.presence_timeout
        self._dropped = 0  # events beyond our queue; the transport counts its own
        self._state_lock = threading.Lock()
        self._last_person: str | None = None  # payload of the retained person topic
        self._seen: dict[str, float] = {}  # known person -> monotonic time last recognised
        self._on: set[str] = set()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(
            maxsize=s.broker.buffer_size)
        self._transport = MqttTransport(paho, s.broker, s.secure,
                                        s.broker.client_id or f"edgeface-cam-{self.cam}",
                                        self.topic_status, self._announce)
        self._transport.start()
        self._thread = threading.Thread(target=self._run, name="mqtt-sink", daemon=True)
        self._thread.start()

    @classmethod
    def accepted_settings(cls) -> tuple[str, ...]:
        return MqttSettings.keys()

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        """paho is installed and the settings are valid (TLS files included); connects nowhere."""
        super().check_settings(settings)
        paho = _import_paho()
        s = MqttSettings.from_spec(settings)
        if s.secure.wanted:  # a client that is never started: loads the certificates only
            MqttTransport(paho, s.broker, s.secure, "edgeface-cam-check", "check", lambda: None)

    @property
    def connected(self) -> threading.Event:
        return self._transport.connected

    @property
    def dropped(self) -> int:
        return self._dropped + self._transport.dropped

    def _publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self._transport.publish(topic, payload, retain)

    def _presence_topic(self, person: str) -> str:
        return f"{self.topic_person}/{slug(person)}"

    def _announce(self) -> None:
        # On every (re)connect: retained state may be gone (a broker restart without
        # persistence), so send it again.
        self._publish(self.topic_status, "online", retain=True)
        if self.discovery is not None:
            presence = {p: self._presence_topic(p) for p in self.people}
            for topic, payload in self.discovery.messages(self.topic_status, self.topic_person,
                                                          presence):
                self._publish(topic, payload, retain=True)
        with self._state_lock:
            last, on = self._last_person, set(self._on)
        if last is not None:
            self._publish(self.topic_person, last, retain=True)
        for p in self.people:
            self._publish(self._presence_topic(p), "ON" if p in on else "OFF", retain=True)

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
            self._dropped += 1
            log.warning("MQTT sink queue full: event dropped (%d so far)", self.dropped)

    def unacknowledged(self) -> int:
        """Messages handed to paho and not yet acknowledged by the broker."""
        return self._transport.unacknowledged()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._queue.put(None)  # blocks only if full; the thread is draining it
        self._thread.join()
        self._publish(self.topic_status, "offline", retain=True)
        self._transport.close()
