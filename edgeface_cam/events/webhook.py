"""The ``webhook`` sink: POST each event as JSON, from its own thread, with retries."""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any

from .base import EventSink, SinkError, register, to_json

log = logging.getLogger(__name__)


@register("webhook")
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
        self._refuse(url, timeout, retries, queue_size)
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

    @staticmethod
    def _refuse(url: str, timeout: float, retries: int, queue_size: int) -> None:
        if not re.match(r"^https?://", str(url)):
            raise SinkError(f"webhook url must start with http:// or https://, got {url!r}")
        if int(queue_size) < 1 or int(retries) < 0 or float(timeout) <= 0:
            raise SinkError("webhook needs queue_size >= 1, retries >= 0 and timeout > 0")

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        given = inspect.signature(cls).bind(**settings)
        given.apply_defaults()
        a = given.arguments
        cls._refuse(a["url"], a["timeout"], a["retries"], a["queue_size"])

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
