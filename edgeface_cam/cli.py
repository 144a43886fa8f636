"""The ``edgeface-cam`` command line: run, enroll, list, remove, rename, reembed, identify, verify,
demo, bench, doctor.

This is the top of the device app: the only module that reads config.yaml. It builds the
detector, embedder, gallery, source, sinks and pipeline from the settings and hands them plain
arguments. A user mistake ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import cv2
import numpy as np
from tqdm import tqdm

from . import __version__, doctor, selftest
from . import config as configmod
from .compat import quiet_opencv
from .config import ASSETS, LOG_LEVELS, Config, ConfigError
from .detect import Detector, make_detector
from .embed import Embedder, SelfTestFailed, file_sha256
from .events import EventSink, JsonLinesSink, SinkError, make_sinks
from .gallery import Gallery, GalleryError, Match, validate_name
from .pipeline import Pipeline, PipelineStats
from .preview import Preview, PreviewUnavailable, display_available
from .recognize import FaceResult, Recognizer
from .runtime import RuntimeMissing
from .service import configure_logging, install_signal_handlers, serve
from .snapshots import SnapshotStore
from .sources import IMAGE_SUFFIXES, FrameSource, ImageFolderSource, SourceError, open_source

log = logging.getLogger("edgeface_cam.cli")

PROG = "edgeface-cam"
EXIT_USER = 2
DEMO_DIR = ASSETS / "demo"
DEMO_PERSON = "Lin-Manuel Miranda"
DEMO_CLIP = DEMO_DIR / "lin_manuel_miranda_clip.mp4"
# A second face at least this fraction of the largest face's size (shorter box side) makes a photo
# ambiguous for enrolment: we cannot tell whom the user means.
SIMILAR_SIZE = 0.6
# Camera enrolment keeps at most one frame in this many, so the shots differ a little.
FRAME_SPACING = 5
COUNTDOWN_S = 3


class UserError(Exception):
    """A mistake the user can fix; reported as one line, exit status 2."""


USER_ERRORS = (UserError, ConfigError, GalleryError, SourceError, SinkError, SelfTestFailed,
               RuntimeMissing)


# --- the parts a command needs, built from the config on first use -------------------------------
class App:
    """Detector, embedder and gallery for one command, each built only when first used: `list`
    never loads the model, `identify` never opens a camera."""

    def __init__(self, cfg: Config, db: str | None = None) -> None:
        self.cfg = cfg
        self.db_path = Path(db).expanduser() if db else cfg.gallery_path()
        self._gallery: Gallery | None = None

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
                                 input_width=d.input_width, score_threshold=d.score_threshold,
                                 min_face=d.min_face)
        except (FileNotFoundError, ValueError, ImportError) as e:
            raise UserError(f"detector: {e}") from None

    @cached_property
    def recognizer(self) -> Recognizer:
        selftest.check(self.detector, self.embedder)  # a wrong numpy/OpenCV/LiteRT stops here
        return Recognizer(self.detector, self.embedder)

    def gallery(self, create: bool = True) -> Gallery | None:
        """The gallery at ``db_path``; None when it does not exist and ``create`` is False."""
        if self._gallery is None:
            if not create and not self.db_path.exists():
                return None
            self._gallery = Gallery(self.db_path, self.fingerprint,
                                    threshold=self.cfg.recognizer.threshold)
        return self._gallery

    def existing_gallery(self) -> Gallery:
        g = self.gallery(create=False)
        if g is None:
            raise UserError(f"no gallery at {self.db_path} (enrol someone first: "
                            f"{PROG} enroll --name NAME --images PHOTO)")
        return g

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None


# --- images and faces ---------------------------------------------------------------------------
def read_image(path: str | Path) -> np.ndarray:
    """An image file as BGR uint8. IMREAD_COLOR converts greyscale and RGBA to BGR and applies
    the EXIF orientation (phone photos), so every caller sees the same 3-channel picture."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if not p.is_file():
        raise UserError(f"{path}: not a file")
    try:
        data = np.fromfile(p, np.uint8)  # imdecode, unlike imread, takes non-ASCII paths
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: not an image OpenCV can decode")
    return image


