"""embed: a model beside another model's card is refused at load as a mismatch (not blamed on the
runtime); model paths given on the command line are found where the user stands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeface_cam import config as configmod
from edgeface_cam.embed import Embedder, ModelMismatch

from .conftest import ASSETS, PEOPLE, ROOT

pytestmark = pytest.mark.device

PHOTO = PEOPLE / "obama" / "obama_1.jpg"


def mixed_pair(folder: Path, model: str, card: str, drop_sha: bool = False) -> Path:
    """A copy of assets/<model> with the card of assets/<card> beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / "mine.tflite"
    shutil.copy(ASSETS / model, dst)
    data = json.loads((ASSETS / card).read_text())
    if drop_sha:  # a hand-made card: only the shapes can tell
        del data["sha256"]
    dst.with_suffix(".json").write_text(json.dumps(data))
    return dst


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(cwd / "home"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    env.pop("EDGEFACE_CAM_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "edgeface_cam", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_another_models_card_is_a_mismatch_not_a_runtime_problem(tmp_path):
    model = mixed_pair(tmp_path, "edgeface_xs.tflite", "edgeface_xxs.json")
    with pytest.raises(ModelMismatch) as e:
        Embedder(model, num_threads=1)
    text = str(e.value)
    assert "do not match" in text and "mine.json" in text and "edgeface_xxs.tflite" in text
    assert "ai-edge-litert" not in text


def test_card_whose_shapes_differ_is_a_mismatch(tmp_path):
    # BlazeFace's model (128x128 input) beside an EdgeFace card without a sha256.
    model = mixed_pair(tmp_path, "face_detection_short_range.tflite", "edgeface_xs.json",
                       drop_sha=True)
    with pytest.raises(ModelMismatch, match=r"input \[1, 112, 112, 3\].*takes \[1, 128, 128, 3\]"):
        Embedder(model, num_threads=1)


def test_the_cli_says_the_card_does_not_match_in_one_line(tmp_path):
    model = mixed_pair(tmp_path / "m", "edgeface_xs.tflite", "edgeface_xxs.json")
    # ERROR: without the warning about the missing gallery.
    r = cli(tmp_path, "identify", "--log-level", "ERROR", "--model", str(model), str(PHOTO))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model and card do not match" in lines[0], r.stderr
    assert "ai-edge-litert" not in r.stderr and "Traceback" not in r.stderr


# --- where a model path is looked up -------------------------------------------------------------
def test_relative_model_flag_is_found_in_the_working_directory(tmp_path):
    """`--model ./models/x.tflite` is the user's file, not assets/models/x.tflite."""
    (tmp_path / "models").mkdir()
    for ext in (".tflite", ".json"):
        shutil.copy(ASSETS / f"edgeface_xxs{ext}", tmp_path / "models" / f"x{ext}")
    r = cli(tmp_path, "identify", "--json", "--model", "./models/x.tflite", str(PHOTO))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["faces"], r.stdout


def test_model_paths_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x.tflite").write_bytes(b"x")
    (tmp_path / "here.tflite").write_bytes(b"x")
    cfg = configmod.Config()

    def model(value: str) -> Path:
        return configmod.replace(cfg, recognizer={"model": value}).model_path()

    assert model("./models/x.tflite") == tmp_path / "models" / "x.tflite"
    assert model("models/x.tflite") == tmp_path / "models" / "x.tflite"
    assert model("here.tflite") == tmp_path / "here.tflite"  # an existing file wins
    # A missing path with a folder part is reported where the user looked for it...
    assert model("models/missing.tflite") == tmp_path / "models" / "missing.tflite"
    # ...and bare names still mean the bundled models.
    assert model("edgeface_xxs.tflite") == ASSETS / "edgeface_xxs.tflite"
    by_set = configmod.override(cfg, ["recognizer.model=./models/x.tflite"])
    assert by_set.model_path() == tmp_path / "models" / "x.tflite"
    det = configmod.replace(cfg, detector={"model": "models/x.tflite"})
    assert det.detector_model() == str(tmp_path / "models" / "x.tflite")
    # A detector variant name is never taken for a file, even if one is called so.
    (tmp_path / "short").write_bytes(b"x")
    assert configmod.replace(cfg, detector={"model": "short"}).detector_model() == "short"


def test_a_config_files_relative_model_still_means_assets(tmp_path, monkeypatch):
    """The documented meaning of a config file's relative model path does not depend on where
    the command is run from (the service runs from /)."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(ASSETS / "edgeface_xs.tflite", tmp_path / "edgeface_xxs.tflite")
    (tmp_path / "c.yaml").write_text("recognizer:\n  model: edgeface_xxs.tflite\n")
    assert configmod.load(tmp_path / "c.yaml").model_path() == ASSETS / "edgeface_xxs.tflite"
