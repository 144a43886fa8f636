"""The ``edgeface-cam`` command line: run, enroll, list, remove, rename, reembed, identify, verify,
demo, bench, doctor.

The parser and thin ``cmd_*`` functions: each builds what it needs through ``app.App`` (the
running system), ``enroll`` (collecting faces) or ``demo``, and reports. A user mistake ends with
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import PROG, __version__, doctor
from . import config as configmod
from .app import App, UserError, build_running, open_copies, run_to_end
from .cli_library import add_library_commands
from .cli_web import add_web_commands, demo_web, web_beside
from .cliargs import (
    EXIT_USER,
    Commands,
    Parser,
    fraction,
    path_arg,
    positive_float,
    positive_int,
    threshold_arg,
)
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
from .enroll import (
    enroll_folder,
    enroll_person,
    pick_face,
    read_image,
    samples_from_images,
    samples_from_source,
)
from .events import JsonLinesSink, SinkError
from .gallery import Gallery, GalleryError, Match, validate_name
from .recognize import FaceResult
from .report import bench_json, face_json, face_text, print_json
from .runtime import RuntimeMissing
from .service import configure_logging, serve
from .sources import SourceError, open_source

log = logging.getLogger("edgeface_cam.cli")

USER_ERRORS = (UserError, ConfigError, GalleryError, SourceError, SinkError, SelfTestFailed,
               RuntimeMissing)


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
        return web.attach(build_running(cfg, heartbeat, db=args.db, events_path=args.events,
                                        max_frames=args.max_frames))

    # serve(): READY/WATCHDOG for systemd, SIGTERM/SIGINT stop, SIGHUP reloads the config file.
    with web_beside(settings(cfg), args.db) as web:  # the web UI in its own thread (web.enabled)
        stats = serve(settings(cfg), build,
                      reload_settings=lambda: settings(load_settings(args)))
    print(stats.summary(), file=sys.stderr)
    return 0


def cmd_enroll(args: argparse.Namespace, cfg: Config) -> int:
    if args.folder:
        return _enroll_folder(args, cfg)
    if args.name is None:
        raise UserError("enroll needs --name NAME (or --folder DIR: one subfolder per person)")
    name = validate_name(args.name)  # before any work: a bad name wastes no camera time
    with App(cfg, args.db) as app:
        if args.images:
            samples = samples_from_images(app, args.images)
        else:
            samples = samples_from_source(app, args.source or cfg.camera.source, args.count,
                                          args.min_quality, args.timeout, say=_stderr)
        # Everything is checked; only now is the gallery opened (created) and written, in one
        # transaction.
        done = enroll_person(app, name, samples, force=args.force, notes=args.notes)
    for source in done.skipped:
        _stderr(f"note: skipped {source}: the same photo again (already enrolled or given twice)")
    low = [s.source for s in samples if s.result.quality < args.min_quality]
    print(f"enrolled {done.name}: {done.faces} face(s) into {app.db_path}")
    if low:
        _stderr(f"note: low quality (< {args.min_quality}) in {', '.join(low)}: recognition may "
                "be less reliable; better-lit frontal photos help")
    return 0


def _enroll_folder(args: argparse.Namespace, cfg: Config) -> int:
    if args.name or args.images or args.source:
        raise UserError("--folder takes the names from its subfolders: leave out --name, "
                        "--images and --source")
    with App(cfg, args.db) as app:
        done, skipped = enroll_folder(app, Path(args.folder).expanduser(), force=args.force,
                                      say=_stderr)
    faces = sum(d.faces for d in done)
    print(f"enrolled {len(done)} people ({faces} faces) into {app.db_path}; "
          f"skipped {len(skipped)}")
    return 1 if skipped else 0


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        gallery = app.gallery(create=False)
        people = [] if gallery is None else gallery.people()
        in_force = None if gallery is None else gallery.describe_threshold()
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
    print(f"{len(people)} people in {app.db_path}; {in_force}")
    return 0


def _confirm(question: str, refusal: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError(refusal)
    return input(question).strip().lower() in ("y", "yes")


def cmd_remove(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        gallery = app.existing_gallery()
        name = gallery.require_person(args.name).name
        if not args.yes and not _confirm(
                f"remove {name!r} and all their faces from {app.db_path}? [y/N] ",
                f"not removing {name!r} without confirmation: add --yes"):
            print("nothing removed")
            return 1
        gallery.remove(name)
    print(f"removed {name}")
    return 0


def cmd_rename(args: argparse.Namespace, cfg: Config) -> int:
    new = validate_name(args.new)
    with App(cfg, args.db) as app:
        gallery = app.existing_gallery()
        old = gallery.rename(args.old, new)  # the stored name, or a did-you-mean error
    print(f"renamed {old} -> {new}")
    return 0


def cmd_reembed(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        n = app.existing_gallery().reembed(app.embedder.embed)
    print(f"re-embedded {n} face(s) with {app.embedder.name} ({app.fingerprint[:12]})")
    return 0


def _with_threshold(cfg: Config, threshold: float | str | None) -> Config:
    return cfg if threshold is None else configmod.replace(
        cfg, recognizer={"threshold": threshold})


def _matches(gallery: Gallery | None, results: list[FaceResult]) -> list[Match | None]:
    if gallery is None or not results:
        return [None] * len(results)
    return list(gallery.match_many(np.stack([r.embedding for r in results])))


def _read_all(paths: list[str]) -> tuple[list[tuple[str, Any]], list[str]]:
    """The images that decode, and the one-line errors of those that do not."""
    images, errors = [], []
    for path in paths:
        try:
            images.append((path, read_image(path)))
        except UserError as e:
            errors.append(str(e))
    return images, errors


def cmd_identify(args: argparse.Namespace, cfg: Config) -> int:
    images, unreadable = _read_all(args.images)  # a bad file is reported, the rest identified
    out = []
    if images:
        with App(_with_threshold(cfg, args.threshold), args.db) as app:
            gallery = app.matching_gallery()
            for path, image in images:
                results = app.recognizer.analyze(image, still=True)
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
    for error in unreadable:
        print(f"{PROG}: error: {error}", file=sys.stderr)
    return EXIT_USER if unreadable else 1 if faceless else 0


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    cfg = _with_threshold(cfg, args.threshold)
    images = [(path, read_image(path)) for path in (args.image_a, args.image_b)]
    with App(cfg, args.db) as app:
        faces = [pick_face(app.recognizer.analyze(img, still=True), path) for path, img in images]
        matches = _matches(app.matching_gallery() if app.db_path.exists() else None, faces)
        threshold = app.threshold.one_to_one()  # auto: a stranger passes at false_accept
    similarity = float(faces[0].embedding @ faces[1].embedding)
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
        if args.web:
            return demo_web(app, gallery, sinks, args.listen)
        source = open_source(str(DEMO_CLIP))
        source.name = "demo"  # events name the camera, not a path inside the install
        stats = run_to_end(app, source, gallery, sinks, max_frames=args.max_frames,
                           preview=app.preview(f"{PROG} demo"))
    who = ", ".join(f"{n} ({k} track{'s' if k > 1 else ''})"
                    for n, k in sorted(tally.recognized.items())) or "nobody"
    print(f"demo: {stats.frames} frames at {stats.fps:.1f} fps; recognised: {who}; "
          f"unknown: {tally.unknown} track(s)")
    return 0 if DEMO_PERSON in tally.recognized else 1


def cmd_bench(args: argparse.Namespace, cfg: Config) -> int:
    spec = args.source or str(DEMO_CLIP)
    if not Path(spec).expanduser().is_file():
        raise UserError(f"--source {spec}: not a file (bench needs a video or image file, so "
                        "runs are comparable)")
    app = App(cfg, args.db)
    with bench_gallery(app, use_db=args.db is not None) as (gallery, crop):
        stats = run_to_end(app, open_copies(spec, args.cameras), gallery, [],
                           max_frames=args.frames * args.cameras)
        emb_median, emb_p90 = embed_timing(app.embedder, crop, repeats=50)
    if args.json:
        print_json(bench_json(spec, app, stats, (emb_median, emb_p90)))
        return 0
    print(f"{spec}: {stats.frames} frames, {stats.fps:.1f} fps end to end "
          f"({app.embedder.name} on {app.embedder.runtime}, {cfg.recognizer.threads} threads, "
          f"{cfg.detector.backend})")
    print(f"{'stage':<13} {'median ms':>10} {'p90 ms':>10} {'count':>6}")
    for name, t in stats.timings.items():
        print(f"{name:<13} {t.median_ms:>10.2f} {t.p90_ms:>10.2f} {t.count:>6}")
    print(f"embedding per face: median {emb_median:.2f} ms, p90 {emb_p90:.2f} ms")
    print(f"motion gate: {stats.skipped} of {stats.frames} frames skipped")
    for name, c in stats.cameras.items() if len(stats.cameras) > 1 else ():
        print(c.line(name))
    return 0


def cmd_doctor(args: argparse.Namespace, cfg: Config | None) -> int:
    checks = doctor.main_checks(cfg, config_error=getattr(args, "config_error", None),
                                gallery=args.db, camera=not args.no_camera)
    print(doctor.report(checks))
    return doctor.exit_status(checks)


# --- argument parsing ---------------------------------------------------------------------------
def _add_everyday_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("run", cmd_run, "Recognise faces from the camera (the service's main loop); one JSON "
            "event per face track on stdout or the configured sinks.",
            "run\nrun --source /dev/video0 --no-preview\n"
            "run --source rtsp://user:pass@cam.local/stream --events /tmp/events.jsonl\n"
            "run --source clip.mp4 --max-frames 300")
    p.add_argument("--source", type=path_arg, metavar="SPEC",
                   help="overrides camera.source: picamera2, 0, /dev/video0, URL, file or folder")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=None,
                   help="show a window (default: preview.enabled; auto = if a display exists)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--events", type=path_arg, metavar="PATH",
                   help="write events as JSON lines to PATH ('-' = stdout) instead of the "
                        "configured sinks")

    p = add("enroll", cmd_enroll, "Add a person to the gallery from photos, or from the camera "
            "(collects --count good frames). Nothing is written unless every photo has one clear "
            "face.",
            "enroll --name \"Ada Lovelace\" --images ada1.jpg ada2.jpg\n"
            "enroll --name Ada --images photos/ada/\n"
            "enroll --name Ada --count 5              # from the camera\n"
            "enroll --name Ada --source clip.mp4 --count 3\n"
            "enroll --folder photos/              # photos/Ada/*.jpg, photos/Bob/*.jpg, ...")
    p.add_argument("--name", help="the person's name (existing: adds faces)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--folder", type=path_arg, metavar="DIR",
                     help="one person per subfolder, named after it, holding their photos")
    how.add_argument("--images", nargs="+", type=path_arg, metavar="PATH",
                     help="photo files or folders")
    how.add_argument("--source", type=path_arg, metavar="SPEC",
                     help="camera or file to collect frames from (default: camera.source)")
    p.add_argument("--count", type=positive_int, default=5, metavar="N",
                   help="frames to collect from the camera (default: 5)")
    p.add_argument("--force", action="store_true",
                   help="enrol photos even if they do not look like the same person")
    p.add_argument("--min-quality", type=fraction, default=0.5, metavar="Q",
                   help="camera frames below this quality (0-1: size, sharpness, frontal) are "
                        "skipped; photos below it are enrolled with a note (default: 0.5)")
    p.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
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
    p.add_argument("images", nargs="+", type=path_arg, metavar="IMAGE")
    p.add_argument("--threshold", type=threshold_arg, metavar="T",
                   help="overrides recognizer.threshold (auto or a cosine -1..1)")

    p = add("verify", cmd_verify, "Are two photos the same person? Compares the main face of "
            "each; exit status 0 = same, 1 = different.",
            "verify a.jpg b.jpg\nverify a.jpg b.jpg --json --threshold 0.4", json_flag=True)
    p.add_argument("image_a", type=path_arg, metavar="IMAGE_A")
    p.add_argument("image_b", type=path_arg, metavar="IMAGE_B")
    p.add_argument("--threshold", type=threshold_arg, metavar="T",
                   help="overrides recognizer.threshold (auto: one comparison at "
                        "recognizer.false_accept; or a cosine -1..1)")

    p = add("demo", cmd_demo, f"Enrol the bundled {DEMO_PERSON} photo into a temporary gallery, "
            "run on the bundled clip, print the events and who was recognised.",
            "demo\ndemo --no-preview\ndemo --web     # the web UI over the looped clip")
    p.add_argument("--web", action="store_true", help="loop the clip and serve the web UI")
    p.add_argument("--listen", metavar="HOST:PORT", help="with --web (default 127.0.0.1)")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=None,
                   help="show a window (default: preview.enabled; auto = if a display exists)")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")

    p = add("bench", cmd_bench, "Per-stage latency (median, p90), end-to-end FPS and embedding "
            "time per face on a file (every frame processed).",
            "bench\nbench --source street.mp4 --frames 100 --json", json_flag=True)
    p.add_argument("--source", type=path_arg, metavar="FILE",
                   help="video or image file (default: the demo clip)")
    p.add_argument("--frames", type=positive_int, default=200, metavar="N",
                   help="frames to process (default: 200)")
    p.add_argument("--cameras", type=positive_int, default=1, metavar="N",
                   help="run the file as N cameras in one process, --frames each (default: 1)")

    p = add("doctor", cmd_doctor, "Check the config, runtime, model and its self-test, "
            "detector, camera, gallery and display; print what is wrong and how to fix it. "
            "Changes nothing.", "doctor\ndoctor --config /etc/edgeface-cam/config.yaml "
            "--no-camera")
    p.add_argument("--no-camera", action="store_true", help="do not open the camera")


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    opts = common.add_argument_group("common options")
    opts.add_argument("--config", type=path_arg, metavar="PATH",
                      help="settings file (default: $EDGEFACE_CAM_CONFIG, else "
                           "/etc/edgeface-cam/config.yaml if present, else built-in defaults)")
    opts.add_argument("--db", type=path_arg, metavar="PATH",
                      help="gallery database (default: gallery.path from the config)")
    opts.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                      help="overrides logging.level from the config")
    opts.add_argument("--model", type=path_arg, metavar="PATH",
                      help="overrides recognizer.model: a .tflite with its .json card beside it")
    opts.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      dest="settings",
                      help="overrides one config key, e.g. --set recognizer.threshold=0.4 "
                           "(repeatable; VALUE is YAML)")
    as_json = Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    parser = Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Real-time on-device face recognition (EdgeFace + LiteRT).",
        epilog=f"start with:  {PROG} demo\nhelp on one command:  {PROG} COMMAND --help")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    cmds = Commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
                     common, as_json)
    _add_everyday_commands(cmds.add)
    _add_tool_commands(cmds.add)
    add_library_commands(cmds.add)  # sightings, unknowns, assign, not, ... (cli_library)
    add_web_commands(cmds.add)
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
