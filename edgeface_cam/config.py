"""config.yaml -> validated, frozen settings.

Only the top of the program (the CLI, the service, doctor) reads this; the modules below it take
plain arguments. Each key is defined once, in its section's dataclass below: its type (the
annotation), default, bounds or choices and a one-line doc (the ``key(...)`` metadata). Loading,
``--set``, did-you-mean and the config.yaml test all read that one definition; the repo's
config.yaml documents it at length. Mistakes are refused at load with a one-line ConfigError
``file: section.key: message``.

Adding a section is a frozen dataclass of ``key(...)`` fields plus one ``Config`` field.

Why not pydantic (considered: Frigate validates its config with it, FastAPI will bring it): the
messages users and tests rely on ("'foo' is not one of yunet, blazeface, mediapipe", "must be 0
(full size) or 64..4096", YAML ``yes`` never a number, ``source: 0`` kept as "0") would each need
a validator or an error translation beside the field, splitting the definition again; frozen
dataclasses (``dataclasses.replace``, ``FrozenInstanceError``) are what callers use; and it is
not a device dependency today. Measured on x86 (Python 3.11, pydantic 2.11, median of 9): yaml
+ this module 23 ms and 14.3 MiB max RSS; yaml + the same nine sections as pydantic models 70 ms
and 25.8 MiB, i.e. +47 ms and +11.5 MiB on every command, several times the time on a Pi.
``Key`` holds all a JSON schema for a settings page needs, and the web API can validate through
``from_dict`` itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .detect import backends as detect_backends
from .events import SINKS
from .paths import ASSETS

SYSTEM_CONFIG = Path("/etc/edgeface-cam/config.yaml")
ENV_VAR = "EDGEFACE_CAM_CONFIG"

# The registries are the truth: each backend and sink type registers itself where it is written.
BACKENDS = detect_backends()
SINK_TYPES = tuple(SINKS)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PREVIEW_CHOICES = (True, False, "auto")


class ConfigError(ValueError):
    """A bad config file or value; the message is one line naming the file and the key."""


# --- the definition of one key --------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """What one setting accepts. ``types`` and ``default`` come from the dataclass field (its
    annotation and default); the rest from ``key(...)``. An int is taken where a float is
    expected; a bool is never taken for a number (YAML ``yes`` would otherwise pass as 1);
    floats must be finite. Numbers are checked against the bounds, other values against the
    choices, so a key may take both (a number or "auto")."""

    doc: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[Any, ...] = ()
    any_case: bool = False  # a string matches a choice whatever its case; stored as the choice
    special: tuple[tuple[Any, str], ...] = ()  # (value, meaning) allowed outside the bounds
    also: tuple[type, ...] = ()  # further input types, converted to the annotation's type
    form: Callable[[str], str | None] | None = None  # a string's shape: the problem, or None
    path: str = ""  # "section.key"
    types: tuple[type, ...] = ()
    default: Any = None

    def check(self, value: Any) -> Any:
        """``value`` converted to the key's type, or a ConfigError naming the key."""
        err = self._problem(value)
        if err:
            raise ConfigError(f"{self.path}: {err}")
        if value is None:
            return None
        if self.choices and (choice := self._choice(value)) is not _NO_CHOICE:
            return choice
        if self.also and isinstance(value, self.also):
            return self.types[0](value)
        return float(value) if _is_number(value) and float in self.types else value

    def _problem(self, v: Any) -> str | None:
        if (isinstance(v, bool) and bool not in self.types) or not isinstance(v, self.types):
            return f"{v!r} must be {_type_names(self.types)}"
        if isinstance(v, str) and self.form is not None:
            return self.form(v)
        if not _is_number(v):
            if v is None or not self.choices or self._choice(v) is not _NO_CHOICE:
                return None
            return _not_one_of(v, self.choices)
        if float in self.types:
            try:
                if not math.isfinite(float(v)):
                    return f"{v!r} is not a finite number"
            except OverflowError:
                return f"{v!r} is too large"
        if (self.lo is None and self.hi is None) or any(v == s for s, _ in self.special):
            return None
        return self._range_problem(v)

    def _range_problem(self, v: float) -> str | None:
        lo, hi = self.lo, self.hi
        bad_lo = lo is not None and (v <= lo if self.lo_open else v < lo)
        bad_hi = hi is not None and (v >= hi if self.hi_open else v > hi)
        if not (bad_lo or bad_hi):
            return None
        if self.special:
            alts = " or ".join(f"{s!r} ({meaning})" for s, meaning in self.special)
            return f"{v!r} must be {alts} or {_num(lo)}..{_num(hi)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"{v!r} is out of range {left}{_num(lo)}, {_num(hi)}{right}"

    def _choice(self, v: Any) -> Any:
        def fold(x: Any) -> Any:
            return x.casefold() if self.any_case and isinstance(x, str) else x
        return next((c for c in self.choices if type(c) is type(v) and fold(c) == fold(v)),
                    _NO_CHOICE)


