"""config.yaml -> validated, frozen settings.

Only the command line reads this; the modules below it take plain arguments. Every key has a
built-in default (the dataclass defaults below, documented in the repo's config.yaml); a file
overrides some of them. Mistakes are refused at load with a ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .paths import ASSETS

SYSTEM_CONFIG = Path("/etc/edgeface-cam/config.yaml")
ENV_VAR = "EDGEFACE_CAM_CONFIG"

BACKENDS = ("yunet", "blazeface", "mediapipe")
SINK_TYPES = ("jsonl", "mqtt", "webhook")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PREVIEW_CHOICES = (True, False, "auto")


class ConfigError(ValueError):
    """A bad config file or value; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class CameraConfig:
    source: str = "0"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    name: str | None = None


@dataclass(frozen=True)
class DetectorConfig:
    backend: str = "yunet"
    model: str | None = None
    input_width: int = 640
    min_face: float = 40.0
    score_threshold: float | None = None  # None: the backend's own default


@dataclass(frozen=True)
class RecognizerConfig:
    model: str = "edgeface_xs.tflite"
    threads: int = 2
    # FAR 1e-4 for edgeface_xs.tflite on benchmarks/pairs_celeba.tsv (see config.yaml).
    threshold: float = 0.35


@dataclass(frozen=True)
class TrackingConfig:
    embed_every: int = 10
    vote_window: int = 5
    iou_threshold: float = 0.3
    max_age: int = 10
    cut_threshold: float = 0.08


@dataclass(frozen=True)
class GalleryConfig:
    path: str = "~/.local/share/edgeface-cam/gallery.db"


@dataclass(frozen=True)
class PreviewConfig:
    enabled: bool | str = "auto"


