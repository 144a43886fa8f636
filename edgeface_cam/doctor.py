"""``edgeface-cam doctor``: is this board ready to run? Each check says ok, warn or fail, and
what to do about it in one line.

API (what the CLI uses):

- ``Check(name, status, detail, fix)``: ``status`` is "ok", "warn" or "fail".
- ``main_checks(settings, *, config_error=None, gallery=None, camera=True, camera_timeout=8.0)
  -> list[Check]``: every check for a loaded ``config.Config``. Pass ``settings=None`` and the
  ConfigError's text as ``config_error`` when the file did not load: the config check fails and
  the rest run on the built-in defaults. ``gallery`` overrides the config's gallery path (--db);
  ``camera=False`` skips opening the camera.
- ``report(checks) -> str`` (one line per check, the fix indented below a warn/fail) and
  ``exit_status(checks) -> int`` (1 if any check failed, else 0).
- The single checks take plain arguments (paths, a source spec), so other tools can call them:
  ``check_runtime``, ``check_model``, ``check_self_test``, ``check_detector``, ``check_source``,
  ``check_gallery``, ``check_threshold`` (the threshold in force for the gallery held and
  the expected share of strangers named), ``check_sinks``, ``check_snapshots``,
  ``check_display``, ``check_config``, ``check_whole_path``.

Doctor checks what ``run`` checks when it starts (the model and its card, the detector, the
whole-path self-test, the camera, the gallery, the event sinks, the snapshots folder), each the
way ``run`` does but without connecting, creating or writing anything.

``python -m edgeface_cam.doctor [options]`` is ``edgeface-cam doctor [options]``: the CLI reads
the config; this module only checks what it is given.

Doctor changes nothing: the gallery is opened read-only, and as ``immutable`` unless its owner
has it open, so that running doctor (as root, say) never leaves WAL files behind, which would
lock the service out when owned by another user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .config import ASSETS, Config

OK, WARN, FAIL = "ok", "warn", "fail"
SERVICE = "edgeface-cam"
# Sources that a running service holds open: a second opener gets "device busy".
_DEVICE_PREFIXES = ("/dev/", "picamera2")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""


def _one_line(e: BaseException | str) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _guard(name: str, fix: str, fn: Callable[[], Check]) -> Check:
    """Run one check; an unexpected exception becomes a failed check, never a traceback."""
    try:
        return fn()
    except Exception as e:
        return Check(name, FAIL, _one_line(e), fix)


# --- the checks ----------------------------------------------------------------------------------
def check_config(settings: Config | None, error: str | None = None) -> Check:
    if settings is None:
        return Check("config", FAIL, _one_line(error or "not loaded"),
                     "fix the key named above; every key is documented in config.yaml")
    return Check("config", OK, settings.origin or "built-in defaults (no config file)")


def check_runtime() -> Check:
    from .runtime import RuntimeMissing, interpreter_class

    try:
        _, package = interpreter_class()
    except RuntimeMissing as e:
        return Check("runtime", FAIL, _one_line(e),
                     "pip install ai-edge-litert (in the service's venv: "
                     "/opt/edgeface-cam/venv/bin/pip)")
    return Check("runtime", OK, package)


def check_model(model: str | Path) -> Check:
    """The .tflite and its card are there, and the card describes this very file: its sha256,
    and (when the runtime can load it) its input and embedding shapes."""
    from .embed import ModelCard, file_sha256

    path = Path(model)
    reinstall = ("point recognizer.model at an exported .tflite with its .json card, or "
                 "reinstall (./install.sh) to restore the bundled one")
    if not path.is_file():
        return Check("model", FAIL, f"model file not found: {path}", reinstall)
    try:
        card = ModelCard.for_model(path)
    except (FileNotFoundError, ValueError) as e:
        return Check("model", FAIL, _one_line(e), reinstall)
    problem = card.file_problem(path, file_sha256(path)) or _shape_problem(card, path)
    if problem:
        return Check("model", FAIL, problem, reinstall)
    quant = card.raw.get("quantization", "?")
    return Check("model", OK, f"{card.raw.get('name', path.stem)} ({quant}, "
                 f"{path.stat().st_size / 1e6:.1f} MB) {path}")


def _shape_problem(card: Any, path: Path) -> str | None:
    """The card's shapes against the model's; None also when the runtime is missing or cannot
    load the file (the runtime and self-test checks say so)."""
    from .runtime import RuntimeMissing, load_interpreter

    try:
        interp = load_interpreter(path, 1)
    except (RuntimeMissing, ValueError):
        return None
    return card.shape_problem(interp.get_input_details()[0]["shape"],
                              interp.get_output_details()[0]["shape"])


def check_self_test(model: str | Path, threads: int = 1) -> Check:
    """Load the model into the runtime and compare its output with the card's recorded one."""
    from .embed import Embedder, ModelMismatch, SelfTestFailed

    try:
        emb = Embedder(model, num_threads=threads, self_test=False)
        cos = emb.check()
    except ModelMismatch as e:  # not the runtime's fault: say so before it is suspected
        return Check("self-test", FAIL, _one_line(e),
                     "copy the .tflite and its .json from the same export, or reinstall")
    except SelfTestFailed as e:
        # With the model check ok the file is as exported, so the runtime is the suspect.
        return Check("self-test", FAIL, _one_line(e),
                     "pip install -U ai-edge-litert in the service's venv; if the model check "
                     "failed too, reinstall the model")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        return Check("self-test", FAIL, _one_line(e),
                     "the model file is damaged or not a LiteRT model: reinstall it")
    if cos != cos:  # NaN: the card has no self-test vector
        return Check("self-test", WARN, f"{emb.name}: the card has no self-test vector",
                     "re-export the model with training.export to get one")
    return Check("self-test", OK, f"{emb.name} on {emb.runtime}: cosine {cos:.4f}")