def expand_images(paths: list[str]) -> list[Path]:
    """Files as given; folders -> the images in them (sorted, not recursive)."""
    out: list[Path] = []
    for text in paths:
        p = Path(text).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{text}: no images in this folder "
                                f"({', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...)")
            out.extend(found)
        elif not p.exists():
            raise UserError(f"{text}: no such file or folder")
        else:
            out.append(p)
    return out


def dominant_face(results: list[FaceResult]) -> FaceResult | None:
    """The one face a photo is about: the largest, unless another is of similar size."""
    if not results:
        return None
    if len(results) > 1 and results[1].face.size >= SIMILAR_SIZE * results[0].face.size:
        return None
    return results[0]


def pick_face(results: list[FaceResult], label: str) -> FaceResult:
    face = dominant_face(results)
    if face is None:
        if not results:
            raise UserError(f"{label}: no face found (need a clear, frontal face of at least the "
                            "detector's min_face pixels)")
        raise UserError(f"{label}: {len(results)} faces of similar size; crop the photo to the "
                        "one person")
    return face


def box_list(face_result: FaceResult) -> list[int]:
    return [round(float(v)) for v in face_result.face.box]


def face_json(r: FaceResult, match: Match | None) -> dict[str, Any]:
    """One face for --json output: name (None = unknown), score (cosine with the best match;
    None when there is no gallery), box [x, y, w, h]."""
    return {"name": None if match is None else match.name,
            "score": None if match is None else round(float(match.score), 4),
            "box": box_list(r), "quality": round(float(r.quality), 3),
            "detection_score": round(float(r.face.score), 3)}


def face_text(r: FaceResult, match: Match | None) -> str:
    x, y, w, h = box_list(r)
    who = "unknown" if match is None or match.name is None else match.name
    score = "" if match is None else f" {match.score:.3f}"
    return f"{who}{score} at x={x} y={y} w={w} h={h}"


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


@dataclass
class Sample:
    """One enrolment image: the chosen face (embedded) and where it came from."""

    result: FaceResult
    source: str


def samples_from_images(app: App, paths: list[str] | list[Path]) -> list[Sample]:
    """Check every image before anything is written: a bad one stops the whole enrolment."""
    # Decode all first: a missing or broken file is reported before the model is even loaded.
    images = [(str(path), read_image(path)) for path in expand_images([str(p) for p in paths])]
    return [Sample(pick_face(app.recognizer.analyze(image), path), path)
            for path, image in images]


def samples_from_source(app: App, spec: str, count: int, min_quality: float,
                        timeout: float) -> list[Sample]:
    """Up to ``count`` good frames from a camera, a file or a folder: one dominant face, quality
    >= ``min_quality``, the same person as the frames before (someone walking past the camera
    is not enrolled), video frames a few apart. A countdown first for a live camera."""
    cam = app.cfg.camera
    source = open_source(spec, cam.width, cam.height, cam.fps)
    # Consecutive video frames are near duplicates; a folder's photos are not.
    spacing = 1 if isinstance(source, ImageFolderSource) else FRAME_SPACING
    samples: list[Sample] = []
    last = -spacing
    try:
        if source.live:
            _countdown(source)
        deadline = time.monotonic() + timeout
        # disable=None: no bar when stderr is not a terminal (logs stay clean).
        with tqdm(total=count, desc="good frames", unit="frame", file=sys.stderr,
                  leave=False, disable=None) as bar:
            while len(samples) < count and time.monotonic() < deadline:
                frame = source.read()
                if frame is None:
                    break
                if frame.index - last < spacing:
                    continue
                face = dominant_face(app.recognizer.analyze(frame.image, embed=False))
                if face is None or face.quality < min_quality:
                    bar.set_postfix_str("no single face" if face is None
                                        else f"quality {face.quality:.2f} < {min_quality}")
                    continue
                face.embedding = app.embedder.embed([face.crop])[0]
                if samples and not same_person(samples, face, app.cfg.recognizer.threshold):
                    bar.set_postfix_str("a different face: skipped")
                    continue
                samples.append(Sample(face, f"{source.name}#{frame.index}"))
                last = frame.index
                bar.set_postfix_str(f"quality {face.quality:.2f}")
                bar.update(1)
    finally:
        source.close()
    if len(samples) < count:
        raise UserError(f"only {len(samples)} of {count} good frames from {spec} "
                        f"(one clear face, quality >= {min_quality}); nothing written: face the "
                        "camera in good light, or lower --count / --min-quality")
    return samples


