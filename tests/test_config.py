"""config.yaml and edgeface_cam.config: defaults, documentation, validation, lookup order."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from edgeface_cam import config as configmod
from edgeface_cam.config import Config, ConfigError
from tests.conftest import ASSETS, ROOT

pytestmark = pytest.mark.device

CONFIG_YAML = ROOT / "config.yaml"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    """Write ``text`` as a config file; the path and the ConfigError loading it gives."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        configmod.load(path)
    return path, str(e.value)


def test_repo_config_yaml_is_exactly_the_builtin_defaults():
    data = yaml.safe_load(CONFIG_YAML.read_text())
    loaded = configmod.from_dict(data, "config.yaml")
    assert dataclasses.replace(loaded, origin=None) == Config()
    # Every section and key the loader knows appears in the file.
    assert set(data) == set(configmod.SECTIONS)
    for section, keys in configmod.KEYS.items():
        assert list(data[section]) == list(keys), section  # same keys, same order


def key_comments() -> dict[tuple[str, str], str]:
    """(section, key) -> the comment lines right above it in config.yaml (camera height and fps
    share width's)."""
    lines = CONFIG_YAML.read_text().splitlines()
    out, section = {}, ""
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([a-z_]+):", line)
        if not m:
            continue
        if not m.group(1):
            section = m.group(2)
        j = i - 1
        while m.group(2) in {"height", "fps"} and re.match(r"^ +(width|height|fps):", lines[j]):
            j -= 1
        block = []
        while j >= 0 and lines[j].strip().startswith("#"):
            block.insert(0, lines[j].strip())
            j -= 1
        out[(section, m.group(2)) if m.group(1) else (m.group(2), "")] = "\n".join(block)
    return out


def test_every_key_in_config_yaml_has_a_comment_above_it():
    """Each key sits right under a comment; only camera height and fps share width's."""
    documented = {k for k, block in key_comments().items() if block}
    expected = {(s, k) for s, keys in configmod.KEYS.items() for k in keys} | {("events", "")}
    assert expected <= documented, sorted(expected - documented)


def test_config_yaml_comments_state_the_definitions_bounds_and_choices():
    comments = key_comments()
    for section, keys in configmod.KEYS.items():
        for name, key in keys.items():
            assert key.doc and "\n" not in key.doc, key.path
            block = comments[(section, name)]
            numbers = set(re.findall(r"-?\d+(?:\.\d+)?", block))
            bounds = {str(b) for b in (key.lo, key.hi) if b is not None}
            bounds |= {str(value) for value, _ in key.special}
            assert bounds <= numbers, (key.path, sorted(bounds - numbers), block)
            for choice in key.choices:
                shown = str(choice).lower() if isinstance(choice, bool) else str(choice)
                assert shown in block, (key.path, shown)


def test_threshold_comment_names_the_far_it_was_chosen_for():
    text = CONFIG_YAML.read_text()
    block = text[text.index("recognizer:"):text.index("threshold:", text.index("recognizer:"))]
    assert re.search(r"false-accept rate of 1e-\d", block)
    assert "training.evaluate" in block


def test_default_config_runs_here_with_the_bundled_assets():
    cfg = Config()
    model = cfg.model_path()
    assert model.parent == ASSETS and model.is_file()
    assert model.with_suffix(".json").is_file()
    assert cfg.detector_model() is None  # YuNet's bundled default
    assert (ASSETS / "face_detection_yunet_2023mar.onnx").is_file()
    assert cfg.gallery_path() == Path.home() / ".local/share/edgeface-cam/gallery.db"