def check_detector(backend: str = "yunet", model: str | None = None,
                   input_width: int | None = None,
                   score_threshold: float | None = None, image: str | Path | None = None) -> Check:
    """The detector loads and runs; with ``image`` (a photo of one face) it must find a face."""
    from .detect import make_detector

    fix = "check detector.backend and detector.model in the config"
    try:
        det = make_detector(backend, model=model, input_width=input_width,
                            score_threshold=score_threshold)
        det.detect(np.zeros((240, 320, 3), np.uint8))
    except (ImportError, ValueError, FileNotFoundError, cv2.error) as e:
        return Check("detector", FAIL, _one_line(e), fix)
    if image is None:
        return Check("detector", OK, f"{backend} loads and runs")
    photo = cv2.imread(str(image), cv2.IMREAD_COLOR)
    n = 0 if photo is None else len(det.detect(photo))
    if n == 0:
        return Check("detector", FAIL, f"{backend} finds no face in {Path(image).name}",
                     "lower detector.score_threshold or check detector.model")
    return Check("detector", OK, f"{backend} finds the face in {Path(image).name}")


def check_whole_path(model: str | Path, backend: str = "yunet", detector_model: str | None = None,
                     input_width: int | None = None, score_threshold: float | None = None
                     ) -> Check:
    """Detection, alignment, warp and embedding of the bundled self-test face, each against its
    recorded result: names the stage where numpy, OpenCV or LiteRT computes wrongly."""
    from .detect import make_detector
    from .embed import Embedder
    from .selftest import stages

    det = make_detector(backend, model=detector_model, input_width=input_width,
                        score_threshold=score_threshold)
    results = stages(det, Embedder(model, num_threads=1, self_test=False))
    bad = [s for s in results if not s.ok]
    if bad:
        return Check("full path", FAIL, "; ".join(f"{s.name}: {s.detail}" for s in bad),
                     "this numpy/OpenCV/LiteRT build computes wrongly on this CPU: install the "
                     "versions the README names (pip install -U numpy opencv-python "
                     "ai-edge-litert)")
    return Check("full path", OK, "; ".join(f"{s.name} ok" for s in results)
                 + f" ({results[-1].detail.split(' to ')[0].split()[-1]} cosine)")


SYSTEMD_RUN = Path("/run/systemd/system")  # exists when systemd is the init system


