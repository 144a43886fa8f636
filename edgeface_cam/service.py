"""Running as a service: systemd notifications, journal-friendly logging, signals, and the
long-running loop that the ``run`` command hands its pipeline to.

API (what the CLI uses):

- ``configure_logging(level)``: stderr logging; under systemd (``$JOURNAL_STREAM`` or
  ``$INVOCATION_ID`` set) without a timestamp, since the journal adds its own, and, when stderr
  really is the journal stream, with ``<N>`` priority prefixes so ``journalctl -p warning`` works.
- ``Notifier()``: the sd_notify protocol over ``$NOTIFY_SOCKET`` (path or abstract ``@name``):
  ``ready()``, ``watchdog()`` (sends at most every WatchdogSec/2, from ``$WATCHDOG_USEC``),
  ``status(text)``, ``reloading()``, ``stopping()``. Every method is a no-op without a socket.
- ``install_signal_handlers(stop, reload)``: SIGTERM/SIGINT -> ``stop()``, SIGHUP -> ``reload()``
  (a second SIGTERM/SIGINT kills at once); returns a function that restores the old handlers.
- ``serve(settings, build, reload_settings=None) -> result``: the service's main loop.
  ``build(settings, heartbeat)`` returns a pipeline (anything with ``run()`` and a thread-safe
  ``stop()``) or a context manager yielding one (so the caller closes its camera, gallery and
  sinks); ``heartbeat`` must be called regularly by the pipeline (``Pipeline(heartbeat=...)``):
  it pings the watchdog and updates ``systemctl status``. ``serve`` sends READY=1 once the
  pipeline is built, runs it until SIGTERM/SIGINT (or the source ends), and on SIGHUP calls
  ``reload_settings()`` and rebuilds; a bad new config or a failing rebuild is logged and the
  previous settings keep running. A reload stops the pipeline with ``stop_for_reload()`` where
  it has one and hands it to the new one's ``continue_from(old)``: track ids, decided tracks
  and counts go on (no second event for someone already in view). Returns what the last
  ``run()`` returned (``PipelineStats``).

The notify protocol is written here (one ``sendto`` on a datagram socket, see sd_notify(3))
rather than taken from the ``sdnotify`` package: that package is unmaintained since 2017, hides
send errors, knows nothing of WATCHDOG_USEC/WATCHDOG_PID, and would be one more dependency on
every board for a dozen lines of stdlib.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO, TypeVar

log = logging.getLogger(__name__)

S = TypeVar("S")
# sd-daemon(3) priorities for the journal's "<N>" line prefixes.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


# --- logging -------------------------------------------------------------------------------------
def under_systemd(env: Mapping[str, str] = os.environ) -> bool:
    """True when started by systemd (its output goes to the journal, which stamps the time)."""
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def _is_journal_stream(stream: TextIO, env: Mapping[str, str] = os.environ) -> bool:
    """$JOURNAL_STREAM names the journal's socket as "dev:inode"; compare it with the stream's
    file so a redirected stderr (``2>file``) gets no ``<N>`` prefixes (systemd.exec(5))."""
    want = env.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
        dev, ino = (int(x) for x in want.split(":"))
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        # One prefix per physical line: journald reads each line as its own entry.
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def configure_logging(level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr) at ``level``; replaces any earlier configuration."""
    stream = stream if stream is not None else sys.stderr
    if under_systemd():
        fmt = "%(levelname)s %(name)s: %(message)s"
        formatter = (_JournalFormatter(fmt) if _is_journal_stream(stream)
                     else logging.Formatter(fmt))
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level,
                        handlers=[handler], force=True)


# --- sd_notify -----------------------------------------------------------------------------------
class Notifier:
    """Messages to systemd for a ``Type=notify`` service; no-ops when not run by systemd."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None,
                 env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "") if address is None else address
        if address.startswith("@"):  # an abstract socket: a leading NUL byte, no file
            address = "\0" + address[1:]
        elif address and not address.startswith("/"):
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path; not notifying systemd",
                        address)
            address = ""
        self.address = address
        if watchdog_usec is None:
            pid = env.get("WATCHDOG_PID")
            mine = pid is None or pid == str(os.getpid())  # the watchdog may be for a parent
            try:
                watchdog_usec = int(env.get("WATCHDOG_USEC", "0")) if mine else 0
            except ValueError:
                watchdog_usec = 0
        # systemd's advice (sd_watchdog_enabled(3)): ping at half the timeout.
        self.watchdog_interval = watchdog_usec / 2e6 if address and watchdog_usec > 0 else None
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # heartbeats come from the worker, status from anywhere
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; False when disabled or the send failed."""
        if not self.address:
            return False
        data = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX,
                                               socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self.address)
                return True
            except OSError as e:
                if not self._warned:  # once: a gone manager must not flood the log
                    log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), e)
                    self._warned = True
                return False

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"] + ([_status(status)] if status else [])
        return self.notify(*fields)

    def watchdog(self, force: bool = False) -> bool:
        """WATCHDOG=1, at most once per half watchdog period (cheap to call every frame)."""
        if self.watchdog_interval is None:
            return False
        now = time.monotonic()
        if not force and self._last_ping is not None and \
                now - self._last_ping < self.watchdog_interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(_status(text))

    def reloading(self, status: str = "reloading") -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to this
        # message; older versions ignore it. READY=1 ends the reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", _status(status))

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", _status(status))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(str(text).split())  # one line: a newline would end the field


