"""What every sink shares: the event builder, the sink interface, JSON, the registry of types.

An event is a plain dict with plain JSON types, built only by ``make_event``::

    {"time": "2025-01-01T12:00:00.123+00:00", "source": "cam0", "event": "recognized",
     "track_id": 3, "box": [x, y, w, h], "name": "Alice", "score": 0.71}

followed by whichever optional fields the producer has (``EXTRA_FIELDS``, in that order), e.g.
``"snapshot"`` when pictures are kept. Sinks register their type name with ``@register``;
``make_sinks`` builds them from config specs.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np

EVENT_KINDS = ("recognized", "unknown")
# Optional fields an event may carry after the fixed ones, in the order they are written.
# snapshot: path of the event's picture, or None when the disk refused it (present only when
# pictures are kept). frame: index of the frame the track was last seen in, 0-based in its
# source (the pipeline sets it on every event). The others are reserved for the sightings store.
EXTRA_FIELDS = ("snapshot", "frame", "file", "sighting_id", "ignored")


class SinkError(ValueError):
    """A bad sink specification or setting, with a one-line message."""


def now_iso() -> str:
    return iso_time(datetime.now(timezone.utc))


def iso_time(when: datetime) -> str:
    """UTC, milliseconds: ``2025-01-01T12:00:00.123+00:00``."""
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def make_event(source: str, event: str, track_id: int, box: Sequence[float],
               name: str | None, score: float, time: datetime | str | None = None,
               **extra: Any) -> dict[str, Any]:
    """The agreed event dict, with plain JSON types (ints for the box, score to 4 places).

    ``time``: when the face was seen (a datetime, or an ISO string kept as it is); now if
    None. ``extra``: optional fields from ``EXTRA_FIELDS``; a field not passed is absent.
    """
    if event not in EVENT_KINDS:
        raise ValueError(f"event must be one of {EVENT_KINDS}, got {event!r}")
    unknown = sorted(set(extra) - set(EXTRA_FIELDS))
    if unknown:
        raise ValueError(f"unknown event field(s) {', '.join(unknown)} "
                         f"(optional fields: {', '.join(EXTRA_FIELDS)})")
    if time is None:
        time = now_iso()
    elif isinstance(time, datetime):
        time = iso_time(time)
    ev = {"time": time, "source": str(source), "event": event, "track_id": int(track_id),
          "box": [round(float(v)) for v in box], "name": None if name is None else str(name),
          "score": round(float(score), 4)}
    ev.update((k, extra[k]) for k in EXTRA_FIELDS if k in extra)
    return ev


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
    """The interface: ``emit(event)`` (cheap, never raises on delivery problems), ``close()``.

    A sink built from config takes its spec's settings as keyword arguments;
    ``accepted_settings()`` names them (by default the constructor's parameters).
    """

    name = "sink"

    def emit(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> EventSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def accepted_settings(cls) -> tuple[str, ...]:
        """The setting names a spec of this sink type may hold (besides ``type``)."""
        return tuple(p.name for p in inspect.signature(cls.__init__).parameters.values()
                     if p.name != "self" and p.kind is not p.VAR_KEYWORD)

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        """Raise SinkError (or TypeError) for settings the constructor would refuse, without
        opening, connecting or starting anything: what ``doctor`` and ``make_sinks`` both run
        first. By default: the constructor's required settings are there."""
        inspect.signature(cls).bind(**settings)


# The one list of sink types: type name (as in config.yaml) -> class. Filled by @register in
# each sink's module; importing the package imports them all.
SINKS: dict[str, type[EventSink]] = {}

S = TypeVar("S", bound=type[EventSink])


def register(kind: str) -> Callable[[S], S]:
    """Class decorator: make a sink buildable from ``{"type": kind, ...}``."""
    def add(cls: S) -> S:
        if kind in SINKS:
            raise ValueError(f"event sink type {kind!r} is registered twice")
        SINKS[kind] = cls
        return cls
    return add


def make_sinks(specs: Iterable[dict[str, Any]]) -> list[EventSink]:
    """Build sinks from specs such as ``{"type": "jsonl", "path": "-"}``.

    On a bad spec the sinks already built are closed and SinkError says which spec is wrong.
    """
    sinks: list[EventSink] = []
    try:
        for i, spec in enumerate(specs):
            sinks.append(_make_sink(i, spec))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


def check_sinks(specs: Iterable[dict[str, Any]]) -> None:
    """Raise the SinkError ``make_sinks`` would raise for these specs, without building a sink
    (nothing is opened or connected): how ``doctor`` checks what ``run`` will refuse."""
    for i, spec in enumerate(specs):
        _checked(i, spec)


def _make_sink(i: int, spec: Any) -> EventSink:
    kind, cls, args = _checked(i, spec)
    try:
        return cls(**args)
    except TypeError as e:
        raise SinkError(f"{kind} sink: {e}") from None


def _checked(i: int, spec: Any) -> tuple[str, type[EventSink], dict[str, Any]]:
    """The sink type, its class and the settings of spec #i, all checked."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise SinkError(f"event sink #{i + 1} needs a 'type' ({', '.join(SINKS)})")
    kind = spec["type"]
    cls = SINKS.get(kind)
    if cls is None:
        raise SinkError(f"unknown event sink type {kind!r} (choose {', '.join(SINKS)})")
    args = {k: v for k, v in spec.items() if k != "type"}
    accepted = cls.accepted_settings()
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise SinkError(f"{kind} sink: unknown setting(s) {', '.join(unknown)} "
                        f"(accepted: {', '.join(accepted)})")
    try:
        cls.check_settings(args)
    except SinkError:
        raise
    except (TypeError, ValueError) as e:  # a missing setting, int("abc"), ...
        raise SinkError(f"{kind} sink: {e}") from None
    return kind, cls, args