def active_services() -> list[str]:
    """The running edgeface-cam units: the main one and per-camera instances (edgeface-cam@X)."""
    systemctl = shutil.which("systemctl")
    if not systemctl or not SYSTEMD_RUN.is_dir():
        return []
    try:
        out = subprocess.run([systemctl, "list-units", "--type=service", "--state=active",
                              "--plain", "--no-legend", f"{SERVICE}.service",
                              f"{SERVICE}@*.service"], timeout=5, check=False,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def check_source(spec: str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, timeout: float = 8.0) -> Check:
    """Open the source and read one frame within ``timeout`` seconds."""
    from .sources import open_source

    spec = str(spec)
    fix = ("set camera.source (a camera index, /dev/videoN, picamera2, a URL or a file); "
           "list cameras with: v4l2-ctl --list-devices; the user needs the group video")
    running = (active_services() if spec.isdigit() or spec.lower().startswith(_DEVICE_PREFIXES)
               else [])
    if running:
        units = " ".join(u.removesuffix(".service") for u in running)
        return Check("camera", WARN, f"{spec} not opened: {units} running, which may hold it",
                     f"sudo systemctl stop {units}, then doctor again")
    box: dict[str, Any] = {}

    def grab() -> None:
        try:
            box["source"] = src = open_source(spec, width, height, fps)
            box["frame"] = src.read()
        except Exception as e:  # reported below; a thread must not die silently
            box["error"] = e

    worker = threading.Thread(target=grab, name="doctor-camera", daemon=True)
    worker.start()
    worker.join(timeout)
    src = box.get("source")
    if src is not None:
        src.close()  # also ends a read() that waits for a reconnect
    if "error" in box:
        return Check("camera", FAIL, _one_line(box["error"]), fix)
    frame = box.get("frame")
    if worker.is_alive() or frame is None:
        why = f"no frame within {timeout:g} s" if worker.is_alive() else "it gave no frame"
        return Check("camera", FAIL, f"{spec}: {why}", fix)
    h, w = frame.image.shape[:2]
    return Check("camera", OK, f"{spec}: {w}x{h} frame")


def _owner(st: os.stat_result) -> str:
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return str(st.st_uid)


def _nearest_existing(path: Path) -> Path | None:
    """``path`` or its closest existing parent: where a folder we would create must be writable."""
    return next((p for p in [path, *path.parents] if p.exists()), None)


def check_gallery(path: str | Path, fingerprint: str | None = None) -> Check:
    """A writable folder, files all owned by the folder's owner (a WAL file created by root
    locks the service out), then what the gallery package's read-only ``inspect`` finds."""
    path = Path(path).expanduser()
    problem = _gallery_files(path)
    return problem if problem is not None else _gallery_contents(path, fingerprint)


def _gallery_files(path: Path) -> Check | None:
    as_user = f"run doctor as the service user: sudo -u edgeface {SERVICE} doctor"
    folder = path.parent
    try:
        if not path.exists():
            existing = _nearest_existing(folder)
            if existing is None or not os.access(existing, os.W_OK):
                return Check("gallery", FAIL, f"no gallery yet and {existing} is not writable",
                             f"create {folder} writable for the service user, or set "
                             "gallery.path")
            return Check("gallery", OK, f"none yet at {path} (created by the first "
                         f"`{SERVICE} enroll`); folder writable")
        dst = folder.stat()
    except PermissionError as e:
        return Check("gallery", WARN, f"cannot look at {path}: {e.strerror}", as_user)
    if not os.access(folder, os.W_OK):
        return Check("gallery", WARN, f"{folder} is not writable by this user, so enrolling "
                     "from here fails", as_user)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists() and p.stat().st_uid != dst.st_uid:
            return Check("gallery", FAIL, f"{p.name} belongs to {_owner(p.stat())}, the folder "
                         f"to {_owner(dst)}: the other user cannot open it",
                         f"sudo chown {_owner(dst)}: {folder}/*  (and enrol with "
                         f"sudo -u {_owner(dst)})")
    return None


def _gallery_contents(path: Path, fingerprint: str | None) -> Check:
    from .gallery import SCHEMA_VERSION, GalleryError, inspect

    restore = "restore the gallery from a backup, or move it away and enrol again"
    try:
        report = inspect(path, fingerprint)
    except GalleryError as e:
        return Check("gallery", FAIL, _one_line(e), restore)
    if report.integrity != "ok":
        return Check("gallery", FAIL, f"{path}: integrity_check says {report.integrity!r}",
                     restore)
    if report.stale:  # every face of those embeddings is called unknown
        return Check("gallery", FAIL, f"{path}: {report.stale} face embedding(s) from another "
                     "model are ignored", f"sudo -u edgeface {SERVICE} reembed")
    if not report.current:
        return Check("gallery", WARN, f"{path}: schema version {report.version}, this program "
                     f"writes {SCHEMA_VERSION}", "open it once with this version's "
                     f"`{SERVICE} list` (as the service user) to upgrade it")
    if not report.wal:
        return Check("gallery", WARN, f"{path}: not in WAL mode (the CLI cannot write while "
                     "the service reads)",
                     f"open it once as the service user (`{SERVICE} list`) to switch to WAL")
    return Check("gallery", OK, f"{path}: {report.people} people, integrity ok, WAL")


def gallery_counts(path: str | Path, fingerprint: str | None) -> tuple[int, int]:
    """(people, embeddings) of this model in the gallery file; (0, 0) when there is none or
    it cannot be read (the gallery check says why)."""
    from .gallery import GalleryError, inspect

    if fingerprint is None or not Path(path).is_file():
        return 0, 0
    try:
        report = inspect(path, fingerprint)
    except GalleryError:
        return 0, 0
    return min(report.people, report.embeddings), report.embeddings


def check_threshold(model: str | Path, setting: float | str, false_accept: float,
                    people: int = 0, embeddings: int = 0) -> Check:
    """The threshold in force for the gallery held, and the share of strangers it is expected
    to name (from the model card's impostor calibration)."""
    from .embed import ModelCard
    from .threshold import AUTO, FALLBACK_THRESHOLD, from_settings

    card = ModelCard.for_model(model)
    if setting == AUTO and card.calibration is None:
        return Check("threshold", WARN, f"auto, but {card.path.name} has no impostor "
                     f"calibration: the fixed fallback {FALLBACK_THRESHOLD:.2f} is used",
                     f"python -m training.calibrate {model} (or set recognizer.threshold)")
    th = from_settings(setting, false_accept, card.calibration, Path(model).name)
    return Check("threshold", OK, th.describe(people, embeddings).removeprefix("threshold "))


def check_sinks(specs: list[dict[str, Any]]) -> Check:
    """The configured event sinks, checked as ``run`` checks them when it builds them
    (``events.check_sinks``: types, settings, paho-mqtt, TLS files), connecting to nothing."""
    from .events import SinkError
    from .events import check_sinks as validate

    try:
        validate(specs)
    except SinkError as e:
        return Check("events", FAIL, _one_line(e),
                     "fix that sink in the config's events: list (config.yaml documents each "
                     "sink type's settings)")
    kinds = ", ".join(str(spec["type"]) for spec in specs)
    return Check("events", OK, f"{len(specs)} sink(s): {kinds}; settings valid (not connected)")


def check_snapshots(folder: str | Path) -> Check:
    """The event pictures' folder exists and is writable, or can be made (doctor makes nothing)."""
    folder = Path(folder).expanduser()
    existing = _nearest_existing(folder)
    fix = ("make it writable for the service user (the service may write only under "
           "/var/lib/edgeface-cam), or set snapshots.dir: null")
    if existing is None or not existing.is_dir():
        return Check("snapshots", FAIL, f"{existing or folder} is not a folder", fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check("snapshots", FAIL, f"{existing} is not writable by this user", fix)
    if existing != folder:
        return Check("snapshots", OK, f"{folder} will be created at start")
    pictures = sum(1 for _ in folder.glob("*.jpg"))
    return Check("snapshots", OK, f"{folder}: writable, {pictures} picture(s)")


def check_display(enabled: bool | str = "auto") -> Check:
    if enabled is False:
        return Check("display", OK, "preview off (preview.enabled: false)")
    try:
        from .preview import display_available
    except ImportError as e:
        return Check("display", WARN, f"no preview module: {_one_line(e)}",
                     "reinstall edgeface-cam")
    ok, why = display_available()
    if ok:
        return Check("display", OK, f"a preview window can open ({why})")
    if enabled is True:
        return Check("display", FAIL, f"preview.enabled is true but {why}",
                     "set preview.enabled: auto (or false) for a headless board")
    return Check("display", OK, f"no preview (auto): {why}")


# --- all of them ---------------------------------------------------------------------------------
def _demo_photo() -> Path | None:
    photos = sorted((ASSETS / "demo").glob("*.png")) + sorted((ASSETS / "demo").glob("*.jpg"))
    return photos[0] if photos else None


def main_checks(settings: Config | None, *, config_error: str | None = None,
                gallery: str | Path | None = None, camera: bool = True,
                camera_timeout: float = 8.0) -> list[Check]:
    """Every check, in the order a fix is best made (see the module docstring)."""
    checks = [check_config(settings, config_error)]
    cfg = settings if settings is not None else Config()
    checks.append(_guard("runtime", "pip install ai-edge-litert", check_runtime))
    model = cfg.model_path()
    model_check = _guard("model", "reinstall", lambda: check_model(model))
    checks.append(model_check)
    if model.is_file():
        checks.append(_guard("self-test", "reinstall the model",
                             lambda: check_self_test(model, cfg.recognizer.threads)))
    d = cfg.detector
    checks.append(_guard("detector", "check the detector settings", lambda: check_detector(
        d.backend, cfg.detector_model(), d.input_width, d.score_threshold,
        _demo_photo() if d.backend == "yunet" else None)))
    if model.is_file():
        checks.append(_guard("full path", "reinstall", lambda: check_whole_path(
            model, d.backend, cfg.detector_model(), d.input_width, d.score_threshold)))
    if camera:
        cams = cfg.camera_list()
        for c in cams:  # each of cameras: as "camera NAME"
            found = _guard("camera", "check camera.source", lambda c=c: check_source(
                c.source, c.width, c.height, c.fps, camera_timeout))
            checks.append(found if len(cams) == 1 else
                          replace(found, name=f"camera {c.name}"))
    fingerprint = None
    if model_check.status == OK:
        from .embed import file_sha256

        fingerprint = file_sha256(model)
    db = Path(gallery).expanduser() if gallery else cfg.gallery_path()
    checks.append(_guard("gallery", "check gallery.path",
                         lambda: check_gallery(db, fingerprint)))
    if model_check.status == OK:
        r = cfg.recognizer
        checks.append(_guard("threshold", "check recognizer.threshold", lambda: check_threshold(
            model, r.threshold, r.false_accept, *gallery_counts(db, fingerprint))))
    if cfg.events:  # none configured: JSON lines on stdout, nothing to check
        from .app import sink_specs

        checks.append(_guard("events", "check the events: list",
                             lambda: check_sinks(sink_specs(cfg, []))))
    snaps = cfg.snapshots_dir()
    if snaps is not None:
        checks.append(_guard("snapshots", "check snapshots.dir",
                             lambda: check_snapshots(snaps)))
    checks.append(_guard("display", "set preview.enabled: auto",
                         lambda: check_display(cfg.preview.enabled)))
    return checks


def report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.status.upper():<4}  {c.name:<9}  {c.detail}")
        if c.status != OK and c.fix:
            lines.append(f"{'':<4}  {'':<9}  fix: {c.fix}")
    return "\n".join(lines)


def exit_status(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


if __name__ == "__main__":
    # `python -m edgeface_cam.doctor ...` is `edgeface-cam doctor ...`: the CLI reads the config
    # (and its --set/--model flags), so doctor needs no parser of its own.
    import sys

    from .cli import main

    raise SystemExit(main(["doctor", *sys.argv[1:]]))