_NO_CHOICE = object()


def key(default: Any, doc: str, **rules: Any) -> Any:
    """A section field: its default, a one-line doc and the rules of ``Key``."""
    return field(default=default, metadata={"key": Key(doc, **rules)})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(bound: float | None) -> str:
    return "" if bound is None else str(bound)


def _not_one_of(v: Any, choices: tuple[Any, ...]) -> str:
    shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    return f"{v!r} is not one of {shown}"


def _type_names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             type(None): "null"}
    if float in types:
        types = tuple(t for t in types if t is not int)  # "a number" covers integers
    return " or ".join(names[t] for t in types)


# --- the sections ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraConfig:
    source: str = key("0", "where frames come from: picamera2, an index, a device, a URL, a "
                           "video file or an image folder", also=(int,))  # YAML reads 0 as an int
    width: int | None = key(None, "requested capture width in pixels; null = the camera's own",
                            lo=1, hi=16384)
    height: int | None = key(None, "requested capture height in pixels; null = the camera's own",
                             lo=1, hi=16384)
    fps: float | None = key(None, "requested frames per second; null = the camera's own",
                            lo=0, hi=1000, lo_open=True)
    name: str | None = key(None, "this camera's name in events; null = the source spec")
    min_face: float | None = key(None, "this camera's detector.min_face; null = detector.min_face",
                                 lo=0)
    input_width: int | None = key(None, "this camera's detector.input_width; null = "
                                         "detector.input_width", lo=64, hi=4096,
                                  special=((0, "full size"),))


@dataclass(frozen=True)
class DetectorConfig:
    backend: str = key("yunet", "face detector", choices=BACKENDS)
    model: str | None = key(None, "detector model file or variant name; null = the backend's")
    input_width: int = key(640, "frames wider than this are downscaled for detection",
                           lo=64, hi=4096, special=((0, "full size"),))
    min_face: float = key(40.0, "smallest face detected and recognised (box side, pixels)", lo=0)
    score_threshold: float | None = key(None, "minimum detector confidence; null = the "
                                              "backend's own default", lo=0, hi=1,
                                        lo_open=True, hi_open=True)


@dataclass(frozen=True)
class MotionConfig:
    enabled: bool = key(True, "skip face detection while nothing moves and no track is alive")
    threshold: float = key(0.002, "share of the picture that must change to count as motion",
                           lo=0, hi=1)
    min_area: float = key(400.0, "smallest changed region that counts as motion (frame pixels)",
                          lo=0)
    check_every: float = key(2.0, "seconds after which the detector runs even without motion",
                             lo=0, lo_open=True)


@dataclass(frozen=True)
class RecognizerConfig:
    model: str = key("edgeface_xs.tflite", "EdgeFace LiteRT model (its .json card beside it)")
    threads: int = key(2, "CPU threads for the embedding model", lo=1, hi=64)
    # auto: from the model card's impostor calibration for the gallery held now, so that a
    # stranger is named with probability false_accept (edgeface_cam.threshold).
    threshold: float | str = key("auto", "cosine similarity at or above which a face is the "
                                         "best match: auto (follows the gallery) or -1..1",
                                 lo=-1, hi=1, choices=("auto",), any_case=True)
    false_accept: float = key(0.01, "with threshold auto: the chance that a stranger is taken "
                                    "for somebody, per appearance", lo=0, hi=1, lo_open=True,
                              hi_open=True)


@dataclass(frozen=True)
class TrackingConfig:
    embed_every: int = key(10, "re-embed a tracked face every N frames", lo=1)
    vote_window: int = key(5, "a track's name is the majority of its last N recognitions", lo=1)
    iou_threshold: float = key(0.3, "box overlap needed to continue a track", lo=0, hi=1,
                               lo_open=True)
    max_age: int = key(10, "frames a track survives without a matching detection", lo=0)
    cut_threshold: float = key(0.08, "picture change that counts as a shot cut; 0 = off",
                               lo=0, hi=1)


