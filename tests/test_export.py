"""Export to LiteRT and the shipped default models: parity with torch, the card, the self-test.

The float conversion (litert-torch) is done once per session on the smaller XXS model; each
quantization mode is then applied to that file, and the .tflite is run through ai-edge-litert
on real aligned fixture faces and compared with the torch model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam.embed import Embedder, SelfTestFailed
from edgeface_cam.embed import l2_normalize as unit
from tests.conftest import ASSETS, DATASETS, MODELS, PEOPLE

torch = pytest.importorskip("torch", reason="the training stack (pip install -e .[train])")
pytest.importorskip("litert_torch", reason="pip install -e .[export]")
pytest.importorskip("ai_edge_quantizer", reason="pip install -e .[export]")

from training import export as X  # noqa: E402
from training.common import (  # noqa: E402
    DEFAULT_MIN_FACE,
    MainFace,
    cosines,
    open_detector,
    torch_embed,
)

pytestmark = [pytest.mark.torch, pytest.mark.export, pytest.mark.slow]

XXS_CKPT = MODELS / "edgeface_xxs_q.pt"
FACES = [  # (identity, photo): two people with two photos each, three more people
    ("obama", "obama/obama_1.jpg"), ("obama", "obama/obama_2.jpg"),
    ("biden", "biden/biden_1.jpg"), ("biden", "biden/biden_2.jpg"),
    ("kit_harington", "kit_harington/kit_harington_1.jpg"),
    ("rose_leslie", "rose_leslie/rose_leslie_1.jpg"),
    ("alex_lacamoire", "alex_lacamoire/alex_lacamoire_2.jpg"),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def crops(shared) -> dict[str, np.ndarray]:
    """Aligned crops of the fixture faces through the device path (YuNet + align_face)."""
    main = MainFace(open_detector(), min_face=DEFAULT_MIN_FACE)
    out = {}
    for _, rel in FACES:
        crop = main.crop(cv2.imread(str(PEOPLE / rel)))
        assert crop is not None, f"YuNet found no face in {rel}"
        out[rel] = crop
    return out


@pytest.fixture(scope="module")
def batch(crops) -> np.ndarray:
    return np.stack([crops[rel] for _, rel in FACES])


@pytest.fixture(scope="module")
def xxs(shared):
    torch.set_num_threads(2)
    model, refs, note = X.build_torch_model("edgeface_xxs_q", XXS_CKPT)
    return model, refs, note


@pytest.fixture(scope="module")
def float_tflite(xxs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "xxs_float.tflite"
    X.convert_float(xxs[0], path)
    return path


@pytest.fixture(scope="module")
def torch_ref(xxs, batch) -> np.ndarray:
    return torch_embed(xxs[0], batch)


def quantized(float_tflite: Path, mode: str, calibration: np.ndarray | None = None) -> Path:
    if mode == "none":
        return float_tflite
    out = float_tflite.with_name(f"xxs_{mode}.tflite")
    if not out.exists():
        X.quantize(float_tflite, out, mode, calibration)
    return out


# dynamic-int8 re-quantizes weights that were int8 already (the authors' per-tensor grid) onto a
# per-channel grid and quantizes activations at run time: 0.998 measured on 300 held-out faces
# for XS and XXS, with no loss in verification accuracy (docs/models.md), hence 0.995 not 0.999.
MIN_COSINE = {"none": 0.999, "fp16": 0.999, "dynamic-int8": 0.995}


@pytest.mark.parametrize("mode", sorted(MIN_COSINE))
def test_exported_model_matches_torch(mode, float_tflite, batch, torch_ref) -> None:
    path = quantized(float_tflite, mode)
    got = X.tflite_embed(path, batch)
    cos = cosines(got, torch_ref)
    assert cos.min() >= MIN_COSINE[mode], f"{mode}: cosine to torch {cos.round(5)}"


def test_quantized_files_are_smaller(float_tflite) -> None:
    size = {m: quantized(float_tflite, m).stat().st_size for m in ("none", "fp16", "dynamic-int8")}
    assert size["dynamic-int8"] < size["fp16"] < 0.6 * size["none"], size


@pytest.fixture(scope="module")
def calibration(shared) -> np.ndarray:
    """40 CelebA faces (none of them in the compared batch), aligned the device's way."""
    main = MainFace(open_detector(), min_face=DEFAULT_MIN_FACE)
    out = []
    for path in sorted((DATASETS / "celeba-subset").glob("*/*.jpg")):
        img = cv2.imread(str(path))
        crop = main.crop(img) if img is not None else None
        if crop is not None:
            out.append(crop)
        if len(out) == 40:
            break
    assert len(out) == 40, "too few CelebA faces found for calibration"
    return np.stack(out)