@dataclass(frozen=True)
class SnapshotsConfig:
    dir: str | None = None
    max_files: int = 1000


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    # Sink specs as given (each a dict with a valid "type"); events.make_sinks checks the rest.
    events: tuple[dict[str, Any], ...] = ()
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    snapshots: SnapshotsConfig = field(default_factory=SnapshotsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Where the settings came from: a file path, or None for the built-in defaults.
    origin: str | None = None

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


def resolve_asset(path: str) -> Path:
    """A model path: `~` expanded; a relative one is looked up in the package's assets/."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ASSETS / p


# Rules per key: (types accepted, check(value) -> error text or None). int is accepted where a
# float is expected; bool is never taken for a number (YAML `yes` would otherwise pass as 1).
def _range(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False):
    def check(v: float) -> str | None:
        bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
        bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
        if bad_lo or bad_hi:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            return (f"{v!r} is out of range {left}{'' if lo is None else lo}, "
                    f"{'' if hi is None else hi}{right}")
        return None
    return check


def _choice(choices: tuple) -> Any:
    def check(v: Any) -> str | None:
        if v not in choices:
            shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
            return f"{v!r} is not one of {shown}"
        return None
    return check


def _width(v: int) -> str | None:
    return None if v == 0 or 64 <= v <= 4096 else f"{v!r} must be 0 (full size) or 64..4096"


INT, FLOAT, STR, NONE = (int,), (int, float), (str,), (type(None),)
RULES: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "camera": {
        "source": ((str, int), None),
        "width": (INT + NONE, _range(1, 16384)),
        "height": (INT + NONE, _range(1, 16384)),
        "fps": (FLOAT + NONE, _range(0, 1000, lo_open=True)),
        "name": (STR + NONE, None),
    },
    "detector": {
        "backend": (STR, _choice(BACKENDS)),
        "model": (STR + NONE, None),
        "input_width": (INT, _width),
        "min_face": (FLOAT, _range(0)),
        "score_threshold": (FLOAT + NONE, _range(0, 1, lo_open=True, hi_open=True)),
    },
    "recognizer": {
        "model": (STR, None),
        "threads": (INT, _range(1, 64)),
        "threshold": (FLOAT, _range(-1, 1)),
    },
    "tracking": {
        "embed_every": (INT, _range(1)),
        "vote_window": (INT, _range(1)),
        "iou_threshold": (FLOAT, _range(0, 1, lo_open=True)),
        "max_age": (INT, _range(0)),
        "cut_threshold": (FLOAT, _range(0, 1)),
    },
    "gallery": {"path": (STR, None)},
    "preview": {"enabled": ((bool, str), _choice(PREVIEW_CHOICES))},
    "snapshots": {"dir": (STR + NONE, None), "max_files": (INT, _range(1))},
    "logging": {"level": (STR, _choice(LOG_LEVELS))},
}
SECTION_CLASSES = {
    "camera": CameraConfig, "detector": DetectorConfig, "recognizer": RecognizerConfig,
    "tracking": TrackingConfig, "gallery": GalleryConfig, "preview": PreviewConfig,
    "snapshots": SnapshotsConfig, "logging": LoggingConfig,
}
SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name != "origin"]


def _unknown(where: str, key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(known)})"
    return f"{where}{key}: not a known key{hint}"


def _type_names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             type(None): "null"}
    if float in types:
        types = tuple(t for t in types if t is not int)  # "a number" covers integers
    return " or ".join(names[t] for t in types)


def _check_value(label: str, key: str, value: Any) -> Any:
    types, check = RULES[label][key]
    where = f"{label}.{key}"
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{where}: {value!r} must be {_type_names(types)}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}: {value!r} must be {_type_names(types)}")
    if label == "logging" and isinstance(value, str):
        value = value.upper()
    if label == "preview" and isinstance(value, str):
        value = value.lower()
    if value is not None and check is not None:
        err = check(value)
        if err:
            raise ConfigError(f"{where}: {err}")
    if key == "source":
        value = str(value)  # `source: 0` in YAML is an int; sources take specs as strings
    if isinstance(value, int) and not isinstance(value, bool) and float in types:
        value = float(value)
    return value


def _check_events(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"events: must be a list of sinks, got {type(value).__name__}")
    out = []
    for i, spec in enumerate(value):
        if not isinstance(spec, dict):
            raise ConfigError(f"events[{i}]: must be a mapping with a 'type'")
        err = _choice(SINK_TYPES)(spec.get("type"))
        if err:
            raise ConfigError(f"events[{i}].type: {err}")
        out.append(dict(spec))
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
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: must be a mapping of keys, got {body!r}")
        values = {}
        for key, value in body.items():
            if key not in RULES[section]:
                raise ConfigError(_unknown(f"{section}.", key, list(RULES[section])))
            values[key] = _check_value(section, key, value)
        kwargs[section] = SECTION_CLASSES[section](**values)
    return Config(**kwargs)


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
    if not found.is_file():
        raise ConfigError(f"config file not found: {found}")
    try:
        data = yaml.safe_load(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {found}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{found}: not valid YAML{at}: {problem}") from None
    return from_dict(data, str(found))


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with some keys changed and validated, e.g. ``replace(c, camera={"source": "1"})``;
    how command-line flags override the file."""
    changed = {}
    for section, values in sections.items():
        clean = {}
        for key, value in values.items():
            try:
                clean[key] = _check_value(section, key, value)
            except ConfigError as e:
                raise ConfigError(f"command line: {e}") from None
        changed[section] = dataclasses.replace(getattr(config, section), **clean)
    return dataclasses.replace(config, **changed)


def override(config: Config, assignments: list[str] | None) -> Config:
    """Apply ``--set SECTION.KEY=VALUE`` flags (VALUE read as YAML: 0.4, true, null, "0")."""
    changes: dict[str, dict[str, Any]] = {}
    for item in assignments or []:
        name, sep, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"--set {item}: expected SECTION.KEY=VALUE, e.g. "
                              "--set recognizer.threshold=0.4")
        if section == "events":
            raise ConfigError("--set events...: sinks are a list; use --events PATH or "
                              "edit config.yaml")
        if section not in RULES:
            raise ConfigError("--set " + _unknown("", section, [s for s in SECTIONS
                                                                 if s != "events"]))
        if key not in RULES[section]:
            raise ConfigError("--set " + _unknown(f"{section}.", key, list(RULES[section])))
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        changes.setdefault(section, {})[key] = value
    return replace(config, **changes) if changes else config
