"""The ``edgeface-cam`` command line: run, enroll, list, remove, rename, reembed, identify, verify,
demo, bench, doctor.

The parser and thin ``cmd_*`` functions: each builds what it needs through ``app.App`` (the
running system), ``enroll`` (collecting faces) or ``demo``, and reports. A user mistake ends with
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import __version__, doctor
from . import config as configmod
from .app import PROG, App, UserError, build_running, run_to_end
from .compat import quiet_opencv
from .config import LOG_LEVELS, Config, ConfigError
from .demo import (
    DEMO_CLIP,
    DEMO_PERSON,
    EventTally,
    bench_gallery,
    demo_gallery,
    embed_timing,
)
from .embed import SelfTestFailed
from .enroll import enroll_samples, pick_face, read_image, samples_from_images, samples_from_source
from .events import JsonLinesSink, SinkError
from .gallery import Gallery, GalleryError, Match, validate_name
from .recognize import FaceResult
from .runtime import RuntimeMissing
from .service import configure_logging, serve
from .sources import SourceError, open_source

log = logging.getLogger("edgeface_cam.cli")

EXIT_USER = 2
USER_ERRORS = (UserError, ConfigError, GalleryError, SourceError, SinkError, SelfTestFailed,
               RuntimeMissing)


# --- output --------------------------------------------------------------------------------------
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


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- commands -----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    overrides: dict[str, dict[str, Any]] = {}
    if args.source is not None:
        overrides["camera"] = {"source": args.source}
    if args.preview is not None:
        overrides["preview"] = {"enabled": args.preview}

    def settings(loaded: Config) -> Config:
        return configmod.replace(loaded, **overrides)  # flags win over the file, also on reload

    def build(cfg: Config, heartbeat: Callable[[], None]) -> Any:
        return build_running(cfg, heartbeat, db=args.db, events_path=args.events,
                             max_frames=args.max_frames)

    # serve(): READY/WATCHDOG for systemd, SIGTERM/SIGINT stop, SIGHUP reloads the config file.
    stats = serve(settings(cfg), build,
                  reload_settings=lambda: settings(load_settings(args)))
    print(stats.summary(), file=sys.stderr)
    return 0


def cmd_enroll(args: argparse.Namespace, cfg: Config) -> int:
    name = validate_name(args.name)  # before any work: a bad name wastes no camera time
    with App(cfg, args.db) as app:
        if args.images:
            samples = samples_from_images(app, args.images)
        else:
            samples = samples_from_source(app, args.source or cfg.camera.source, args.count,
                                          args.min_quality, args.timeout, say=_stderr)
        # Everything is checked; only now is the gallery opened (created) and written, in one
        # transaction.
        enroll_samples(app.gallery(), name, samples, args.notes)
    low = [s.source for s in samples if s.result.quality < args.min_quality]
    print(f"enrolled {name}: {len(samples)} face(s) into {app.db_path}")
    if low:
        print(f"note: low quality (< {args.min_quality}) in {', '.join(low)}: recognition may "
              "be less reliable; better-lit frontal photos help", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        gallery = app.gallery(create=False)
        people = [] if gallery is None else gallery.people()
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


def _confirm(question: str, refusal: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError(refusal)
    return input(question).strip().lower() in ("y", "yes")


def cmd_remove(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        gallery = app.existing_gallery()
        _require_person(gallery, args.name, app.db_path)
        if not args.yes and not _confirm(
                f"remove {args.name!r} and all their faces from {app.db_path}? [y/N] ",
                f"not removing {args.name!r} without confirmation: add --yes"):
            print("nothing removed")
            return 1
        gallery.remove(args.name)
    print(f"removed {args.name}")
    return 0


def cmd_rename(args: argparse.Namespace, cfg: Config) -> int:
    new = validate_name(args.new)
    with App(cfg, args.db) as app:
        gallery = app.existing_gallery()
        _require_person(gallery, args.old, app.db_path)
        gallery.rename(args.old, new)
    print(f"renamed {args.old} -> {new}")
    return 0


def cmd_reembed(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        n = app.existing_gallery().reembed(app.embedder.embed)
    print(f"re-embedded {n} face(s) with {app.embedder.name} ({app.fingerprint[:12]})")
    return 0


def _with_threshold(cfg: Config, threshold: float | None) -> Config:
    return cfg if threshold is None else configmod.replace(
        cfg, recognizer={"threshold": threshold})


def _matches(gallery: Gallery | None, results: list[FaceResult]) -> list[Match | None]:
    if gallery is None or not results:
        return [None] * len(results)
    return list(gallery.match_many(np.stack([r.embedding for r in results])))


def cmd_identify(args: argparse.Namespace, cfg: Config) -> int:
    images = [(path, read_image(path)) for path in args.images]  # all readable before any work
    out = []
    with App(_with_threshold(cfg, args.threshold), args.db) as app:
        gallery = app.gallery(create=False)
        if gallery is None:
            log.warning("no gallery at %s: every face is unknown", app.db_path)
        for path, image in images:
            results = app.recognizer.analyze(image)
            out.append((path, results, _matches(gallery, results)))
    if args.json:
        print_json([{"image": path, "faces": [face_json(r, m) for r, m in zip(rs, ms,
                                                                             strict=True)]}
                    for path, rs, ms in out])
    else:
        for path, rs, ms in out:
            for r, m in zip(rs, ms, strict=True):
                print(f"{path}: {face_text(r, m)}")
    faceless = [path for path, rs, _ in out if not rs]
    for path in faceless:
        print(f"{PROG}: {path}: no face found", file=sys.stderr)
    return 1 if faceless else 0


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    cfg = _with_threshold(cfg, args.threshold)
    images = [(path, read_image(path)) for path in (args.image_a, args.image_b)]
    with App(cfg, args.db) as app:
        faces = [pick_face(app.recognizer.analyze(img), path) for path, img in images]
        matches = _matches(app.gallery(create=False), faces)
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


def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    if args.preview is not None:
        cfg = configmod.replace(cfg, preview={"enabled": args.preview})
    app = App(cfg, args.db)
    tally = EventTally()
    sinks = [app.own(JsonLinesSink(None)), tally]
    with demo_gallery(app, use_db=args.db is not None) as (gallery, _):
        source = open_source(str(DEMO_CLIP))
        source.name = "demo"  # events name the camera, not a path inside the install
        stats = run_to_end(app, source, gallery, sinks, max_frames=args.max_frames,
                           preview=app.preview(f"{PROG} demo"))
    who = ", ".join(f"{n} ({k} track{'s' if k > 1 else ''})"
                    for n, k in sorted(tally.recognized.items())) or "nobody"
    print(f"demo: {stats.frames} frames at {stats.fps:.1f} fps; recognised: {who}; "
          f"unknown: {tally.unknown} track(s)")
    return 0 if DEMO_PERSON in tally.recognized else 1


def _bench_report(spec: str, app: App, stats: Any, emb: tuple[float, float]) -> dict[str, Any]:
    cfg = app.cfg
    return {
        "source": spec, "model": app.embedder.name, "runtime": app.embedder.runtime,
        "threads": cfg.recognizer.threads, "detector": cfg.detector.backend,
        "frames": stats.frames, "fps": round(stats.fps, 2), "faces": stats.faces,
        "embeddings": stats.embeddings,
        "stages_ms": {k: {"median": round(t.median_ms, 2), "p90": round(t.p90_ms, 2),
                          "count": t.count} for k, t in stats.timings.items()},
        "embed_ms_per_face": {"median": round(emb[0], 2), "p90": round(emb[1], 2)},
    }


def cmd_bench(args: argparse.Namespace, cfg: Config) -> int:
    spec = args.source or str(DEMO_CLIP)
    if not Path(spec).expanduser().is_file():
        raise UserError(f"--source {spec}: not a file (bench needs a video or image file, so "
                        "runs are comparable)")
    app = App(cfg, args.db)
    with bench_gallery(app, use_db=args.db is not None) as (gallery, crop):
        stats = run_to_end(app, open_source(spec), gallery, [], max_frames=args.frames)
        emb_median, emb_p90 = embed_timing(app.embedder, crop, repeats=50)
    if args.json:
        print_json(_bench_report(spec, app, stats, (emb_median, emb_p90)))
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


class _Commands:
    """Adds subcommands, each with the common options, a summary and examples."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser,
                 as_json: argparse.ArgumentParser) -> None:
        self.sub, self.common, self.as_json = sub, common, as_json

    def add(self, name: str, func: Callable[..., int], summary: str, examples: str,
            json_flag: bool = False) -> argparse.ArgumentParser:
        parents = [self.common, self.as_json] if json_flag else [self.common]
        p = self.sub.add_parser(name, help=summary, description=textwrap.fill(summary, 79),
                                parents=parents,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(
                                    f"  {PROG} {line}" for line in examples.strip().splitlines()))
        p.set_defaults(func=func)
        return p


def _add_everyday_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
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


def _add_tool_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
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
    cmds = _Commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
                     common, as_json)
    _add_everyday_commands(cmds.add)
    _add_tool_commands(cmds.add)
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
