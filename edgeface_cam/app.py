"""The running system, built from settings: model, detector, recognizer, gallery, sinks, camera
and pipeline, and one context manager that closes everything it opened.

The CLI, the service and the web server build what they need through ``App``; nothing here
parses arguments or prints. Each part is built on first use: ``list`` never loads the model,
``identify`` never opens a camera. A setting the user can fix raises ``UserError`` (one line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2

from . import PROG, selftest
from .config import CameraConfig, Config, ConfigError
from .detect import Detector, make_detector
from .embed import Embedder, ModelCard, file_sha256
from .events import EventSink, JsonLinesSink, SnapshotStore, make_sinks
from .gallery import Gallery
from .gallery.sightings import Retention, SightingRecorder
from .motion import MotionGate
from .pipeline import Camera, Pipeline, PipelineOptions, PipelineStats
from .preview import Preview, PreviewUnavailable, display_available
from .recognize import Recognizer
from .service import install_signal_handlers
from .shotcut import ShotCutDetector
from .sources import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    Frame,
    FrameSource,
    ImageFolderSource,
    SourceError,
    open_source,
)
from .threshold import Threshold
from .threshold import from_settings as threshold_from_settings
from .track import Tracker

log = logging.getLogger(__name__)



class UserError(Exception):
    """A mistake the user can fix; the CLI reports it as one line with exit status 2."""


class App:
    """The parts one command or service needs, each built from ``cfg`` when first used.

    A context manager: leaving it closes the gallery (and whatever else ``own`` was given).
    """

    def __init__(self, cfg: Config, db: str | None = None) -> None:
        self.cfg = cfg
        self.db_path = Path(db).expanduser() if db else cfg.gallery_path()
        self._gallery: Gallery | None = None
        self._owned: list[Any] = []

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- model, detector, recognizer ---------------------------------------------------------
    def model_file(self) -> Path:
        path = self.cfg.model_path()
        if not path.is_file():
            raise UserError(f"recognizer.model: model file not found: {path}")
        return path

    @cached_property
    def embedder(self) -> Embedder:
        path = self.model_file()
        try:
            return Embedder(path, num_threads=self.cfg.recognizer.threads)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"recognizer.model: {e}") from None

    @cached_property
    def fingerprint(self) -> str:
        """The model's sha256, without loading the model (list/remove/rename need only this)."""
        if "embedder" in self.__dict__:
            return self.embedder.fingerprint
        return file_sha256(self.model_file())

    @cached_property
    def detector(self) -> Detector:
        d = self.cfg.detector
        try:
            return make_detector(d.backend, model=self.cfg.detector_model(),
                                 input_width=d.input_width, score_threshold=d.score_threshold)
        except (FileNotFoundError, ValueError, ImportError) as e:
            raise UserError(f"detector: {e}") from None

    @cached_property
    def recognizer(self) -> Recognizer:
        selftest.check(self.detector, self.embedder)  # a wrong numpy/OpenCV/LiteRT stops here
        return Recognizer(self.detector, self.embedder, min_face=self.cfg.detector.min_face)

    # --- gallery -----------------------------------------------------------------------------
    def gallery(self, create: bool = True) -> Gallery | None:
        """The gallery at ``db_path``; None when it does not exist and ``create`` is False."""
        if self._gallery is None:
            if not create and not self.db_path.exists():
                return None
            self._gallery = Gallery(self.db_path, self.fingerprint, threshold=self.threshold)
        return self._gallery

    @cached_property
    def threshold(self) -> Threshold:
        """``recognizer.threshold`` in force: a number, or auto from the model card's impostor
        calibration (read from the card alone: the model is not loaded)."""
        r = self.cfg.recognizer
        path = self.model_file()
        try:
            card = ModelCard.for_model(path)
            return threshold_from_settings(r.threshold, r.false_accept, card.calibration,
                                           path.name)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"recognizer.model: {e}") from None

    def matching_gallery(self, create: bool = False) -> Gallery | None:
        """The gallery to match against, with one warning when it cannot name anyone: none
        there, nobody enrolled, or embeddings only of another model (never compared). None
        when there is no file (and ``create`` is False) or nothing to match."""
        g = self.gallery(create=create)
        if g is None:
            log.warning("no gallery at %s: every face is unknown", self.db_path)
            return None
        stale = g.stale()
        if stale:
            log.warning("%d embedding(s) in %s belong to another model and are never compared "
                        "with this one (%s): run `%s reembed` to use them", stale, self.db_path,
                        self.fingerprint[:12], PROG)
        if len(g) == 0:
            if not stale:
                log.warning("the gallery %s is empty: every face is unknown (enrol with `%s "
                            "enroll`)", self.db_path, PROG)
            return None if not create else g
        return g

    def existing_gallery(self) -> Gallery:
        g = self.gallery(create=False)
        if g is None:
            raise UserError(f"no gallery at {self.db_path} (enrol someone first: "
                            f"{PROG} enroll --name NAME --images PHOTO)")
        return g

    # --- the running parts -------------------------------------------------------------------
    def camera(self, cam: CameraConfig | None = None) -> FrameSource:
        """The source of ``cam`` (default: ``camera:``, or the first of ``cameras:``)."""
        cam = cam if cam is not None else self.cfg.camera
        source = self.own(open_source(cam.source, cam.width, cam.height, cam.fps))
        if cam.name:
            source.name = cam.name
        return source

    def cameras(self) -> list[Camera]:
        """Every configured camera (``cameras:``, or the one ``camera:``), opened, with its own
        tracker, shot-cut and motion state and snapshots. Of several, a live camera that cannot
        be opened now (unplugged, its stream down) does not stop the others: it is opened in
        its own capture thread as soon as it can be (``LateCamera``)."""
        cams = self.cfg.camera_list()
        return [self.camera_parts(self._open_or_later(c, several=len(cams) > 1), c,
                                  own_folder=len(cams) > 1) for c in cams]

    def _open_or_later(self, cam: CameraConfig, several: bool) -> FrameSource:
        try:
            return self.camera(cam)
        except SourceError as e:
            if not several or not is_live_spec(cam.source):
                raise
            log.warning("%s: %s; the other cameras start, this one is tried again every few "
                        "seconds", cam.name, e)
            return self.own(LateCamera(cam))

    def camera_parts(self, source: FrameSource, cam: CameraConfig | None = None,
                     own_folder: bool = False) -> Camera:
        """``source`` with its per-camera parts; ``own_folder``: its snapshots in a subfolder
        named after it (several cameras' track ids would collide in one folder)."""
        cut = self.cfg.tracking.cut_threshold
        m = self.cfg.motion
        # A folder's photos are scenes of their own: each is searched, however alike.
        gate = m.enabled and not isinstance(source, ImageFolderSource)
        return Camera(source, self.tracker(), cuts=ShotCutDetector(cut) if cut else None,
                      motion=MotionGate(m.threshold, m.min_area, m.check_every)
                      if gate else None,
                      snapshots=self.snapshots(source.name if own_folder else None),
                      recognizer=self.camera_recognizer(cam) if cam is not None else None)

    def camera_recognizer(self, cam: CameraConfig) -> Recognizer | None:
        """A recognizer for a camera's own detector.min_face / input_width (sharing the
        detector where the width is the same, and always the embedder); None: the shared one."""
        d = self.cfg.detector
        if cam.min_face in (None, d.min_face) and cam.input_width in (None, d.input_width):
            return None
        detector = self.recognizer.detector
        if cam.input_width not in (None, d.input_width):
            try:
                detector = make_detector(d.backend, model=self.cfg.detector_model(),
                                         input_width=cam.input_width,
                                         score_threshold=d.score_threshold)
            except (FileNotFoundError, ValueError, ImportError) as e:
                raise UserError(f"detector: {e}") from None
        return Recognizer(detector, self.embedder,
                          min_face=d.min_face if cam.min_face is None else cam.min_face)

    def sinks(self, events_path: str | None = None) -> list[EventSink]:
        """``events_path`` (JSON lines, '-' = stdout) instead of the configured sinks; with no
        sinks configured, JSON lines on stdout."""
        if events_path:
            return [self.own(JsonLinesSink(events_path))]
        people = [p.name for p in self.gallery().people()] if self._gallery else []
        made = make_sinks(sink_specs(self.cfg, people)) or [JsonLinesSink(None)]
        return [self.own(s) for s in made]

    def preview(self, title: str) -> Preview | None:
        made = make_preview(self.cfg.preview.enabled, title)
        return None if made is None else self.own(made)

    def snapshots(self, subfolder: str | None = None) -> SnapshotStore | None:
        folder = self.cfg.snapshots_dir()
        if folder is None:
            return None
        if subfolder:
            folder = folder / subfolder
        try:
            return SnapshotStore(folder, self.cfg.snapshots.max_files)
        except OSError as e:
            raise ConfigError(f"snapshots.dir: cannot use {folder}: {e.strerror or e}") from None

    def tracker(self) -> Tracker:
        t = self.cfg.tracking
        return Tracker(t.iou_threshold, t.max_age, t.embed_every, t.vote_window)

    def pipeline(self, source: FrameSource | list[Camera], gallery: Gallery | None,
                 sinks: list[Any], *, max_frames: int | None = None,
                 preview: Preview | None = None,
                 heartbeat: Callable[[], None] | None = None) -> Pipeline:
        """A pipeline over one source (with this config's per-camera parts) or built cameras."""
        cams = source if isinstance(source, list) else [self.camera_parts(source)]
        # Files are processed frame by frame (every frame counts in the demo and the bench);
        # live sources drop stale frames so recognition never lags behind the camera.
        realtime = any(c.source.live for c in cams)
        pipeline = Pipeline(cams, self.recognizer, gallery, sinks, preview=preview,
                            heartbeat=heartbeat,
                            options=PipelineOptions(max_frames=max_frames, realtime=realtime))
        pipeline.sightings = self.sightings(gallery)
        return pipeline

    def sightings(self, gallery: Gallery | None) -> SightingRecorder | None:
        """The recorder storing each decided track in ``gallery``'s file (sightings.*); None
        when off, without a gallery, or read-only (matching still works)."""
        s = self.cfg.sightings
        if gallery is None or not s.enabled or gallery.read_only:
            return None
        return self.own(SightingRecorder(gallery.path, gallery.fingerprint,
                                         Retention(s.max_count, s.max_days)))

    # --- closing -----------------------------------------------------------------------------
    def own(self, thing: Any) -> Any:
        """Close ``thing`` (an object with close(), or a function) when the app closes."""
        self._owned.append(thing)
        return thing

    def close(self) -> None:
        owned, self._owned = self._owned, []
        if self._gallery is not None:
            owned.insert(0, self._gallery)  # closed last: sinks may still be flushing
            self._gallery = None
        close_all(owned)