@pytest.fixture(scope="module")
def int8_tflite(float_tflite, calibration) -> Path:
    return quantized(float_tflite, "int8", calibration)


@pytest.fixture(scope="module")
def int16x8_tflite(float_tflite, calibration) -> Path:
    return quantized(float_tflite, "int16x8", calibration)


def _tensor_dtypes(path: Path) -> set:
    from ai_edge_litert.interpreter import Interpreter

    return {d["dtype"] for d in Interpreter(model_path=str(path)).get_tensor_details()}


def test_int8_is_integer_and_runs(int8_tflite, batch, torch_ref) -> None:
    assert np.int8 in _tensor_dtypes(int8_tflite), "no int8 tensors in the int8 export"
    got = X.tflite_embed(int8_tflite, batch)
    assert np.isfinite(got).all()
    cos = cosines(got, torch_ref)
    assert cos.mean() > 0.5, f"int8 embeddings unrelated to torch's: {cos.round(3)}"


@pytest.mark.xfail(strict=True, reason="static int8 activations lose accuracy on EdgeNeXt "
                   "(measured cosine ~0.77 to torch); see docs/models.md")
def test_int8_parity_target(int8_tflite, batch, torch_ref) -> None:
    got = X.tflite_embed(int8_tflite, batch)
    cos = cosines(got, torch_ref)
    assert cos.min() >= 0.99


def test_int16x8_matches_torch(int16x8_tflite, batch, torch_ref) -> None:
    """The integer export that keeps accuracy: int8 weights, int16 activations."""
    dtypes = _tensor_dtypes(int16x8_tflite)
    assert np.int16 in dtypes and np.int8 in dtypes, dtypes
    got = X.tflite_embed(int16x8_tflite, batch)
    cos = cosines(got, torch_ref)
    assert cos.min() >= 0.99, f"int16x8: cosine to torch {cos.round(4)}"


def test_int16x8_range_margin_matters(int16x8_tflite, float_tflite, calibration, batch,
                                      torch_ref, monkeypatch) -> None:
    """Without the widened ranges, faces outside the calibration set clip (the margin's reason)."""
    monkeypatch.setattr(X, "INT16_RANGE_MARGIN", 1.0)
    tight = float_tflite.with_name("xxs_int16x8_tight.tflite")
    X.quantize(float_tflite, tight, "int16x8", calibration)
    wide = X.tflite_embed(int16x8_tflite, batch)
    cos_tight = cosines(X.tflite_embed(tight, batch), torch_ref)
    cos_wide = cosines(wide, torch_ref)
    assert cos_wide.mean() > cos_tight.mean(), (cos_wide.round(4), cos_tight.round(4))


def test_dequantised_twin_stays_close_to_the_authors_int8_model(xxs, batch, torch_ref) -> None:
    """The exported float twin vs the authors' dynamic-int8 torch model (what they ship)."""
    _, refs, note = xxs
    assert "float twin" in note
    q = torch_embed(refs["torch_q"], batch)
    cos = cosines(q, torch_ref)
    assert cos.min() > 0.9, cos.round(4)


