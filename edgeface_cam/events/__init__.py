"""Where "recognized" / "unknown" events go: one builder and one sink interface (``base``),
a file per sink type (``jsonl``, ``mqtt`` with ``homeassistant`` discovery, ``webhook``) and the
event pictures (``snapshots``).

``emit`` never blocks the pipeline on the network: MQTT and webhook sinks queue the event for
their own thread. ``close`` flushes what it can within a deadline and joins every thread.
"""

from .base import (
    EVENT_KINDS,
    EXTRA_FIELDS,
    SINKS,
    EventSink,
    SinkError,
    check_sinks,
    make_event,
    make_sinks,
    now_iso,
    register,
    to_json,
)
from .homeassistant import Discovery, slug
from .jsonl import JsonLinesSink
from .mqtt import MqttSettings, MqttSink
from .snapshots import SnapshotStore, context_crop
from .webhook import WebhookSink

__all__ = ["EVENT_KINDS", "EXTRA_FIELDS", "SINKS", "Discovery", "EventSink", "JsonLinesSink",
           "MqttSettings", "MqttSink", "SinkError", "SnapshotStore", "WebhookSink",
           "check_sinks", "context_crop", "make_event", "make_sinks", "now_iso", "register",
           "slug", "to_json"]