def same_person(samples: list[Sample], face: FaceResult, threshold: float) -> bool:
    """The face matches the mean of the samples so far at the recognition threshold."""
    mean = np.mean([s.result.embedding for s in samples], axis=0)
    return float(face.embedding @ mean) / max(float(np.linalg.norm(mean)), 1e-12) >= threshold


def _countdown(source: FrameSource) -> None:
    """Count down on stderr while reading (and dropping) frames, so the camera's buffer is
    fresh when collection starts."""
    for n in range(COUNTDOWN_S, 0, -1):
        print(f"look at the camera: {n}...", file=sys.stderr, flush=True)
        end = time.monotonic() + 1.0
        while time.monotonic() < end and source.read() is not None:
            pass


def enroll_samples(gallery: Gallery, name: str, samples: list[Sample],
                   notes: str | None = None) -> int:
    return gallery.enroll(name, np.stack([s.result.embedding for s in samples]).astype(np.float32),
                          crops=[s.result.crop for s in samples],
                          sources=[s.source for s in samples],
                          qualities=[float(s.result.quality) for s in samples], notes=notes)


# --- running the pipeline -----------------------------------------------------------------------
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


def make_pipeline(app: App, source: FrameSource, gallery: Gallery | None, sinks: list[Any], *,
                  max_frames: int | None = None, preview: Preview | None = None,
                  heartbeat: Callable[[], None] | None = None) -> Pipeline:
    t = app.cfg.tracking
    folder = app.cfg.snapshots_dir()
    try:
        snapshots = SnapshotStore(folder, app.cfg.snapshots.max_files) if folder else None
    except OSError as e:
        raise ConfigError(f"snapshots.dir: cannot use {folder}: {e.strerror or e}") from None
    # Files are processed frame by frame (every frame counts in the demo and the bench); live
    # sources drop stale frames so recognition never lags behind the camera.
    return Pipeline(source, app.recognizer, gallery, sinks, embed_every=t.embed_every,
                    vote_window=t.vote_window, iou_threshold=t.iou_threshold, max_age=t.max_age,
                    cut_threshold=t.cut_threshold or None, min_face=app.cfg.detector.min_face,
                    preview=preview, max_frames=max_frames, realtime=source.live,
                    snapshots=snapshots, heartbeat=heartbeat)


def run_pipeline(app: App, source: FrameSource, gallery: Gallery | None, sinks: list[Any], *,
                 max_frames: int | None = None, preview: Preview | None = None) -> PipelineStats:
    """One run to the end of a file (demo, bench); Ctrl-C stops it cleanly, with a summary."""
    try:
        pipeline = make_pipeline(app, source, gallery, sinks, max_frames=max_frames,
                                 preview=preview)
        restore = install_signal_handlers(pipeline.stop)
        try:
            return pipeline.run()
        finally:
            restore()
    finally:
        if preview is not None:
            preview.close()
        source.close()


class _Running:
    """A built pipeline and what to close after it; ``service.serve`` enters it."""

    def __init__(self, pipeline: Pipeline, closers: list[Callable[[], None]]) -> None:
        self.pipeline = pipeline
        self.closers = closers

    def __enter__(self) -> Pipeline:
        return self.pipeline

    def __exit__(self, *exc: object) -> None:
        close_all(self.closers)


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


