"""The web server: the FastAPI application (routes from ``api``, ``library`` and ``pages``
behind ``security.Gate``), what the routes share (``WebState``), and uvicorn in its own thread.

The server has its own ``App`` (its own gallery connection, and a recognizer of its own for
uploads, built on the first upload): the pipeline's worker keeps its parts to itself, and sees
the web's changes to the gallery within a frame (``Gallery.refresh``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .. import PROG, __version__
from ..app import UserError
from ..config import Config, ConfigError, host_port
from ..gallery import GalleryError
from . import api, library, pages
from .images import UploadError
from .live import LiveHub
from .security import BodyTooLarge, Gate
from .state import STATIC, WebState

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def parse_listen(text: str) -> tuple[str, int]:
    """"HOST:PORT" (IPv6 as "[::]:8080") -> (host, port); ConfigError naming web.listen."""
    problem = host_port(str(text))
    if problem:
        raise ConfigError(f"web.listen: {problem}")
    host, _, port = str(text).strip().rpartition(":")
    return host.strip("[]"), int(port)


def _validation_detail(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, f"malformed JSON body: {first.get('ctx', {}).get('error', 'not JSON')}"
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
    return 422, f"{where}: {first.get('msg', 'invalid')}"


def _install_errors(app: FastAPI) -> None:
    """Every error is a JSON object with one ``detail`` line."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail = _validation_detail(exc)
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(UploadError)
    async def upload(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(GalleryError)
    async def gallery(_: Request, exc: GalleryError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=400)

    @app.exception_handler(UserError)
    async def user(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def create_app(state: WebState) -> Any:
    """The ASGI application: FastAPI's routes wrapped in the security gate."""
    app = FastAPI(title=PROG, version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.web = state
    _install_errors(app)
    app.include_router(api.router)
    app.include_router(library.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return Gate(app, state.auth, state.sessions, state.tls)


class WebServer:
    """uvicorn serving ``create_app(state)`` in a thread; ``stop()`` ends it (and any live
    stream) within a few seconds."""

    def __init__(self, state: WebState, host: str, port: int,
                 tls: tuple[Path, Path] | None = None) -> None:
        import uvicorn

        self.state, self.host, self.port = state, host, port
        kwargs: dict[str, Any] = {}
        if tls is not None:
            for p in tls:
                if not p.is_file():
                    raise ConfigError(f"web.tls_cert/tls_key: no such file: {p}")
            kwargs = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
        # log_config=None: uvicorn's own dictConfig would replace (and close) the process's
        # log handlers; its loggers go through ours (service.configure_logging) instead.
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
        config = uvicorn.Config(create_app(state), host=host, port=port, log_config=None,
                                log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2,
                                server_header=False, proxy_headers=True, **kwargs)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.state.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"{scheme}://{shown}:{self.port}"

    def start(self, timeout: float = 10.0) -> WebServer:
        _check_port(self.host, self.port)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.stop()
            raise UserError(f"the web server did not start on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        if self.state.hub is not None:
            self.state.hub.shutdown()
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.state.close()


def _check_port(host: str, port: int) -> None:
    """A port in use is a one-line error before the thread starts (uvicorn would exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"web.listen: cannot listen on {host}:{port} "
                            f"({e.strerror or e})") from None


def start_web(cfg: Config, db: str | None = None, hub: LiveHub | None = None,
              listen: str | None = None) -> WebServer:
    """The web server for ``cfg`` started: on web.listen (or ``listen``), on 127.0.0.1 only
    while no password is set."""
    host, port = parse_listen(listen or cfg.web.listen)
    tls = cfg.tls_files()
    state = WebState(cfg, db, hub, tls=tls is not None)
    if not state.auth.has_password and host != LOOPBACK:
        log.warning("no web password is set: the web UI listens on %s:%d only; set one with "
                    "`%s passwd`", LOOPBACK, port, PROG)
        host = LOOPBACK
    server = WebServer(state, host, port, tls).start()
    log.info("web UI on %s", server.url)
    return server
