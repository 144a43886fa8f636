"""A live OpenCV window: boxes, names, scores, FPS and stage timings; q or Esc quits.

OpenCV's GUI builds abort the whole process (Qt's qFatal, not a Python exception) when no display
can be opened, so ``display_available()`` must say yes BEFORE any window call. ``draw_overlay``
needs no display (the same picture can be saved or streamed).
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# BGR colours: a named face, a face the gallery does not know, a face not embedded yet.
COLOR_KNOWN = (60, 200, 0)
COLOR_UNKNOWN = (40, 40, 230)
COLOR_PENDING = (0, 190, 255)
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 = Esc
# Stages shown in the status line, with short labels.
SHOWN_STAGES = (("detect", "det"), ("align", "aln"), ("embed", "emb"), ("match", "match"),
                ("total", "total"))


class PreviewUnavailable(RuntimeError):
    """No window can be shown here; the message says why in one line."""


def gui_backend() -> str:
    """The GUI backend OpenCV was built with ("QT5", "GTK3", "WIN32UI", "COCOA"), or "NONE"."""
    m = re.search(r"^\s*GUI:\s*(.+?)\s*$", cv2.getBuildInformation(), flags=re.MULTILINE)
    return m.group(1).upper() if m else "NONE"


def _x_display_reachable(display: str) -> tuple[bool, str]:
    """Connect to the X server named by ``display`` ("[host]:N[.S]").

    Written out (a socket connect) to avoid an Xlib dependency: the only question is whether
    the server is there, and asking Qt instead would abort the process when it is not.
    """
    m = re.fullmatch(r"(?P<host>[^:]*):(?P<num>\d+)(?:\.\d+)?", display.strip())
    if not m:
        return False, f"DISPLAY={display!r} is not of the form [host]:N"
    host, num = m.group("host"), int(m.group("num"))
    try:
        if host in ("", "unix") or host.startswith("/"):
            path = host if host.startswith("/") else f"/tmp/.X11-unix/X{num}"
            addrs = [path]
            if sys.platform.startswith("linux"):
                addrs.append("\0" + path)  # the abstract socket some servers listen on only
            last: OSError | None = None
            for addr in addrs:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(1.0)
                    try:
                        s.connect(addr)
                        return True, ""
                    except OSError as e:
                        last = e
            return False, f"no X server answers on DISPLAY={display} ({last})"
        with socket.create_connection((host, 6000 + num), timeout=1.0):
            return True, ""
    except OSError as e:
        return False, f"no X server answers on DISPLAY={display} ({e})"


def display_available() -> tuple[bool, str]:
    """(True, backend) when a preview window can open here, else (False, the reason)."""
    gui = gui_backend()
    if gui in ("NONE", "NO", ""):
        return False, ("this OpenCV has no GUI backend (opencv-python-headless?); "
                       "run without the preview or install opencv-python")
    if sys.platform in ("win32", "darwin"):
        return True, gui
    x11 = os.environ.get("DISPLAY", "")
    wayland = os.environ.get("WAYLAND_DISPLAY", "")
    if not x11 and not wayland:
        return False, ("no display: neither DISPLAY nor WAYLAND_DISPLAY is set (run the preview "
                       "on the desktop or over ssh -X, or turn it off)")
    if x11:
        ok, why = _x_display_reachable(x11)
        return (True, gui) if ok else (False, why)
    # Wayland only. GTK talks Wayland natively; OpenCV's Qt wheels ship only the X11 (xcb)
    # platform plugin, which would abort without DISPLAY.
    if "QT" in gui and "wayland" not in os.environ.get("QT_QPA_PLATFORM", ""):
        return False, ("WAYLAND_DISPLAY is set but DISPLAY is not, and this OpenCV uses Qt's "
                       "X11 plugin: start XWayland (DISPLAY) or set QT_QPA_PLATFORM=wayland")
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    sock = Path(wayland) if wayland.startswith("/") else Path(runtime, wayland)
    if not sock.exists():
        return False, f"no Wayland compositor socket at {sock}"
    return True, gui


def _color(track: Any) -> tuple[int, int, int]:
    if getattr(track, "name", None) is not None:
        return COLOR_KNOWN
    return COLOR_UNKNOWN if getattr(track, "embeddings", 0) > 0 else COLOR_PENDING


def _label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int],
           scale: float, thick: int) -> None:
    """Text on a filled box (readable over any background), kept inside the image."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    h, w = canvas.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 4)))
    y = int(min(max(th + base + 4, y), h))
    cv2.rectangle(canvas, (x, y - th - base - 4), (x + tw + 4, y), color, cv2.FILLED)
    cv2.putText(canvas, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255) if sum(color) < 400 else (0, 0, 0), thick, cv2.LINE_AA)


