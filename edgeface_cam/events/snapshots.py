"""Event snapshots: one JPEG per event, the face with head and shoulders from the track's best
frame, so a notification can show who was at the door.

The picture is cut when the track's best-quality face is embedded (the frame that earned the
decision, not whatever frame is current when an ended track is decided), kept small, and written
only when the event is emitted. Files are named by time, track and event, and the folder is
capped at ``max_files`` (oldest removed first) so a busy doorway cannot fill the card. A failed
write (full or read-only disk) is logged and the event goes out without a snapshot.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

CONTEXT = 1.0  # margin around the face box on each side, in box widths/heights
MAX_SIDE = 320  # longest side of the stored picture, pixels
JPEG_QUALITY = 85


def context_crop(image: np.ndarray, box: np.ndarray, context: float = CONTEXT,
                 max_side: int = MAX_SIDE) -> np.ndarray:
    """The face box grown by ``context`` on each side, clipped to the frame, at most
    ``max_side`` pixels on its longest side (a copy: the frame buffer is reused)."""
    h, w = image.shape[:2]
    x, y, bw, bh = (float(v) for v in box)
    x0, y0 = max(0, int(x - context * bw)), max(0, int(y - context * bh))
    x1, y1 = min(w, int(x + bw * (1 + context))), min(h, int(y + bh * (1 + context)))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {box} lies outside the {w}x{h} frame")
    crop = image[y0:y1, x0:x1]
    scale = max_side / max(crop.shape[:2])
    if scale < 1.0:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)),
                                 max(1, round(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return crop.copy()  # never a view: it must not keep (or see changes to) the frame buffer


class SnapshotStore:
    """Writes event pictures into ``folder`` and keeps at most ``max_files`` of them."""

    PATTERN = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-track\d+-\w+\.jpg$")

    def __init__(self, folder: str | Path, max_files: int = 1000) -> None:
        if int(max_files) < 1:
            raise ValueError(f"max_files must be >= 1, got {max_files}")
        self.folder = Path(folder).expanduser()
        self.max_files = int(max_files)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = sorted(p for p in self.folder.iterdir() if self.PATTERN.match(p.name))
        self.written = self.failed = 0

    def save(self, picture: np.ndarray, track_id: int, event: str,
             when: datetime | None = None) -> str | None:
        """Write one picture; its path, or None when the disk refused (logged)."""
        when = when or datetime.now(timezone.utc)
        stamp = when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        path = self.folder / f"{stamp}-track{int(track_id)}-{event}.jpg"
        tmp = path.with_suffix(".tmp")
        try:
            ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise OSError("JPEG encoding failed")
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, path)  # never a half-written JPEG under the final name
        except OSError as e:
            self.failed += 1
            log.warning("snapshot not written to %s: %s", self.folder, e)
            tmp.unlink(missing_ok=True)
            return None
        self.written += 1
        self._files.append(path)
        while len(self._files) > self.max_files:
            old = self._files.pop(0)
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove old snapshot %s: %s", old, e)
        return str(path)