def is_live_spec(spec: str) -> bool:
    """A camera or stream (it may come back), not a file or folder (a mistake to fix)."""
    spec = str(spec).strip().lower()
    return spec.isdigit() or spec.startswith(("/dev/", "picamera2")) or "://" in spec


class LateCamera(FrameSource):
    """A live camera that could not be opened at start: ``read()`` (on its capture thread)
    keeps trying with backoff, then reads from it; ``close()`` ends the wait at once."""

    live = True

    def __init__(self, cam: CameraConfig) -> None:
        super().__init__(cam.name or str(cam.source))
        self.cam = cam
        self.inner: FrameSource | None = None

    @property
    def reconnects(self) -> int:
        return int(getattr(self.inner, "reconnects", 0) or 0)

    def read(self) -> Frame | None:
        delay = BACKOFF_MIN_S
        while self.inner is None:
            if self._closed.wait(delay):
                return None
            c = self.cam
            try:
                inner = open_source(c.source, c.width, c.height, c.fps)
            except SourceError as e:
                log.debug("%s: still cannot open it: %s", self.name, e)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            inner.name = self.name
            self.inner = inner
            log.info("%s: opened", self.name)
            if self._closed.is_set():
                inner.close()
                return None
        return self.inner.read()

    def close(self) -> None:
        super().close()
        if self.inner is not None:
            self.inner.close()