@dataclass(frozen=True)
class GalleryConfig:
    path: str = key("~/.local/share/edgeface-cam/gallery.db", "SQLite file of enrolled people")


@dataclass(frozen=True)
class PreviewConfig:
    enabled: bool | str = key("auto", "show a window: true, false or auto (when a display "
                                      "exists)", choices=PREVIEW_CHOICES, any_case=True)


@dataclass(frozen=True)
class SnapshotsConfig:
    dir: str | None = key(None, "folder for one JPEG per event; null = no pictures")
    max_files: int = key(1000, "pictures kept; the oldest are removed first", lo=1)


@dataclass(frozen=True)
class SightingsConfig:
    enabled: bool = key(True, "store every decided track as a sighting (sightings, unknowns, "
                              "assign, not)")
    max_count: int = key(10000, "sightings kept; the oldest are removed first", lo=1)
    max_days: float = key(30.0, "sightings older than this many days are removed", lo=0,
                          lo_open=True)


def host_port(text: str) -> str | None:
    """The problem with a "HOST:PORT" listen address (IPv6 as "[::]:8080"), or None."""
    host, sep, port = text.strip().rpartition(":")
    if sep and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536:
        return None
    return f"{text!r} must be HOST:PORT with a port 1..65535, e.g. 0.0.0.0:8080"


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = key(True, "serve the web UI and REST API inside run and the service")
    listen: str = key("0.0.0.0:8080", "HOST:PORT to listen on (127.0.0.1 only until a web "
                                      "password is set)", form=host_port)
    live_fps: float = key(5.0, "frames per second of the live view (encoded only while "
                               "someone watches)", lo=0, hi=30, lo_open=True)
    tls_cert: str | None = key(None, "TLS certificate (PEM) for HTTPS; null = plain HTTP")
    tls_key: str | None = key(None, "TLS private key (PEM) matching tls_cert")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = key("INFO", "log level", choices=LOG_LEVELS, any_case=True)


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    # Sink specs as given (each a dict with a valid "type"); events.make_sinks checks the rest.
    events: tuple[dict[str, Any], ...] = ()
    # Several cameras in one process (each a camera mapping with a unique name); empty: the one
    # ``camera``. When given, ``camera`` is the first of them (what enrol and doctor default to).
    cameras: tuple[CameraConfig, ...] = ()
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    snapshots: SnapshotsConfig = field(default_factory=SnapshotsConfig)
    sightings: SightingsConfig = field(default_factory=SightingsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Where the settings came from: a file path, or None for the built-in defaults.
    origin: str | None = None

    def camera_list(self) -> tuple[CameraConfig, ...]:
        """The cameras to run: ``cameras``, else the one ``camera``."""
        return self.cameras or (self.camera,)

    def model_path(self) -> Path:
        return resolve_asset(self.recognizer.model)

    def detector_model(self) -> str | None:
        """A model file resolved like recognizer.model, or a bare variant name ("short",
        "full", ...) passed through to the backend as is."""
        model = self.detector.model
        if model is None or not (Path(model).suffix or "/" in model or model.startswith("~")):
            return model
        return str(resolve_asset(model))

    def _beside_origin(self, path: str) -> Path:
        """Relative paths in a file are relative to that file's folder."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self.origin:
            p = Path(self.origin).resolve().parent / p
        return p

    def gallery_path(self) -> Path:
        return self._beside_origin(self.gallery.path)

    def snapshots_dir(self) -> Path | None:
        return self._beside_origin(self.snapshots.dir) if self.snapshots.dir else None

    def tls_files(self) -> tuple[Path, Path] | None:
        """(certificate, key) for HTTPS, relative to this file; None: plain HTTP."""
        w = self.web
        if not w.tls_cert and not w.tls_key:
            return None
        if not (w.tls_cert and w.tls_key):
            raise ConfigError("web.tls_cert and web.tls_key: give both (or neither)")
        return self._beside_origin(w.tls_cert), self._beside_origin(w.tls_key)


def resolve_asset(path: str) -> Path:
    """A model path: `~` expanded; a relative one is looked up in the package's assets/."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ASSETS / p


# Keys naming a model file; given on the command line, a relative one may mean the user's file.
MODEL_KEYS = {("recognizer", "model"), ("detector", "model")}


def from_working_dir(value: Any) -> Any:
    """A model path given on the command line (``--model``, ``--set recognizer.model=``): one
    that exists relative to the working directory means that file (made absolute); a relative
    path with a folder part (``./models/x.tflite``) means the working directory's even when
    missing, unless assets/ has it; anything else, a bare name above all, is kept for
    ``resolve_asset`` (the bundled assets). A config file's relative model paths always mean
    assets/: the service's working directory is not the user's."""
    if not isinstance(value, str) or not value:
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return value
    folder_part = len(p.parts) > 1 or value.startswith(".")
    if not (p.suffix or folder_part):  # a detector variant name ("short", "full")
        return value
    if p.is_file() or (folder_part and not (ASSETS / p).exists()):
        return str(p.resolve())
    return value


def _section_keys(section: str, cls: type) -> dict[str, Key]:
    """A section's keys, each completed with its field's name, default and accepted types."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        k: Key = f.metadata["key"]
        types = typing.get_args(hints[f.name]) or (hints[f.name],)
        types = (*types, *((int,) if float in types else ()), *k.also)
        out[f.name] = dataclasses.replace(k, path=f"{section}.{f.name}", types=types,
                                          default=f.default)
    return out


# The one registry: section name -> key name -> Key, in the order of the dataclasses. Every
# Config field whose default is a section dataclass is a section; `events` is the list of sinks.
SECTION_TYPES: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)
                                  if dataclasses.is_dataclass(f.default_factory)}
KEYS: dict[str, dict[str, Key]] = {name: _section_keys(name, cls)
                                   for name, cls in SECTION_TYPES.items()}
SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name != "origin"]


def _unknown(where: str, key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(known)})"
    return f"{where}{key}: not a known key{hint}"


def _lookup(section: str, name: str) -> Key:
    """The Key of ``section.name``, or a ConfigError with a did-you-mean."""
    if section not in KEYS:
        raise ConfigError(_unknown("", section, list(KEYS)))
    if name not in KEYS[section]:
        raise ConfigError(_unknown(f"{section}.", name, list(KEYS[section])))
    return KEYS[section][name]


def _check_value(section: str, name: str, value: Any) -> Any:
    return _lookup(section, name).check(value)


def _check_events(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"events: must be a list of sinks, got {type(value).__name__}")
    out = []
    for i, spec in enumerate(value):
        if not isinstance(spec, dict):
            raise ConfigError(f"events[{i}]: must be a mapping with a 'type'")
        if spec.get("type") not in SINK_TYPES:
            raise ConfigError(f"events[{i}].type: {_not_one_of(spec.get('type'), SINK_TYPES)}")
        out.append(dict(spec))
    return tuple(out)


def _check_camera(where: str, body: Any) -> CameraConfig:
    """One camera mapping; errors name ``where`` (``camera`` or ``cameras[i]``)."""
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: must be a mapping of keys, got {body!r}")
    values = {}
    for name, value in body.items():
        try:
            values[name] = _check_value("camera", name, value)
        except ConfigError as e:
            raise ConfigError(where + str(e).removeprefix("camera")) from None
    return CameraConfig(**values)


def _check_cameras(value: Any) -> tuple[CameraConfig, ...]:
    """``cameras:``: a list of camera mappings, each with a unique ``name``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"cameras: must be a list of camera mappings, got "
                          f"{type(value).__name__}")
    out: list[CameraConfig] = []
    for i, body in enumerate(value):
        cam = _check_camera(f"cameras[{i}]", body)
        if not cam.name:
            raise ConfigError(f"cameras[{i}].name: each camera needs a name (events and the "
                              "status tell the cameras apart by it)")
        if any(c.name.casefold() == cam.name.casefold() for c in out if c.name):
            raise ConfigError(f"cameras[{i}].name: {cam.name!r} is given twice")
        out.append(cam)
    return tuple(out)


