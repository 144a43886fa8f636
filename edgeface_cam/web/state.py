"""What every route shares (``WebState``): the settings, the auth file, sessions, the login
limit, the live hub, and the server's own ``App`` (its own gallery connection; a recognizer of
its own for uploads, built on the first one)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..app import App, UserError
from ..config import Config
from ..gallery import Gallery, GalleryError
from .auth import AuthStore, RateLimit, Sessions
from .live import LiveHub

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"


class WebState:
    """What every route shares: settings, the auth file, sessions, the login limit, the live
    hub (None without a camera), and the server's own ``App``."""

    def __init__(self, cfg: Config, db: str | None = None, hub: LiveHub | None = None,
                 tls: bool = False) -> None:
        self.cfg = cfg
        self.parts = App(cfg, db)
        self.auth = AuthStore(self.parts.db_path.parent)
        self.sessions = Sessions()
        self.limiter = RateLimit()
        self.hub = hub
        self.tls = tls
        self.started = time.monotonic()
        self.recognize_lock = threading.Lock()  # one LiteRT interpreter: one caller at a time
        self.doctor_cache: tuple[float, list[Any]] | None = None

    def gallery(self, create: bool = False) -> Gallery | None:
        try:
            return self.parts.gallery(create=create)
        except UserError as e:
            raise GalleryError(str(e)) from None

    def analyze(self, image: Any) -> list[Any]:
        with self.recognize_lock:
            return self.parts.recognizer.analyze(image, still=True)

    def close(self) -> None:
        self.parts.close()