# --- signals -------------------------------------------------------------------------------------
def install_signal_handlers(stop: Callable[[], None],
                            reload: Callable[[], None] | None = None) -> Callable[[], None]:
    """SIGTERM/SIGINT call ``stop()``, SIGHUP calls ``reload()``; both must be quick and
    thread-safe (set a flag, stop the pipeline), since they run between two Python bytecodes of
    the main thread. A second SIGTERM/SIGINT falls back to the default action (Ctrl-C twice
    ends a stuck program). Returns a function that restores the previous handlers. Outside the
    main thread (an application embedding us) nothing is installed."""
    previous: dict[int, Any] = {}
    stopping = threading.Event()

    def on_stop(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.warning("%s again: exiting now", name)
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        stopping.set()
        log.info("%s: stopping", name)
        stop()

    def on_hup(_signum: int, _frame: Any) -> None:
        log.info("SIGHUP: reloading")
        if reload is not None:
            reload()

    handlers: list[tuple[int, Any]] = [(signal.SIGTERM, on_stop), (signal.SIGINT, on_stop),
                                       (signal.SIGHUP, on_hup)]
    try:
        for sig, handler in handlers:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        log.debug("not the main thread: no signal handlers installed")

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        previous.clear()

    return restore


# --- the service loop ----------------------------------------------------------------------------
def serve(settings: S, build: Callable[[S, Callable[[], None]], Any], *,
          reload_settings: Callable[[], S] | None = None, notifier: Notifier | None = None,
          status_interval: float = 30.0) -> Any:
    """Run ``build(settings, heartbeat)``'s pipeline until stopped; see the module docstring."""
    notifier = notifier if notifier is not None else Notifier()
    stop_requested = threading.Event()
    reload_requested = threading.Event()
    running: list[Any] = []  # the pipeline now running (a list: the handlers read it)

    def stop() -> None:
        stop_requested.set()
        for p in list(running):
            p.stop()

    def reload() -> None:
        if reload_settings is None:
            log.info("nothing to reload: settings were given, not a file")
            return
        reload_requested.set()
        for p in list(running):
            # Keep the live tracks for the rebuilt pipeline (no second event for people in view).
            getattr(p, "stop_for_reload", p.stop)()

    last_status = [time.monotonic()]

    def heartbeat() -> None:
        notifier.watchdog()
        now = time.monotonic()
        if running and now - last_status[0] >= status_interval:
            last_status[0] = now
            notifier.status(_describe(running[0]))

    restore = install_signal_handlers(stop, reload)
    good = settings  # the last settings that built a pipeline
    result = None
    previous: Any = None  # the pipeline a reload stopped: the next one continues its tracks
    try:
        while True:
            try:
                made = build(settings, heartbeat)
            except Exception as e:
                if settings is good:
                    raise  # the first start, or the known-good settings, failed: exit
                log.error("the reloaded settings do not start (%s); keeping the previous ones",
                          " ".join(str(e).split()) or type(e).__name__)
                settings = good
                continue
            good = settings
            ctx = made if hasattr(made, "__enter__") else contextlib.nullcontext(made)
            with ctx as pipeline:
                if previous is not None and hasattr(pipeline, "continue_from"):
                    pipeline.continue_from(previous)  # track ids, decisions and counts go on
                previous = None
                running[:] = [pipeline]
                try:
                    if stop_requested.is_set():  # a signal came while we were building
                        pipeline.stop()
                    elif reload_requested.is_set():
                        getattr(pipeline, "stop_for_reload", pipeline.stop)()
                    notifier.ready("running")
                    notifier.watchdog(force=True)
                    result = pipeline.run()
                finally:
                    running.clear()
            if stop_requested.is_set() or not reload_requested.is_set():
                return result  # stopped, or the source ended (a file)
            previous = pipeline
            reload_requested.clear()
            notifier.reloading()
            assert reload_settings is not None
            try:
                settings = reload_settings()
                log.info("settings reloaded")
            except Exception as e:  # a typo in the file must not take the camera down
                log.error("reload failed, keeping the running settings: %s",
                          " ".join(str(e).split()) or type(e).__name__)
    finally:
        notifier.stopping()
        restore()


def _describe(pipeline: Any) -> str:
    stats = getattr(pipeline, "stats", None)
    if not callable(stats):
        return "running"
    s = stats()
    cams = getattr(s, "cameras", None) or {}
    if len(cams) > 1:  # per camera: which one is slow, dropping or reconnecting
        return "running: " + "; ".join(
            f"{name} {c.fps:.1f} fps {c.frames} frames {c.skipped} skipped"
            + (f" {c.reconnects} reconnects" if c.reconnects else "") for name, c in cams.items()
        ) + f"; {s.events} events"
    skipped = getattr(s, "skipped", 0)
    return (f"running: {s.frames} frames, {s.fps:.1f} fps, {s.events} events"
            + (f", {skipped} skipped (no motion)" if skipped else ""))