def from_dict(data: dict[str, Any] | None, origin: str | None = None) -> Config:
    """Merge ``data`` (parsed YAML) over the defaults and validate; raise ConfigError."""
    prefix = f"{origin}: " if origin else ""
    try:
        return _from_dict(data or {}, origin)
    except ConfigError as e:
        raise ConfigError(prefix + str(e)) from None


def _from_dict(data: Any, origin: str | None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping of sections, got {type(data).__name__}")
    kwargs: dict[str, Any] = {"origin": origin}
    for section, body in data.items():
        if section not in SECTIONS:
            raise ConfigError(_unknown("", section, list(SECTIONS)))
        if section == "events":
            kwargs["events"] = _check_events(body)
            continue
        if section == "cameras":
            kwargs["cameras"] = _check_cameras(body)
            continue
        if body is None:
            continue
        if section == "camera":
            kwargs["camera"] = _check_camera("camera", body)
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: must be a mapping of keys, got {body!r}")
        values = {name: _check_value(section, name, value) for name, value in body.items()}
        kwargs[section] = SECTION_TYPES[section](**values)
    if kwargs.get("cameras"):
        if "camera" in kwargs:
            raise ConfigError("camera and cameras: give one of them (camera: for one camera, "
                              "cameras: for a list of named cameras)")
        kwargs["camera"] = kwargs["cameras"][0]
    return Config(**kwargs)


class _Loader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently), naming the key's path and both lines."""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_duplicates(node, "")
        return super().construct_document(node)