def draw_overlay(image: np.ndarray, tracks: Sequence[Any], fps: float | None = None,
                 timings: Mapping[str, float] | None = None) -> np.ndarray:
    """A copy of ``image`` with each track's box, name (or "unknown"), score and id, and a
    status line with FPS and the median stage timings (ms)."""
    canvas = image.copy()
    h, w = canvas.shape[:2]
    thick = max(2, round(min(h, w) / 300))
    scale = max(0.45, min(h, w) / 900)
    for t in tracks:
        x, y, bw, bh = (round(float(v)) for v in t.box)
        color = _color(t)
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), color, thick)
        name = t.name if t.name is not None else (
            "unknown" if getattr(t, "embeddings", 0) else "...")
        text = f"{name} {t.score:.2f} #{t.id}" if t.name is not None else f"{name} #{t.id}"
        _label(canvas, text, x - thick // 2, y - thick, color, scale, max(1, thick // 2))
    parts = [] if fps is None else [f"{fps:.1f} fps"]
    for key, short in SHOWN_STAGES:
        if timings and key in timings:
            parts.append(f"{short} {timings[key]:.1f}ms")
    if parts:
        _label(canvas, "  ".join(parts), 0, h, (32, 32, 32), scale, max(1, thick // 2))
    return canvas


def grid(tiles: Sequence[np.ndarray], tile_height: int = 360,
         names: Sequence[str] = ()) -> np.ndarray:
    """Pictures side by side in rows (about square: 2 -> 2x1, 3 or 4 -> 2x2), each scaled to
    ``tile_height`` and centred in a cell as wide as the widest, labelled with its name if
    given; empty cells are black."""
    if len(tiles) == 1:
        return tiles[0]
    scaled = [cv2.resize(t, (max(1, round(t.shape[1] * tile_height / t.shape[0])), tile_height),
                         interpolation=cv2.INTER_AREA) for t in tiles]
    cols = math.ceil(math.sqrt(len(scaled)))
    rows = math.ceil(len(scaled) / cols)
    cell_w = max(t.shape[1] for t in scaled)
    canvas = np.zeros((rows * tile_height, cols * cell_w, 3), np.uint8)
    for i, t in enumerate(scaled):
        r, c = divmod(i, cols)
        x = c * cell_w + (cell_w - t.shape[1]) // 2
        canvas[r * tile_height:(r + 1) * tile_height, x:x + t.shape[1]] = t
        if i < len(names):  # at the top of its own cell (the label's y is its bottom)
            (_, th), base = cv2.getTextSize(names[i], cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
            _label(canvas, names[i], x, r * tile_height + th + base + 4, (32, 32, 32), 0.6, 1)
    return canvas


class Preview:
    """One window. Raises ``PreviewUnavailable`` (one-line reason) where none can open.

    Frames of several cameras (``frame.source``) are shown together in a grid, each camera's
    latest picture in its own cell, in the order the cameras first appeared."""

    def __init__(self, title: str = "edgeface-cam") -> None:
        ok, why = display_available()
        if not ok:
            raise PreviewUnavailable(f"cannot show a preview: {why}")
        self.title = title
        # GUI_NORMAL: no Qt toolbar/status bar over the picture; AUTOSIZE: 1 image px = 1 screen px.
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        self._shown = False
        self._closed = False
        self._tiles: dict[str, np.ndarray] = {}  # the latest overlay of each camera

    def show(self, frame: Any, tracks: Sequence[Any], fps: float | None = None,
             timings: Mapping[str, float] | None = None) -> bool:
        """Draw and show a frame (a ``sources.Frame`` or a BGR image); False once the user
        pressed q/Esc or closed the window."""
        if self._closed:
            return False
        image = getattr(frame, "image", frame)
        overlay = draw_overlay(image, tracks, fps, timings)
        self._tiles[str(getattr(frame, "source", ""))] = overlay
        shown = overlay if len(self._tiles) == 1 else grid(list(self._tiles.values()),
                                                          names=list(self._tiles))
        cv2.imshow(self.title, shown)
        key = cv2.waitKey(1)
        if key != -1 and (key & 0xFF) in QUIT_KEYS:
            return False
        # After the first show, a window the user closed reports itself invisible.
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False
        self._shown = True
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # let the GUI loop process the destroy
            except cv2.error:
                pass

    def __enter__(self) -> Preview:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
