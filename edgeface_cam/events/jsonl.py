"""The ``jsonl`` sink: one JSON object per line, to stdout or appended to a file."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

from .base import EventSink, SinkError, register, to_json

log = logging.getLogger(__name__)


@register("jsonl")
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