def _refuse_duplicates(node: yaml.Node, path: str) -> None:
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, f"{path.rstrip('.')}[{i}].")
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        name = str(key_node.value)
        line = key_node.start_mark.line + 1
        if name in seen and key_node.tag != "tag:yaml.org,2002:merge":
            raise ConfigError(f"{path}{name}: given twice (lines {seen[name]} and {line})")
        seen[name] = line
        _refuse_duplicates(value_node, f"{path}{name}.")


def find_config(path: str | None = None) -> Path | None:
    """--config PATH, else $EDGEFACE_CAM_CONFIG, else /etc/edgeface-cam/config.yaml, else None."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load(path: str | Path | None = None) -> Config:
    """Load the config that ``find_config`` picks (built-in defaults when there is none)."""
    found = find_config(str(path) if path else None)
    if found is None:
        return Config()
    if found.is_dir():
        raise ConfigError(f"{found} is a folder, not a config file (give the .yaml file in it)")
    if not found.is_file():
        raise ConfigError(f"config file not found: {found}")
    try:
        data = yaml.load(found.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {found}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{found}: not valid YAML{at}: {problem}") from None
    except ConfigError as e:
        raise ConfigError(f"{found}: {e}") from None
    return from_dict(data, str(found))


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with some keys changed and validated, e.g. ``replace(c, camera={"source": "1"})``;
    how command-line flags override the file."""
    changed = {}
    for section, values in sections.items():
        try:
            clean = {name: _check_value(section, name, value) for name, value in values.items()}
            clean = {name: from_working_dir(v) if (section, name) in MODEL_KEYS else v
                     for name, v in clean.items()}
        except ConfigError as e:
            raise ConfigError(f"command line: {e}") from None
        base = getattr(config, section)
        if section == "camera" and config.cameras:
            if "source" not in clean:
                raise ConfigError(f"command line: camera.{next(iter(clean))}: this config lists "
                                  "cameras:; set their keys in the file (or give --source)")
            base = CameraConfig()  # --source X: that one camera, not the first of cameras:
        changed[section] = dataclasses.replace(base, **clean)
    if "camera" in changed and config.cameras:
        changed["cameras"] = ()  # a camera override (run --source, --set camera.*) is one camera
    return dataclasses.replace(config, **changed)


def override(config: Config, assignments: list[str] | None) -> Config:
    """Apply ``--set SECTION.KEY=VALUE`` flags (VALUE read as YAML: 0.4, true, null, "0")."""
    changes: dict[str, dict[str, Any]] = {}
    for item in assignments or []:
        name, sep, text = item.partition("=")
        section, dot, key_name = name.strip().partition(".")
        if not sep or not dot or not key_name:
            raise ConfigError(f"--set {item}: expected SECTION.KEY=VALUE, e.g. "
                              "--set recognizer.threshold=0.4")
        if section in ("events", "cameras"):
            raise ConfigError(f"--set {section}...: {section} is a list; edit config.yaml"
                              + (" or use --events PATH" if section == "events" else ""))
        try:
            _lookup(section, key_name)
        except ConfigError as e:
            raise ConfigError(f"--set {e}") from None
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        changes.setdefault(section, {})[key_name] = value
    return replace(config, **changes) if changes else config
