"""The gate in front of every route: body size limits, authentication (session cookie or Bearer
token), the Origin check for state-changing requests, and the security headers.

A pure ASGI middleware, so it runs before anything reads the body: an unauthenticated upload is
refused without being received, and a body over the limit is refused from its Content-Length
(or, when chunked, as soon as it grows past it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from .auth import AuthError, AuthStore, Sessions

SESSION_COOKIE = "edgeface_session"
MAX_UPLOAD_BODY = 50 * 2 ** 20  # several photos of at most 20 MB each (images.MAX_IMAGE_BYTES)
MAX_JSON_BODY = 64 * 2 ** 10
UPLOAD_PATHS = ("/faces", "/api/identify")
PUBLIC = {"/api/health", "/login", "/api/login"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
           (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
           (b"cross-origin-opener-policy", b"same-origin")]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over {limit // 2 ** 20 or 1} MB"
                         if limit >= 2 ** 20 else f"the request body is over {limit // 1024} KB")
        self.limit = limit


def body_limit(path: str) -> int:
    return MAX_UPLOAD_BODY if path.endswith(UPLOAD_PATHS) else MAX_JSON_BODY


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie") or ""
    for part in raw.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


def _netloc(url: str, scheme: str | None = None) -> str:
    """host:port with the default port made explicit, lower-case."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme or scheme or "http", 80)
    return f"{(parts.hostname or '').lower()}:{port}"


def same_origin(scope: Scope) -> bool:
    """A browser's state-changing request comes from our own pages: its Origin (or, without
    one, its Referer) names the host it was sent to. A request with neither is not from a
    browser form or fetch (curl with a cookie) and passes; SameSite=Strict covers the rest."""
    host = _header(scope, b"host") or ""
    scheme = scope.get("scheme", "http")
    origin = _header(scope, b"origin")
    if origin is None:
        site = _header(scope, b"sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = _header(scope, b"referer")
        if origin is None:
            return True
    if origin == "null":
        return False
    return _netloc(origin) == _netloc(host, scheme)


class Gate:
    """The ASGI middleware; ``who`` ends up in ``scope["state"]["who"]``: ("token", name),
    ("session", id) or None (a public route)."""

    def __init__(self, app: ASGIApp, auth: AuthStore, sessions: Sessions, tls: bool) -> None:
        self.app, self.auth, self.sessions, self.tls = app, auth, sessions, tls

    def identify(self, scope: Scope) -> tuple[str, str] | None:
        header = _header(scope, b"authorization") or ""
        kind, _, token = header.partition(" ")
        if kind.lower() == "bearer" and token.strip():
            name = self.auth.token_name(token.strip())
            return None if name is None else ("token", name)
        sid = _cookie(scope, SESSION_COOKIE)
        if sid and self.sessions.valid(sid, self.auth.password_id()):
            return ("session", sid)
        return None

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send)
        path, method = scope["path"], scope["method"]
        limit = body_limit(path)
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, str(BodyTooLarge(limit)) if length.isdigit()
                         else "a bad Content-Length")
            return
        try:
            who = self.identify(scope)
        except AuthError as e:
            await _reply(send, 500, str(e))
            return
        public = path in PUBLIC or path.startswith("/static/")
        if who is None and not public:
            await self._refuse(scope, send)
            return
        if method not in SAFE_METHODS and (who is None or who[0] == "session") \
                and not same_origin(scope):
            await _reply(send, 403, "cross-origin request refused (the Origin is not this "
                                    "server)")
            return
        scope.setdefault("state", {})["who"] = who
        await self.app(scope, _counting(receive, limit), send)

    async def _refuse(self, scope: Scope, send: Callable) -> None:
        path = scope["path"]
        if (path.startswith("/api/") and path != "/api/docs") or path == "/metrics" \
                or scope["method"] != "GET":
            await _reply(send, 401, "not logged in: log in at /login, or send Authorization: "
                                    "Bearer TOKEN (edgeface-cam token --name NAME)",
                         [(b"www-authenticate", b"Bearer")])
            return
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/login"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def _with_headers(self, send: Callable) -> Callable:
        extra = HEADERS + ([(b"strict-transport-security", b"max-age=31536000")]
                           if self.tls else [])

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *(h for h in extra if h[0] not in names)]
                if b"cache-control" not in names:
                    message["headers"].append((b"cache-control", b"no-store"))
            await send(message)
        return wrapped


def _counting(receive: Callable, limit: int) -> Callable:
    seen = [0]

    async def wrapped() -> dict[str, Any]:
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise BodyTooLarge(limit)
        return message
    return wrapped


async def _reply(send: Callable, status: int, detail: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