@pytest.mark.parametrize("text, key, allowed", [
    ("detector:\n  backend: foo\n", "detector.backend", "yunet, blazeface, mediapipe"),
    ("logging:\n  level: LOUD\n", "logging.level", "DEBUG, INFO, WARNING, ERROR"),
    ("preview:\n  enabled: sometimes\n", "preview.enabled", "true, false, auto"),
    ("recognizer:\n  threshold: 1.5\n", "recognizer.threshold", "[-1, 1]"),
    ("recognizer:\n  threads: 0\n", "recognizer.threads", "[1, 64]"),
    ("recognizer:\n  threads: two\n", "recognizer.threads", "an integer"),
    ("recognizer:\n  threads: 2.5\n", "recognizer.threads", "an integer"),
    ("tracking:\n  embed_every: 0\n", "tracking.embed_every", "[1, ]"),
    ("tracking:\n  iou_threshold: 0\n", "tracking.iou_threshold", "(0, 1]"),
    ("detector:\n  score_threshold: 1\n", "detector.score_threshold", "(0, 1)"),
    ("detector:\n  input_width: 10\n", "detector.input_width", "64..4096"),
    ("detector:\n  min_face: yes\n", "detector.min_face", "a number"),
    ("camera:\n  fps: -5\n", "camera.fps", "(0, 1000]"),
    ("events:\n  - type: carrier_pigeon\n", "events[0].type", "jsonl, mqtt, webhook"),
    ("events:\n  type: jsonl\n", "events", "list"),
    ("gallery: /tmp/x.db\n", "gallery", "mapping"),
])
def test_bad_values_name_the_file_the_key_and_what_is_allowed(tmp_path, text, key, allowed):
    path, msg = load_error(tmp_path, text)
    assert msg.startswith(f"{path}: {key}"), msg
    assert allowed in msg
    assert "\n" not in msg


def test_the_example_error_reads_as_documented():
    with pytest.raises(ConfigError, match=r"^config\.yaml: detector\.backend: 'foo' is not one "
                                          r"of yunet, blazeface, mediapipe$"):
        configmod.from_dict({"detector": {"backend": "foo"}}, "config.yaml")


@pytest.mark.parametrize("text, unknown, suggestion", [
    ("detektor:\n  backend: yunet\n", "detektor", "detector"),
    ("detector:\n  min_size: 30\n", "detector.min_size", "min_face"),
    ("tracking:\n  embed_evry: 3\n", "tracking.embed_evry", "embed_every"),
])
def test_unknown_keys_are_refused_with_a_did_you_mean(tmp_path, text, unknown, suggestion):
    with pytest.raises(ConfigError, match=rf"{re.escape(unknown)}: not a known key \(did you "
                                          rf"mean '{suggestion}'\?\)"):
        configmod.load(write(tmp_path, text))


