"""The ``jsonl`` sink: one JSON object per line, to stdout or appended to a file."""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from pathlib import Path
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

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        """The file can be appended to (or made), judged without opening it."""
        super().check_settings(settings)
        path = settings.get("path")
        if path in (None, "-"):
            return
        file, folder = Path(path), Path(path).parent
        err = (errno.EISDIR if file.is_dir()
               else (errno.EACCES if not os.access(file, os.W_OK) else None) if file.exists()
               else errno.ENOENT if not folder.exists()
               else errno.ENOTDIR if not folder.is_dir()
               else errno.EACCES if not os.access(folder, os.W_OK | os.X_OK) else None)
        if err is not None:
            raise SinkError(f"cannot open event log {path}: {os.strerror(err)}")

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
