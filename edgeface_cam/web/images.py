"""Uploaded images: multipart bodies parsed in memory (nothing is written to disk), and pictures
decoded only after their header says they are small enough.

OpenCV's own pixel limit (``OPENCV_IO_MAX_IMAGE_PIXELS``) is read once per process, possibly
before we could set it, so the size is read from the header here: a 1 KB file claiming 100,000 x
100,000 pixels is refused without allocating 30 GB.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_IMAGE_BYTES = 20 * 2 ** 20
MAX_IMAGE_PIXELS = 50_000_000
MAX_FILES = 50


class UploadError(ValueError):
    """A bad upload: ``status`` 413 (too large) or 422 (not a usable image) or 400."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Part:
    name: str
    filename: str | None
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/form-data body, in memory."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(400, "expected a multipart/form-data body (an `image` field per "
                               "photo)")
    parts: list[Part] = []
    state: dict = {"headers": {}, "field": b"", "value": b"", "chunks": [], "done": False}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"] = state["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["chunks"].append(data[start:end])

    def on_part_end() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        filename = disp.get(b"filename")
        parts.append(Part(disp.get(b"name", b"").decode("utf-8", "replace"),
                          None if filename is None else filename.decode("utf-8", "replace"),
                          b"".join(state["chunks"])))
        state["headers"], state["chunks"] = {}, []
        if len(parts) > MAX_FILES:
            raise UploadError(413, f"too many parts (at most {MAX_FILES} photos a request)")

    def on_end() -> None:
        state["done"] = True

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": on_end})
    try:
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except Exception as e:
        raise UploadError(400, f"malformed multipart body: {e}") from None
    if not state["done"]:
        raise UploadError(400, "the multipart body is truncated (no closing boundary)")
    return parts


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header of a JPEG, PNG, WebP or BMP."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return "PNG", w, h
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return "BMP", abs(w), abs(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return ("WebP", *_webp_size(data))
    if data[:2] == b"\xff\xd8":
        return ("JPEG", *_jpeg_size(data))
    raise UploadError(422, "not an image (JPEG, PNG, WebP or BMP expected)")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30],
                                                                             "little")
    if chunk == b"VP8L":
        b = int.from_bytes(data[21:25], "little")
        return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    raise UploadError(422, "a WebP file of an unknown kind")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """The frame size from the first SOF marker."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            raise UploadError(422, "a damaged JPEG (bad marker)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise UploadError(422, "a truncated or damaged JPEG (no frame header)")


def _truncated(kind: str, data: bytes) -> bool:
    tail = data.rstrip(b"\x00")[-12:]
    if kind == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if kind == "PNG":
        return b"IEND" not in tail
    return False


def decode_image(data: bytes, label: str = "image") -> np.ndarray:
    """``data`` as a BGR uint8 picture (EXIF orientation applied), refusing anything over the
    limits before decoding it."""
    if not data:
        raise UploadError(422, f"{label}: empty file")
    if len(data) > MAX_IMAGE_BYTES:
        raise UploadError(413, f"{label}: {len(data) / 2 ** 20:.1f} MB, at most "
                               f"{MAX_IMAGE_BYTES // 2 ** 20} MB an image")
    try:
        kind, w, h = image_size(data)
    except UploadError as e:
        raise UploadError(e.status, f"{label}: {e.detail}") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise UploadError(413, f"{label}: {w}x{h} is {w * h / 1e6:.0f} megapixels, at most "
                               f"{MAX_IMAGE_PIXELS // 1_000_000}")
    if w == 0 or h == 0:
        raise UploadError(422, f"{label}: a {kind} of size {w}x{h}")
    if _truncated(kind, data):
        raise UploadError(422, f"{label}: the {kind} data is truncated")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadError(422, f"{label}: a damaged {kind} (it does not decode)")
    return image