def test_unknown_key_without_a_near_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"zzz: not a known key \(known: camera, detector"):
        configmod.load(write(tmp_path, "zzz: 1\n"))


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = write(tmp_path, "camera:\n  source: [unclosed\ndetector: {\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        configmod.load(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        configmod.load(tmp_path / "nope.yaml")


def test_partial_file_merges_over_defaults_and_converts_types(tmp_path):
    cfg = configmod.load(write(tmp_path, "camera:\n  source: 0\n  width: 1280\n"
                                         "detector:\n  min_face: 60\nlogging:\n  level: debug\n"
                                         "preview:\n  enabled: false\n"))
    assert cfg.camera.source == "0"  # YAML reads 0 as an int; sources take strings
    assert cfg.camera.width == 1280 and cfg.camera.height is None
    assert cfg.detector.min_face == 60.0 and isinstance(cfg.detector.min_face, float)
    assert cfg.detector.backend == "yunet"
    assert cfg.logging.level == "DEBUG"
    assert cfg.preview.enabled is False
    assert cfg.recognizer == Config().recognizer
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.camera.source = "1"  # type: ignore[misc]


def test_empty_file_and_empty_sections_mean_defaults(tmp_path):
    assert dataclasses.replace(configmod.load(write(tmp_path, "")), origin=None) == Config()
    cfg = configmod.load(write(tmp_path, "camera:\nevents:\n", "b.yaml"))
    assert cfg.camera == Config().camera and cfg.events == ()


def test_event_sink_specs_are_kept(tmp_path):
    cfg = configmod.load(write(tmp_path, "events:\n  - {type: jsonl, path: /tmp/e.jsonl}\n"
                                         "  - {type: mqtt, host: broker, port: 1884}\n"))
    assert cfg.events == ({"type": "jsonl", "path": "/tmp/e.jsonl"},
                          {"type": "mqtt", "host": "broker", "port": 1884})


def test_paths_resolve_against_assets_and_the_config_folder(tmp_path):
    sub = tmp_path / "etc"
    sub.mkdir()
    cfg = configmod.load(write(sub, "recognizer:\n  model: edgeface_xxs.tflite\n"
                                    "detector:\n  backend: blazeface\n  model: full\n"
                                    "gallery:\n  path: data/g.db\n"))
    assert cfg.model_path() == ASSETS / "edgeface_xxs.tflite"
    assert cfg.detector_model() == "full"  # a variant name, not a file
    assert cfg.gallery_path() == sub / "data/g.db"
    cfg = configmod.load(write(sub, f"recognizer:\n  model: {tmp_path}/m.tflite\n"
                                    "detector:\n  model: yunet.onnx\n"
                                    "gallery:\n  path: ~/g.db\n", "abs.yaml"))
    assert cfg.model_path() == tmp_path / "m.tflite"
    assert cfg.detector_model() == str(ASSETS / "yunet.onnx")
    assert cfg.gallery_path() == Path.home() / "g.db"


def test_lookup_order_flag_then_env_then_etc_then_builtin(tmp_path, monkeypatch):
    flag = write(tmp_path, "logging:\n  level: ERROR\n", "flag.yaml")
    env = write(tmp_path, "logging:\n  level: WARNING\n", "env.yaml")
    etc = tmp_path / "etc.yaml"
    monkeypatch.setattr(configmod, "SYSTEM_CONFIG", etc)
    monkeypatch.delenv(configmod.ENV_VAR, raising=False)
    assert configmod.load().origin is None  # nothing anywhere: built-in defaults
    etc.write_text("logging:\n  level: DEBUG\n")
    assert configmod.load().logging.level == "DEBUG"
    monkeypatch.setenv(configmod.ENV_VAR, str(env))
    assert configmod.load().logging.level == "WARNING"
    assert configmod.load(flag).logging.level == "ERROR"
    assert configmod.load(flag).origin == str(flag)


def test_replace_validates_command_line_overrides():
    cfg = configmod.replace(Config(), camera={"source": "clip.mp4"},
                            recognizer={"threshold": 0.5})
    assert cfg.camera.source == "clip.mp4" and cfg.recognizer.threshold == 0.5
    assert cfg.detector == Config().detector
    with pytest.raises(ConfigError, match=r"^command line: recognizer\.threshold: 3\.0 is out"):
        configmod.replace(Config(), recognizer={"threshold": 3.0})


def test_set_flags_override_keys_with_yaml_values():
    cfg = configmod.override(Config(), ["recognizer.threshold=0.4", "tracking.cut_threshold=0",
                                        "camera.source=0", "preview.enabled=false",
                                        "detector.score_threshold=null"])
    assert cfg.recognizer.threshold == 0.4 and cfg.tracking.cut_threshold == 0.0
    assert cfg.camera.source == "0" and cfg.preview.enabled is False
    assert cfg.detector.score_threshold is None
    assert configmod.override(Config(), []) == Config()


@pytest.mark.parametrize(("flag", "message"), [
    ("recognizer.treshold=0.4", "did you mean 'threshold'"),
    ("recogniser.threshold=0.4", "did you mean 'recognizer'"),
    ("recognizer.threshold", "expected SECTION.KEY=VALUE"),
    ("threshold=0.4", "expected SECTION.KEY=VALUE"),
    ("recognizer.threshold=high", "is not one of auto"),  # a number -1..1 or auto
    ("tracking.cut_threshold=2", "out of range"),
    ("events.type=mqtt", "use --events"),
])
def test_bad_set_flags_are_one_clear_error(flag, message):
    with pytest.raises(ConfigError, match=message):
        configmod.override(Config(), [flag])


# --- issue 12: duplicate keys, a folder for a file, numbers that are not finite ----------------
@pytest.mark.parametrize("text, where, lines", [
    ("recognizer:\n  threshold: 0.3\n  threads: 2\n  threshold: 0.5\n",
     "recognizer.threshold", "lines 2 and 4"),
    ("camera:\n  source: 0\ndetector: {}\ncamera:\n  source: 1\n", "camera", "lines 1 and 4"),
    ("events:\n  - {type: mqtt, host: a, host: b}\n", "events[0].host", "lines 2 and 2"),
])
def test_a_key_given_twice_is_refused_naming_it_and_the_lines(tmp_path, text, where, lines):
    path, msg = load_error(tmp_path, text)
    assert msg == f"{path}: {where}: given twice ({lines})"


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    cfg = configmod.load(write(tmp_path, "recognizer:\n  <<: {threads: 1, threshold: 0.3}\n"
                                         "  threshold: 0.5\n"))
    assert (cfg.recognizer.threads, cfg.recognizer.threshold) == (1, 0.5)


def test_a_folder_given_as_the_config_says_it_is_a_folder(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))} is a folder, not a "
                                          "config file"):
        configmod.load(tmp_path)
    monkeypatch.setenv(configmod.ENV_VAR, str(tmp_path))
    with pytest.raises(ConfigError, match="is a folder"):
        configmod.load()


