"""The web UI and REST API (FastAPI + uvicorn + Jinja2; no JavaScript build step).

- ``server``: the application behind ``security.Gate``, ``WebServer`` (uvicorn in a thread),
  ``start_web``; ``state.WebState``: what the routes share (its own gallery connection and
  recognizer).
- ``security``: authentication (session cookie or Bearer token), the Origin check, body limits,
  security headers; ``auth``: the password (scrypt), tokens (hashed), sessions, login limit.
- ``api`` (people, identify, status, cameras, metrics), ``library`` (sightings, unknowns),
  ``pages`` (Jinja2 templates + static files shipped in the package), ``live`` (the latest
  picture per camera, MJPEG encoded only while someone watches), ``images`` (uploads decoded
  in memory with size and pixel limits), ``status``, ``metrics`` (Prometheus).
"""

from typing import Any

from .auth import AuthError, AuthStore

__all__ = ["AuthError", "AuthStore", "LiveHub", "WebServer", "WebState", "create_app",
           "parse_listen", "start_web"]
_LAZY = {"LiveHub": "live", "WebServer": "server", "WebState": "state",
         "create_app": "server", "parse_listen": "server", "start_web": "server"}


def __getattr__(name: str) -> Any:
    """The server's names on first use: ``cli_web`` reaches ``auth`` without loading FastAPI
    (``passwd`` and ``token`` start in a blink)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
