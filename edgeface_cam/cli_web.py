"""The web UI's commands (``web``, ``passwd``, ``token``) and the web server beside ``run`` and
``demo --web``. Registered by ``cli.build_parser`` through ``add_web_commands``.

The web stack (FastAPI, uvicorn, Jinja2) is imported only by the commands that serve it:
``list`` or ``identify`` do not pay its start-up time.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .app import App, UserError
from .cliargs import path_arg
from .config import Config
from .report import print_json
from .service import install_signal_handlers
from .sources import open_source
from .web.auth import AuthError, AuthStore

if TYPE_CHECKING:
    from .web import WebServer

log = logging.getLogger("edgeface_cam.cli")


def _auth(cfg: Config, db: str | None) -> AuthStore:
    """The auth file beside the gallery (the state folder)."""
    return AuthStore((Path(db).expanduser() if db else cfg.gallery_path()).parent)


def _wait_for_signal() -> None:
    stop = threading.Event()
    restore = install_signal_handlers(stop.set)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        restore()


# --- commands -----------------------------------------------------------------------------------
def cmd_web(args: argparse.Namespace, cfg: Config) -> int:
    from .web import start_web

    server = start_web(cfg, args.db, hub=None, listen=args.listen)
    print(f"web UI on {server.url} (gallery {server.state.parts.db_path}); Ctrl-C stops it",
          file=sys.stderr)
    try:
        _wait_for_signal()
    finally:
        server.stop()
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password: give it with --password-stdin")
    first = getpass.getpass("new web password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ; nothing changed")
    return first


def cmd_passwd(args: argparse.Namespace, cfg: Config) -> int:
    store = _auth(cfg, args.db)
    try:
        store.set_password(_read_password(args.password_stdin))
    except (AuthError, OSError) as e:
        raise UserError(f"{store.path}: {e}") from None
    print(f"web password set in {store.path} (every open session has ended)")
    return 0


def cmd_token(args: argparse.Namespace, cfg: Config) -> int:
    store = _auth(cfg, args.db)
    try:
        if args.name is not None:
            token = store.new_token(args.name)
            print(token)
            print(f"token {args.name.strip()!r} created: it is shown only this once; send it "
                  "as 'Authorization: Bearer TOKEN'", file=sys.stderr)
        elif args.revoke is not None:
            store.revoke(args.revoke)
            print(f"token {args.revoke!r} revoked")
        else:
            tokens = store.tokens()
            if args.json:
                print_json([{"name": t.name, "created_at": t.created_at} for t in tokens])
            for t in [] if args.json else tokens:
                print(f"{t.name}  {t.created_at}")
            if not tokens and not args.json:
                print(f"no tokens in {store.path}")
    except (AuthError, OSError) as e:
        raise UserError(str(e)) from None
    return 0


# --- the web server beside run and demo ---------------------------------------------------------
class WebBeside:
    """The web server of ``run``: started in the background once the first pipeline is built
    (a camera that does not open is one error line, with no web noise around it; the web
    stack's import is not on the way to the first frame), and outliving the pipelines a reload
    rebuilds, showing the newest (``attach``)."""

    def __init__(self, cfg: Config, db: str | None) -> None:
        from .web.live import LiveHub

        self.cfg, self.db = cfg, db
        self.hub = LiveHub(cfg.web.live_fps)
        self.server: WebServer | None = None
        self.starter: threading.Thread | None = None

    def attach(self, running: Any) -> Any:
        self.hub.attach(running.pipeline)
        if self.starter is None:
            self.starter = threading.Thread(target=self._start, name="web-start", daemon=True)
            self.starter.start()
        return running

    def _start(self) -> None:
        from .web import start_web

        try:
            self.server = start_web(self.cfg, self.db, self.hub)
        except Exception as e:  # any failure: the camera goes on without its web page
            log.error("web UI off: %s", " ".join(str(e).split()) or type(e).__name__)

    def close(self) -> None:
        if self.starter is not None:
            self.starter.join(timeout=30)
        if self.server is not None:
            self.server.stop()


class _NoWeb:
    def attach(self, running: Any) -> Any:
        return running


@contextlib.contextmanager
def web_beside(cfg: Config, db: str | None) -> Iterator[WebBeside | _NoWeb]:
    """``run``'s web server when web.enabled (see ``WebBeside``). A port in use is logged and
    the camera runs on without it (a door camera must not stop for its web page)."""
    if not cfg.web.enabled:
        yield _NoWeb()
        return
    beside = WebBeside(cfg, db)
    try:
        yield beside
    finally:
        beside.close()


def demo_web(app: App, gallery: Any, sinks: list[Any], listen: str | None) -> int:
    """``demo --web``: the demo clip looped in real time, served on 127.0.0.1 with a one-time
    password (the demo's throwaway gallery has none), until Ctrl-C."""
    from .demo import DEMO_CLIP
    from .web import LiveHub, start_web

    cfg = app.cfg
    store = AuthStore(app.db_path.parent)
    password = None
    if not store.has_password:
        password = secrets.token_urlsafe(9)
        store.set_password(password)
    host_port = listen or f"127.0.0.1:{cfg.web.listen.rpartition(':')[2]}"
    hub = LiveHub(cfg.web.live_fps)
    server = start_web(cfg, str(app.db_path), hub, listen=host_port)
    source = open_source(str(DEMO_CLIP), fps=30.0, loop=True)
    source.name = "demo"
    pipeline = hub.attach(app.pipeline(source, gallery, sinks))
    shown = f" password: {password}" if password else ""
    print(f"demo web UI on {server.url}{shown} (this demo only); Ctrl-C stops it",
          file=sys.stderr, flush=True)
    restore = install_signal_handlers(pipeline.stop)
    try:
        pipeline.run()
    finally:
        restore()
        source.close()
        server.stop()
    return 0


# --- the parser ---------------------------------------------------------------------------------
def add_web_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("web", cmd_web, "Serve the web UI and REST API without a camera (manage a gallery "
            "from a laptop); `run` serves it too when web.enabled.",
            "web\nweb --listen 127.0.0.1:8081 --db gallery.db")
    p.add_argument("--listen", type=path_arg, metavar="HOST:PORT",
                   help="overrides web.listen (default 0.0.0.0:8080; 127.0.0.1 until a "
                        "password is set)")

    p = add("passwd", cmd_passwd, "Set the web UI's admin password (stored as a scrypt hash "
            "beside the gallery; open sessions end).",
            "passwd\necho 'long secret' | edgeface-cam passwd --password-stdin")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")

    p = add("token", cmd_token, "Create (printed once), list or revoke API tokens for "
            "'Authorization: Bearer TOKEN' (scripts, Home Assistant).",
            "token --name homeassistant\ntoken --list\ntoken --revoke homeassistant",
            json_flag=True)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--name", metavar="NAME", help="create a token named NAME")
    how.add_argument("--list", action="store_true", help="list the tokens (names and dates)")
    how.add_argument("--revoke", metavar="NAME", help="revoke the token named NAME")