def test_cli_writes_a_card_the_device_accepts(float_tflite, crops, tmp_path, monkeypatch,
                                              capsys) -> None:
    held = tmp_path / "heldout" / "people"
    held.mkdir(parents=True)
    for rel, crop in crops.items():
        cv2.imwrite(str(held / Path(rel).with_suffix(".png").name), crop)
    # Conversion is covered above; reuse its file so this test checks the command and the card.
    monkeypatch.setattr(X, "convert_float", lambda model, out: shutil.copyfile(float_tflite, out))
    out = tmp_path / "m" / "xxs.tflite"
    rc = X.main(["--arch", "edgeface_xxs_q", "--checkpoint", str(XXS_CKPT), "--out", str(out),
                 "--quantize", "dynamic-int8", "--heldout", str(held.parent),
                 "--latency-runs", "5"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    figures = dict(kv.split("=") for kv in line.split())
    limit = MIN_COSINE["dynamic-int8"]
    assert float(figures["cosine_mean"]) >= limit and float(figures["cosine_min"]) >= limit

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == sha256(out)
    assert card["source_checkpoint"]["sha256"] == sha256(XXS_CKPT)
    assert card["input"]["layout"] == "NHWC" and card["input"]["shape"] == [1, 112, 112, 3]
    assert card["quantization"] == "dynamic-int8" and card["embedding_size"] == 512
    assert "CC BY-NC-SA 4.0" in card["license"]["weights"]
    assert str(len(crops)) in card["parity"]["faces"]
    assert len(card["self_test"]["embedding"]) == 512

    emb = Embedder(out, num_threads=1)  # runs the self-test
    assert emb.check() >= 0.999
    # The self-test crop is obama_1 through the device path.
    st_crop = emb.card.self_test()[0]
    assert float(unit(emb.embed_one(st_crop)) @ emb.embed_one(crops["obama/obama_1.jpg"])) > 0.99


def test_accuracy_figures_must_come_from_this_model(tmp_path) -> None:
    ok = {"a" * 64, "b" * 64}
    X.check_accuracy_source({"model": {"sha256": "b" * 64}, "accuracy": 0.9}, "f.json", ok)
    X.check_accuracy_source({"benchmark": "hand-written summary"}, "f.json", ok)
    with pytest.raises(X.ExportError, match="measured on another model"):
        X.check_accuracy_source({"model": {"sha256": "c" * 64}}, "f.json", ok)
    with pytest.raises(X.ExportError, match="JSON object"):
        X.check_accuracy_source([0.9], "f.json", ok)


@pytest.mark.parametrize(("argv", "message"), [
    (["--checkpoint", "nowhere/missing.pt"], "checkpoint not found"),
    (["--arch", "edgeface_xs_q"], "does not fit this architecture"),
    (["--quantize", "int8"], "needs --calibration"),
    (["--quantize", "int16x8"], "int16x8 needs --calibration"),
    (["--out", "model.onnx"], "must end in .tflite"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path, capsys) -> None:
    base = {"--arch": "edgeface_xxs_q", "--checkpoint": str(XXS_CKPT),
            "--out": str(tmp_path / "x.tflite"), "--quantize": "none"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    rc = X.main([s for kv in base.items() for s in kv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not any("Traceback" in ln for ln in err)


# ------------------------------------------------------------------ the shipped default models


@pytest.mark.parametrize("name", ["edgeface_xs", "edgeface_xxs"])
def test_shipped_model_card_and_self_test(name) -> None:
    model = ASSETS / f"{name}.tflite"
    card = json.loads(model.with_suffix(".json").read_text())
    assert model.stat().st_size < 5_000_000
    assert card["sha256"] == sha256(model)
    ckpt = MODELS / card["source_checkpoint"]["file"]
    assert card["source_checkpoint"]["sha256"] == sha256(ckpt)
    for key in ("arch", "input", "quantization", "conversion", "parity", "license",
                "attribution", "training_data", "self_test"):
        assert card.get(key), f"card lacks {key}"
    assert "non-commercial" in card["license"]["weights"]
    emb = Embedder(model, num_threads=1)
    assert emb.check() >= card["self_test"]["min_cosine"]
    assert emb.fingerprint == card["sha256"]


@pytest.mark.parametrize("name", ["edgeface_xs", "edgeface_xxs"])
def test_shipped_model_tells_people_apart(name, crops) -> None:
    emb = Embedder(ASSETS / f"{name}.tflite", num_threads=1)
    e = {rel: emb.embed_one(c) for rel, c in crops.items()}
    ids = dict((rel, who) for who, rel in FACES)
    same = [float(e[a] @ e[b]) for a in e for b in e if a < b and ids[a] == ids[b]]
    diff = [float(e[a] @ e[b]) for a in e for b in e if a < b and ids[a] != ids[b]]
    obama = float(e["obama/obama_1.jpg"] @ e["obama/obama_2.jpg"])
    obama_biden = float(e["obama/obama_1.jpg"] @ e["biden/biden_1.jpg"])
    assert obama > obama_biden + 0.3, (obama, obama_biden)
    assert min(same) > max(diff), (min(same), max(diff))


def test_corrupted_self_test_raises(tmp_path) -> None:
    for ext in (".tflite", ".json"):
        shutil.copyfile(ASSETS / f"edgeface_xs{ext}", tmp_path / f"m{ext}")
    card = json.loads((tmp_path / "m.json").read_text())
    card["self_test"]["embedding"] = list(np.roll(card["self_test"]["embedding"], 7))
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(SelfTestFailed):
        Embedder(tmp_path / "m.tflite", num_threads=1)
    # The same files load when the check is skipped: it is the embedding that was corrupted.
    Embedder(tmp_path / "m.tflite", num_threads=1, self_test=False)
