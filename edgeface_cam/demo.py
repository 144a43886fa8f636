"""The bundled demo: its photo and clip, a throwaway gallery holding the demo person, and the
figures the demo and ``bench`` report."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .app import App, UserError
from .embed import Embedder
from .enroll import Sample, enroll_samples, samples_from_images
from .events import EventSink
from .gallery import Gallery
from .paths import ASSETS
from .sources import IMAGE_SUFFIXES

DEMO_DIR = ASSETS / "demo"
DEMO_PERSON = "Lin-Manuel Miranda"
DEMO_CLIP = DEMO_DIR / "lin_manuel_miranda_clip.mp4"


def demo_photos() -> list[Path]:
    photos = sorted(p for p in DEMO_DIR.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos or not DEMO_CLIP.is_file():
        raise UserError(f"the demo files are missing from {DEMO_DIR}; reinstall edgeface-cam")
    return photos


@contextmanager
def demo_gallery(app: App, use_db: bool) -> Iterator[tuple[Gallery, list[Sample]]]:
    """A gallery holding the bundled demo person (and the samples enrolled): a throwaway one, or
    --db's when given."""
    samples = samples_from_images(app, demo_photos())
    with tempfile.TemporaryDirectory(prefix="edgeface-cam-demo-") as tmp:
        if not use_db:
            app.db_path = Path(tmp) / "demo.db"
        gallery = app.gallery()
        assert gallery is not None
        enroll_samples(gallery, DEMO_PERSON, samples, notes="bundled demo photo")
        try:
            yield gallery, samples
        finally:
            app.close()


@contextmanager
def bench_gallery(app: App, use_db: bool) -> Iterator[tuple[Gallery, np.ndarray]]:
    """The --db gallery as it is (a real gallery's size; nothing enrolled into it), else a
    throwaway one with the demo person; and an aligned crop to time the embedding on."""
    if not use_db:
        with demo_gallery(app, use_db=False) as (gallery, samples):
            yield gallery, samples[0].result.crop
        return
    crop = samples_from_images(app, demo_photos()[:1])[0].result.crop
    try:
        yield app.existing_gallery(), crop
    finally:
        app.close()


class EventTally(EventSink):
    """Counts the events per name, for the demo's summary line."""

    def __init__(self) -> None:
        self.recognized: dict[str, int] = {}
        self.unknown = 0

    def emit(self, event: dict) -> None:
        if event.get("name"):
            self.recognized[event["name"]] = self.recognized.get(event["name"], 0) + 1
        else:
            self.unknown += 1

    def close(self) -> None:
        pass


def embed_timing(embedder: Embedder, crop: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median and p90 milliseconds of one embedding, after one warm-up call."""
    embedder.embed_one(crop)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedder.embed_one(crop)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 90))