# --- commands -----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    overrides: dict[str, dict[str, Any]] = {}
    if args.source is not None:
        overrides["camera"] = {"source": args.source}
    if args.preview is not None:
        overrides["preview"] = {"enabled": args.preview}

    def settings(loaded: Config) -> Config:
        return configmod.replace(loaded, **overrides)  # flags win over the file, also on reload

    def build(cfg: Config, heartbeat: Callable[[], None]) -> _Running:
        app = App(cfg, args.db)
        cam = cfg.camera
        opened: list[Any] = [app]
        try:
            source = open_source(cam.source, cam.width, cam.height, cam.fps)
            opened.append(source)
            if cam.name:
                source.name = cam.name
            gallery = app.gallery()
            people = [p.name for p in gallery.people()]
            if not people:
                log.warning("the gallery %s is empty: every face will be unknown (enrol with "
                            "`%s enroll`)", app.db_path, PROG)
            sinks = ([JsonLinesSink(args.events)] if args.events
                     else make_sinks(sink_specs(cfg, people)) or [JsonLinesSink(None)])
            opened.extend(sinks)
            preview = make_preview(cfg.preview.enabled, f"{PROG}: {cam.source}")
            if preview is not None:
                opened.append(preview)
            pipeline = make_pipeline(app, source, gallery, sinks, max_frames=args.max_frames,
                                     preview=preview, heartbeat=heartbeat)
        except BaseException:
            close_all(opened)
            raise
        return _Running(pipeline, opened)

    # serve(): READY/WATCHDOG for systemd, SIGTERM/SIGINT stop, SIGHUP reloads the config file.
    stats = serve(settings(cfg), build,
                  reload_settings=lambda: settings(load_settings(args)))
    print(stats.summary(), file=sys.stderr)
    return 0