def make_preview(setting: bool | str, title: str) -> Preview | None:
    """A preview window for true/auto when a display exists; None otherwise."""
    if setting is False:
        return None
    ok, why = display_available()
    if not ok:
        if setting is True:
            log.warning("preview off: %s", why)
        return None
    try:
        return Preview(title)
    except (PreviewUnavailable, cv2.error) as e:  # the display went away since the check
        log.warning("preview off: %s", str(e).strip().splitlines()[-1])
        return None


def close_all(things: list[Any]) -> None:
    """Close each (an object with close(), or a close function), in reverse order of opening."""
    for thing in reversed(things):
        close = getattr(thing, "close", thing)
        try:
            close()
        except Exception as e:  # one failing to flush must not hide the run's result
            log.warning("closing %s failed: %s", getattr(thing, "__qualname__",
                                                         type(thing).__name__), e)


def sink_specs(cfg: Config, people: list[str]) -> list[dict[str, Any]]:
    """The configured sinks; MQTT ones default to this camera's name and announce the enrolled
    people to Home Assistant."""
    specs = []
    for spec in cfg.events:
        spec = dict(spec)
        if spec["type"] == "mqtt":
            spec.setdefault("camera", cfg.camera.name or "camera")
            spec.setdefault("people", people)
        specs.append(spec)
    return specs