def test_a_nan_threshold_names_the_file_or_the_command_line_and_the_key(tmp_path):
    path = write(tmp_path, "recognizer:\n  threshold: .nan\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: recognizer\.threshold: nan "
                                          r"is not a finite number$"):
        configmod.load(path)
    with pytest.raises(ConfigError, match=r"^command line: recognizer\.threshold: nan is not a "
                                          r"finite number$"):
        configmod.override(Config(), ["recognizer.threshold=.nan"])


FLOAT_KEYS = [k for keys in configmod.KEYS.values() for k in keys.values() if float in k.types]


@pytest.mark.parametrize("key", FLOAT_KEYS, ids=[k.path for k in FLOAT_KEYS])
@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "1" + "0" * 400])
def test_every_number_key_must_be_finite(key, text):
    with pytest.raises(ConfigError, match=rf"^command line: {re.escape(key.path)}: "):
        configmod.override(Config(), [f"{key.path}={text}"])


def test_a_key_can_take_a_number_in_bounds_or_a_word():
    """Room for `recognizer.threshold: auto` (a later issue): bounds for numbers, choices for
    the rest."""
    k = configmod.Key("t", lo=-1, hi=1, choices=("auto",), any_case=True, path="s.t",
                      types=(float, int, str))
    assert k.check("AUTO") == "auto" and k.check(1) == 1.0 and isinstance(k.check(1), float)
    with pytest.raises(ConfigError, match=r"^s\.t: 2 is out of range \[-1, 1\]$"):
        k.check(2)
    with pytest.raises(ConfigError, match=r"^s\.t: 'high' is not one of auto$"):
        k.check("high")


@pytest.mark.parametrize("listen, ok", [("0.0.0.0:8080", True), ("[::]:8443", True),
                                        ("localhost:1", True), ("8080", False), (":8080", False),
                                        ("0.0.0.0:0", False), ("0.0.0.0:70000", False),
                                        ("host:port", False)])
def test_web_listen_is_checked_when_the_config_loads(listen, ok):
    if ok:
        assert configmod.from_dict({"web": {"listen": listen}}).web.listen == listen
    else:
        with pytest.raises(ConfigError, match=r"web\.listen: .* must be HOST:PORT"):
            configmod.from_dict({"web": {"listen": listen}})