def cmd_enroll(args: argparse.Namespace, cfg: Config) -> int:
    name = validate_name(args.name)  # before any work: a bad name wastes no camera time
    app = App(cfg, args.db)
    try:
        if args.images:
            samples = samples_from_images(app, args.images)
        else:
            samples = samples_from_source(app, args.source or cfg.camera.source, args.count,
                                          args.min_quality, args.timeout)
        # Everything is checked; only now is the gallery opened (created) and written, in one
        # transaction.
        enroll_samples(app.gallery(), name, samples, args.notes)
    finally:
        app.close()
    low = [s.source for s in samples if s.result.quality < args.min_quality]
    print(f"enrolled {name}: {len(samples)} face(s) into {app.db_path}")
    if low:
        print(f"note: low quality (< {args.min_quality}) in {', '.join(low)}: recognition may "
              "be less reliable; better-lit frontal photos help", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    app = App(cfg, args.db)
    gallery = app.gallery(create=False)
    try:
        people = [] if gallery is None else gallery.people()
    finally:
        app.close()
    if args.json:
        print_json([{"name": p.name, "embeddings": p.embeddings, "other_model": p.other_model,
                     "created_at": p.created_at, "notes": p.notes} for p in people])
        return 0
    if not people:
        print(f"nobody enrolled in {app.db_path}")
        return 0
    width = max(len("name"), *(len(p.name) for p in people))
    print(f"{'name':<{width}}  faces  enrolled")
    for p in people:
        stale = f"  ({p.other_model} from another model: run `{PROG} reembed`)" \
            if p.other_model else ""
        print(f"{p.name:<{width}}  {p.embeddings:>5}  {p.created_at}{stale}")
    print(f"{len(people)} people in {app.db_path}")
    return 0


def _require_person(gallery: Gallery, name: str, db: Path) -> None:
    names = [p.name for p in gallery.people()]
    if name not in names:
        near = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(f"nobody named {name!r} in {db}{hint}")


def cmd_remove(args: argparse.Namespace, cfg: Config) -> int:
    app = App(cfg, args.db)
    try:
        gallery = app.existing_gallery()
        _require_person(gallery, args.name, app.db_path)
        if not args.yes:
            if not sys.stdin.isatty():
                raise UserError(f"not removing {args.name!r} without confirmation: add --yes")
            answer = input(f"remove {args.name!r} and all their faces from {app.db_path}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing removed")
                return 1
        gallery.remove(args.name)
    finally:
        app.close()
    print(f"removed {args.name}")
    return 0


def cmd_rename(args: argparse.Namespace, cfg: Config) -> int:
    new = validate_name(args.new)
    app = App(cfg, args.db)
    try:
        gallery = app.existing_gallery()
        _require_person(gallery, args.old, app.db_path)
        gallery.rename(args.old, new)
    finally:
        app.close()
    print(f"renamed {args.old} -> {new}")
    return 0


def cmd_reembed(args: argparse.Namespace, cfg: Config) -> int:
    app = App(cfg, args.db)
    try:
        n = app.existing_gallery().reembed(app.embedder.embed)
    finally:
        app.close()
    print(f"re-embedded {n} face(s) with {app.embedder.name} ({app.fingerprint[:12]})")
    return 0


def _with_threshold(cfg: Config, threshold: float | None) -> Config:
    return cfg if threshold is None else configmod.replace(
        cfg, recognizer={"threshold": threshold})


def cmd_identify(args: argparse.Namespace, cfg: Config) -> int:
    app = App(_with_threshold(cfg, args.threshold), args.db)
    images = [(path, read_image(path)) for path in args.images]  # all readable before any work
    out, faceless = [], []
    try:
        gallery = app.gallery(create=False)
        if gallery is None:
            log.warning("no gallery at %s: every face is unknown", app.db_path)
        for path, image in images:
            results = app.recognizer.analyze(image)
            matches: list[Match | None] = [None] * len(results)
            if gallery is not None and results:
                matches = list(gallery.match_many(np.stack([r.embedding for r in results])))
            out.append((path, results, matches))
            if not results:
                faceless.append(path)
    finally:
        app.close()
    if args.json:
        print_json([{"image": path, "faces": [face_json(r, m) for r, m in zip(rs, ms,
                                                                             strict=True)]}
                    for path, rs, ms in out])
    else:
        for path, rs, ms in out:
            for r, m in zip(rs, ms, strict=True):
                print(f"{path}: {face_text(r, m)}")
    for path in faceless:
        print(f"{PROG}: {path}: no face found", file=sys.stderr)
    return 1 if faceless else 0


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    cfg = _with_threshold(cfg, args.threshold)
    app = App(cfg, args.db)
    images = [(path, read_image(path)) for path in (args.image_a, args.image_b)]
    try:
        faces = [pick_face(app.recognizer.analyze(img), path) for path, img in images]
        gallery = app.gallery(create=False)
        matches: list[Match | None] = [None, None]
        if gallery is not None:
            matches = list(gallery.match_many(np.stack([f.embedding for f in faces])))
    finally:
        app.close()
    similarity = float(faces[0].embedding @ faces[1].embedding)
    threshold = cfg.recognizer.threshold
    same = similarity >= threshold
    if args.json:
        print_json({"similarity": round(similarity, 4), "threshold": threshold, "same": same,
                    "faces": [{"image": path, **face_json(f, m)}
                              for (path, _), f, m in zip(images, faces, matches, strict=True)]})
    else:
        verdict = "same person" if same else "different people"
        print(f"{verdict}: similarity {similarity:.3f} (threshold {threshold:.2f})")
    return 0 if same else 1


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


def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    if args.preview is not None:
        cfg = configmod.replace(cfg, preview={"enabled": args.preview})
    app = App(cfg, args.db)
    tally = EventTally()
    sinks = [JsonLinesSink(None), tally]
    try:
        with demo_gallery(app, use_db=args.db is not None) as (gallery, _):
            source = open_source(str(DEMO_CLIP))
            source.name = "demo"  # events name the camera, not a path inside the install
            stats = run_pipeline(app, source, gallery, sinks, max_frames=args.max_frames,
                                 preview=make_preview(cfg.preview.enabled, f"{PROG} demo"))
    finally:
        close_all(sinks)
    who = ", ".join(f"{n} ({k} track{'s' if k > 1 else ''})"
                    for n, k in sorted(tally.recognized.items())) or "nobody"
    print(f"demo: {stats.frames} frames at {stats.fps:.1f} fps; recognised: {who}; "
          f"unknown: {tally.unknown} track(s)")
    return 0 if DEMO_PERSON in tally.recognized else 1


def embed_timing(embedder: Embedder, crop: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median and p90 milliseconds of one embedding, after one warm-up call."""
    embedder.embed_one(crop)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedder.embed_one(crop)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 90))


def cmd_bench(args: argparse.Namespace, cfg: Config) -> int:
    spec = args.source or str(DEMO_CLIP)
    if not Path(spec).expanduser().is_file():
        raise UserError(f"--source {spec}: not a file (bench needs a video or image file, so "
                        "runs are comparable)")
    app = App(cfg, args.db)
    with bench_gallery(app, use_db=args.db is not None) as (gallery, crop):
        stats = run_pipeline(app, open_source(spec), gallery, [], max_frames=args.frames)
        emb_median, emb_p90 = embed_timing(app.embedder, crop, repeats=50)
    report = {
        "source": spec, "model": app.embedder.name, "runtime": app.embedder.runtime,
        "threads": cfg.recognizer.threads, "detector": cfg.detector.backend,
        "frames": stats.frames, "fps": round(stats.fps, 2), "faces": stats.faces,
        "embeddings": stats.embeddings,
        "stages_ms": {k: {"median": round(t.median_ms, 2), "p90": round(t.p90_ms, 2),
                          "count": t.count} for k, t in stats.timings.items()},
        "embed_ms_per_face": {"median": round(emb_median, 2), "p90": round(emb_p90, 2)},
    }
    if args.json:
        print_json(report)
        return 0
    print(f"{spec}: {stats.frames} frames, {stats.fps:.1f} fps end to end "
          f"({app.embedder.name} on {app.embedder.runtime}, {cfg.recognizer.threads} threads, "
          f"{cfg.detector.backend})")
    print(f"{'stage':<13} {'median ms':>10} {'p90 ms':>10} {'count':>6}")
    for name, t in stats.timings.items():
        print(f"{name:<13} {t.median_ms:>10.2f} {t.p90_ms:>10.2f} {t.count:>6}")
    print(f"embedding per face: median {emb_median:.2f} ms, p90 {emb_p90:.2f} ms")
    return 0


def cmd_doctor(args: argparse.Namespace, cfg: Config | None) -> int:
    checks = doctor.main_checks(cfg, config_error=getattr(args, "config_error", None),
                                gallery=args.db, camera=not args.no_camera)
    print(doctor.report(checks))
    return doctor.exit_status(checks)


# --- argument parsing ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (its default prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between -1 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    opts = common.add_argument_group("common options")
    opts.add_argument("--config", metavar="PATH",
                      help="settings file (default: $EDGEFACE_CAM_CONFIG, else "
                           "/etc/edgeface-cam/config.yaml if present, else built-in defaults)")
    opts.add_argument("--db", metavar="PATH",
                      help="gallery database (default: gallery.path from the config)")
    opts.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                      help="overrides logging.level from the config")
    opts.add_argument("--model", metavar="PATH",
                      help="overrides recognizer.model: a .tflite with its .json card beside it")
    opts.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      dest="settings",
                      help="overrides one config key, e.g. --set recognizer.threshold=0.4 "
                           "(repeatable; VALUE is YAML)")
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Real-time on-device face recognition (EdgeFace + LiteRT).",
        epilog=f"start with:  {PROG} demo\nhelp on one command:  {PROG} COMMAND --help")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[..., int], summary: str, examples: str,
            json_flag: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=textwrap.fill(summary, 79),
                           parents=[common, as_json] if json_flag else [common],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="examples:\n" + "\n".join(
                               f"  {PROG} {line}" for line in examples.strip().splitlines()))
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "Recognise faces from the camera (the service's main loop); one JSON "
            "event per face track on stdout or the configured sinks.",
            "run\nrun --source /dev/video0 --no-preview\n"
            "run --source rtsp://user:pass@cam.local/stream --events /tmp/events.jsonl\n"
            "run --source clip.mp4 --max-frames 300")
    p.add_argument("--source", metavar="SPEC",
                   help="overrides camera.source: picamera2, 0, /dev/video0, URL, file or folder")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=None,
                   help="show a window (default: preview.enabled; auto = if a display exists)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--events", metavar="PATH",
                   help="write events as JSON lines to PATH ('-' = stdout) instead of the "
                        "configured sinks")

    p = add("enroll", cmd_enroll, "Add a person to the gallery from photos, or from the camera "
            "(collects --count good frames). Nothing is written unless every photo has one clear "
            "face.",
            "enroll --name \"Ada Lovelace\" --images ada1.jpg ada2.jpg\n"
            "enroll --name Ada --images photos/ada/\n"
            "enroll --name Ada --count 5              # from the camera\n"
            "enroll --name Ada --source clip.mp4 --count 3")
    p.add_argument("--name", required=True, help="the person's name (existing: adds faces)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--images", nargs="+", metavar="PATH", help="photo files or folders")
    how.add_argument("--source", metavar="SPEC",
                     help="camera or file to collect frames from (default: camera.source)")
    p.add_argument("--count", type=_positive_int, default=5, metavar="N",
                   help="frames to collect from the camera (default: 5)")
    p.add_argument("--min-quality", type=float, default=0.5, metavar="Q",
                   help="camera frames below this quality (0-1: size, sharpness, frontal) are "
                        "skipped; photos below it are enrolled with a note (default: 0.5)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="give up collecting from the camera after S seconds (default: 60)")
    p.add_argument("--notes", help="free text stored with the person")

    add("list", cmd_list, "List the enrolled people.", "list\nlist --json --db gallery.db",
        json_flag=True)

    p = add("remove", cmd_remove, "Remove a person and all their faces.",
            "remove --name Ada\nremove --name Ada --yes")
    p.add_argument("--name", required=True)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = add("rename", cmd_rename, "Rename a person.", "rename Ada \"Ada Lovelace\"")
    p.add_argument("old")
    p.add_argument("new")

    add("reembed", cmd_reembed, "Re-embed the stored face crops with the current model (after a "
        "model change; faces from another model are never compared).", "reembed")

    p = add("identify", cmd_identify, "Find the faces in still images and name them. Exit "
            "status 1 if an image has no face.",
            "identify photo.jpg\nidentify *.jpg --json\nidentify group.jpg --threshold 0.45",
            json_flag=True)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--threshold", type=_unit_float, metavar="T",
                   help="overrides recognizer.threshold (cosine, -1..1)")

    p = add("verify", cmd_verify, "Are two photos the same person? Compares the main face of "
            "each; exit status 0 = same, 1 = different.",
            "verify a.jpg b.jpg\nverify a.jpg b.jpg --json --threshold 0.4", json_flag=True)
    p.add_argument("image_a", metavar="IMAGE_A")
    p.add_argument("image_b", metavar="IMAGE_B")
    p.add_argument("--threshold", type=_unit_float, metavar="T",
                   help="overrides recognizer.threshold (cosine, -1..1)")

    p = add("demo", cmd_demo, f"Enrol the bundled {DEMO_PERSON} photo into a temporary gallery, "
            "run on the bundled clip, print the events and who was recognised.",
            "demo\ndemo --no-preview")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=None,
                   help="show a window (default: preview.enabled; auto = if a display exists)")
    p.add_argument("--max-frames", type=_positive_int, metavar="N", help="stop after N frames")

    p = add("bench", cmd_bench, "Per-stage latency (median, p90), end-to-end FPS and embedding "
            "time per face on a file (every frame processed).",
            "bench\nbench --source street.mp4 --frames 100 --json", json_flag=True)
    p.add_argument("--source", metavar="FILE", help="video or image file (default: the demo clip)")
    p.add_argument("--frames", type=_positive_int, default=200, metavar="N",
                   help="frames to process (default: 200)")

    p = add("doctor", cmd_doctor, "Check the config, runtime, model and its self-test, "
            "detector, camera, gallery and display; print what is wrong and how to fix it. "
            "Changes nothing.", "doctor\ndoctor --config /etc/edgeface-cam/config.yaml "
            "--no-camera")
    p.add_argument("--no-camera", action="store_true", help="do not open the camera")
    return parser


def load_settings(args: argparse.Namespace) -> Config:
    """The config file, then the --model / --set flags over it (also on a service reload)."""
    cfg = configmod.override(configmod.load(args.config), args.settings)
    if args.model:
        cfg = configmod.replace(cfg, recognizer={"model": args.model})
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            cfg: Config | None = load_settings(args)
        except ConfigError as e:
            if args.command != "doctor":
                raise
            cfg, args.config_error = None, str(e)
        configure_logging(args.log_level or (cfg.logging.level if cfg else "INFO"))
        # OpenCV's own C++ warnings (e.g. the DNN engine's target notice) are noise to a user.
        quiet_opencv()
        return int(args.func(args, cfg))
    except USER_ERRORS as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