class Running:
    """The service's running system: ``service.serve`` enters it, runs the pipeline, and
    leaving it closes the camera, sinks, preview and gallery."""

    def __init__(self, app: App, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline

    def __enter__(self) -> Pipeline:
        return self.pipeline

    def __exit__(self, *exc: object) -> None:
        self.app.close()


def build_running(cfg: Config, heartbeat: Callable[[], None], *, db: str | None = None,
                  events_path: str | None = None, max_frames: int | None = None) -> Running:
    """Camera -> pipeline -> sinks from ``cfg``; everything opened is closed if a part fails."""
    app = App(cfg, db)
    try:
        cameras = app.cameras()
        gallery = app.matching_gallery(create=True)  # run creates it: everyone unknown then
        if gallery is not None:  # and again whenever an enrolment moves it (Gallery)
            log.info("gallery %s: %s", app.db_path, gallery.describe_threshold())
        sinks = app.sinks(events_path)
        shown = cfg.camera.source if len(cameras) == 1 else ", ".join(c.name for c in cameras)
        preview = app.preview(f"{PROG}: {shown}")
        pipeline = app.pipeline(cameras, gallery, sinks, max_frames=max_frames, preview=preview,
                                heartbeat=heartbeat)
    except BaseException:
        app.close()
        raise
    return Running(app, pipeline)


def run_to_end(app: App, source: FrameSource | list[FrameSource], gallery: Gallery | None,
               sinks: list[Any], *, max_frames: int | None = None,
               preview: Preview | None = None) -> PipelineStats:
    """One run to the end of a file (demo, bench), or of several files as that many cameras;
    Ctrl-C stops it cleanly, with a summary."""
    sources = source if isinstance(source, list) else [source]
    try:
        built = ([app.camera_parts(s, own_folder=True) for s in sources]
                 if isinstance(source, list) else source)
        pipeline = app.pipeline(built, gallery, sinks, max_frames=max_frames, preview=preview)
        restore = install_signal_handlers(pipeline.stop)
        try:
            return pipeline.run()
        finally:
            restore()
    finally:
        if preview is not None:
            preview.close()
        for s in sources:
            s.close()


def open_copies(spec: str, count: int) -> FrameSource | list[FrameSource]:
    """One source of ``spec``, or ``count`` > 1 of them named camera1, camera2, ... (bench
    --cameras N: N cameras sharing one detector and model in one process)."""
    if count == 1:
        return open_source(spec)
    sources: list[FrameSource] = []
    try:
        for i in range(count):
            sources.append(open_source(spec))
            sources[-1].name = f"camera{i + 1}"
    except BaseException:
        close_all(sources)
        raise
    return sources
