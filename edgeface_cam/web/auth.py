"""Who may use the web UI and the API: the admin password, API tokens, sessions and the login
rate limit.

The password and the tokens live in ``web-auth.json`` beside the gallery (the state folder,
0600): the password as scrypt (memory-hard: 16 MiB a try, so a stolen file resists guessing),
each token as its SHA-256 (tokens are 256 random bits: a fast hash is enough, and a lookup per
request stays cheap). The file is re-read when it changes, so ``edgeface-cam passwd`` and
``token --revoke`` take effect in a running service at the next request. Sessions are random ids
held in memory (a restart logs everyone out) and tied to the password they were opened with:
a new password ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

AUTH_FILE = "web-auth.json"
MIN_PASSWORD = 8
SESSION_TTL_S = 7 * 24 * 3600
# scrypt at N=2^14, r=8: 16 MiB and ~50 ms a try on a Pi 4 (OWASP's minimum is N=2^17 with r=8
# at 128 MiB; a 1 GB board running the camera pipeline cannot spare that per login).
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
TOKEN_PREFIX = "efc_"


class AuthError(ValueError):
    """A user mistake with passwords or tokens (one line)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, maxmem=64 * 2 ** 20,
                            **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(digest) // 2, maxmem=64 * 2 ** 20)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: str


class AuthStore:
    """``web-auth.json`` in ``folder``: {"password": scrypt-string | null, "tokens":
    {name: {"hash", "created_at"}}}. Thread-safe; reloads when the file's mtime changes."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder).expanduser() / AUTH_FILE
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Any] = {"password": None, "tokens": {}}

    def _current(self) -> dict[str, Any]:
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                self._stamp, self._data = None, {"password": None, "tokens": {}}
                return self._data
            if stamp != self._stamp:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    raise AuthError(f"{self.path}: cannot read it ({e})") from None
                if not isinstance(data, dict):
                    raise AuthError(f"{self.path}: not an edgeface-cam auth file")
                data.setdefault("password", None)
                data.setdefault("tokens", {})
                self._stamp, self._data = stamp, data
            return self._data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{AUTH_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)  # atomic: a reader sees the old file or the new one

    # --- the password ------------------------------------------------------------------------
    @property
    def has_password(self) -> bool:
        return bool(self._current().get("password"))

    def password_id(self) -> str:
        """Changes whenever the password does: sessions opened under another one are over."""
        return token_hash(str(self._current().get("password")))[:16]

    def set_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"the password is too short ({len(password)} characters, at least "
                            f"{MIN_PASSWORD})")
        data = dict(self._current())
        data["password"] = hash_password(password)
        self._save(data)

    def verify_password(self, password: str) -> bool:
        stored = self._current().get("password")
        return bool(stored) and check_password(password, stored)

    # --- tokens ------------------------------------------------------------------------------
    def new_token(self, name: str) -> str:
        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise AuthError("a token name must be 1 to 64 printable characters")
        data = self._current()
        if name in data["tokens"]:
            raise AuthError(f"a token named {name!r} exists already (revoke it first: "
                            f"--revoke {name!r})")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        tokens = {**data["tokens"], name: {"hash": token_hash(token), "created_at": _now()}}
        self._save({**data, "tokens": tokens})
        return token

    def tokens(self) -> list[TokenInfo]:
        return [TokenInfo(n, t.get("created_at", "")) for n, t in
                sorted(self._current()["tokens"].items())]

    def revoke(self, name: str) -> None:
        data = self._current()
        if name not in data["tokens"]:
            known = ", ".join(sorted(data["tokens"])) or "none"
            raise AuthError(f"no token named {name!r} (tokens: {known})")
        self._save({**data, "tokens": {n: t for n, t in data["tokens"].items() if n != name}})

    def token_name(self, token: str) -> str | None:
        """The name of the token ``token`` is, or None."""
        want = token_hash(token)
        for name, t in self._current()["tokens"].items():
            if hmac.compare_digest(str(t.get("hash", "")), want):
                return name
        return None


class Sessions:
    """Logged-in browsers: random id -> (expiry, password id)."""

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._live: dict[str, tuple[float, str]] = {}

    def open(self, password_id: str) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._live = {k: v for k, v in self._live.items() if v[0] > now}  # drop expired
            self._live[sid] = (now + self.ttl_s, password_id)
        return sid

    def valid(self, sid: str | None, password_id: str) -> bool:
        if not sid:
            return False
        with self._lock:
            found = self._live.get(sid)
        return found is not None and found[0] > time.monotonic() and found[1] == password_id

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._live.pop(sid or "", None)


class RateLimit:
    """At most ``limit`` failures per ``window_s`` from one address; then refuse until the
    oldest failure leaves the window."""

    def __init__(self, limit: int = 10, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._lock = threading.Lock()
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        q = self._fails.setdefault(address, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(address, now)
            return 0.0 if len(q) < self.limit else q[0] + self.window_s - now

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(address, now).append(now)
            if len(self._fails) > 10_000:  # a flood of addresses must not grow memory forever
                self._fails = {a: q for a, q in self._fails.items() if q}
