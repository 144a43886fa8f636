"""The EdgeFace model family: published figures, the authors' checkpoints, save/load, freezing."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training stack (pip install -e .[train])")
from torch import nn  # noqa: E402

from edgeface_cam.align import align_face, normalize  # noqa: E402
from edgeface_cam.detect import YuNetDetector  # noqa: E402
from tests.conftest import MODELS as CHECKPOINTS  # noqa: E402
from tests.conftest import PEOPLE, ROOT  # noqa: E402
from training.models import (  # noqa: E402
    MODELS,
    CheckpointMismatch,
    LoRaLin,
    count_mflops,
    count_params,
    freeze_positional_encoding,
    get_model,
    list_models,
    load_model,
)

# The published table (../shared/REFERENCE.md; Table 2 of the EdgeFace paper): backbone, gamma,
# params in millions, MFLOPs = 2 x MACs at 1x3x112x112. The _q models are the same networks with
# dynamic int8 Linear layers.
PUBLISHED = {
    "edgeface_base": ("edgenext_base", None, 18.23, 1398.83),
    "edgeface_s_gamma_05": ("edgenext_small", 0.5, 3.65, 306.12),
    "edgeface_xs_gamma_06": ("edgenext_x_small", 0.6, 1.77, 154.00),
    "edgeface_xxs": ("edgenext_xx_small", None, 1.24, 94.72),
}
QUANTIZED_TWIN = {"edgeface_xs_q": "edgeface_xs_gamma_06", "edgeface_xxs_q": "edgeface_xxs"}
FLOAT_MODELS = [n for n, s in MODELS.items() if not s.quantized]
QUANTIZED_MODELS = [n for n, s in MODELS.items() if s.quantized]
LOW_RANK_MODELS = [n for n, s in MODELS.items() if s.gamma is not None]


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_matches_the_published_table(name: str) -> None:
    spec = MODELS[name]
    if spec.quantized:  # the authors' _q files: full-rank linears (their files hold no linear1)
        assert spec.gamma is None and spec.backbone == PUBLISHED[QUANTIZED_TWIN[name]][0]
    else:
        assert (spec.backbone, spec.gamma) == PUBLISHED[name][:2]


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_gives_a_512_d_embedding(name: str) -> None:
    with torch.no_grad():
        y = get_model(name)(torch.zeros(2, 3, 112, 112))
    assert tuple(y.shape) == (2, 512) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_params_and_mflops_match_the_paper(name: str) -> None:
    *_, params, mflops = PUBLISHED[name]
    model = get_model(name)
    assert count_params(model) / 1e6 == pytest.approx(params, rel=0.01)
    assert count_mflops(model) == pytest.approx(mflops, rel=0.01)


def test_stats_cli_json_prints_the_float_models_within_one_percent() -> None:
    out = subprocess.run([sys.executable, "-m", "training.stats", *FLOAT_MODELS, "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    assert [r["name"] for r in rows] == FLOAT_MODELS
    for r in rows:
        assert set(r) == {"name", "params_m", "mflops", "size_mb"}
        *_, params, mflops = PUBLISHED[r["name"]]
        assert r["params_m"] == pytest.approx(params, rel=0.01)
        assert r["mflops"] == pytest.approx(mflops, rel=0.01)
        assert r["size_mb"] == pytest.approx(params * 4, rel=0.05)  # fp32: 4 bytes a parameter


@pytest.mark.parametrize("name", LOW_RANK_MODELS)
def test_low_rank_rule_replaces_every_linear_including_head_fc(name: str) -> None:
    gamma = PUBLISHED[name][1]
    model = get_model(name)
    low_rank = {n: m for n, m in model.named_modules() if isinstance(m, LoRaLin)}
    assert "model.head.fc" in low_rank
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            parent = n.rsplit(".", 1)[0]
            assert parent in low_rank, f"{n} is a full-rank Linear"
    for m in low_rank.values():
        expected = max(2, int(min(m.in_features, m.out_features) * gamma))
        assert m.linear1.weight.shape == (expected, m.in_features)
        assert m.linear2.weight.shape == (m.out_features, expected)
        assert m.linear1.bias is None
    keys = get_model(name).state_dict().keys()
    assert "model.head.fc.linear1.weight" in keys and "model.stem.0.weight" in keys


@pytest.fixture(scope="module")
def fixture_crops() -> dict[str, np.ndarray]:
    det = YuNetDetector()
    crops = {}
    for person, files in {"obama": ["obama_1.jpg", "obama_2.jpg"],
                          "biden": ["biden_1.jpg"], "kit": ["kit_harington_1.jpg"]}.items():
        folder = "kit_harington" if person == "kit" else person
        for f in files:
            img = cv2.imread(str(PEOPLE / folder / f))
            face = det.detect(img)[0]
            crops[f] = align_face(img, face.landmarks)
    return crops


def _embed(model: nn.Module, crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = torch.from_numpy(normalize(np.stack(list(crops.values())), "NCHW"))
    with torch.no_grad():
        y = torch.nn.functional.normalize(model(x), dim=1).numpy()
    return dict(zip(crops, y, strict=True))


@pytest.mark.parametrize("name", QUANTIZED_MODELS)
def test_authors_checkpoint_loads_strict_and_tells_people_apart(name, fixture_crops) -> None:
    state = torch.load(CHECKPOINTS / f"{name}.pt", map_location="cpu", weights_only=False)
    model = get_model(name)
    model.load_state_dict(state, strict=True)  # the published file, as the authors load it
    emb = _embed(model.eval(), fixture_crops)
    assert all(v.shape == (512,) for v in emb.values())
    same = emb["obama_1.jpg"] @ emb["obama_2.jpg"]
    others = [emb["obama_1.jpg"] @ emb[k] for k in ("biden_1.jpg", "kit_harington_1.jpg")]
    assert same > 0.5, same
    assert same > max(others) + 0.25, (same, others)


def test_dequantised_twin_holds_exactly_the_int8_weights() -> None:
    q = load_model("edgeface_xxs_q", CHECKPOINTS / "edgeface_xxs_q.pt")
    f = load_model("edgeface_xxs_q_float", CHECKPOINTS / "edgeface_xxs_q.pt")
    qw = q.model.head.fc.weight()
    ints = qw.int_repr().numpy().astype(np.float64)
    expected = (ints - qw.q_zero_point()) * qw.q_scale()  # per-tensor in the authors' files
    np.testing.assert_allclose(f.model.head.fc.weight.detach().numpy(), expected, rtol=1e-6)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(q(x), f(x))
    assert cos.min() > 0.9  # the _q model also quantises activations on the fly


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    a = get_model("edgeface_xs_gamma_06")
    torch.save(a.state_dict(), tmp_path / "xs.pt")
    b = load_model("edgeface_xs_gamma_06", tmp_path / "xs.pt")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b(x))


def test_renamed_key_fails_with_a_clear_error(tmp_path) -> None:
    state = get_model("edgeface_xxs").state_dict()
    state["model.stem.0.weights"] = state.pop("model.stem.0.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatch) as err:
        load_model("edgeface_xxs", tmp_path / "bad.pt")
    msg = str(err.value)
    assert "missing keys: model.stem.0.weight" in msg
    assert "unexpected keys: model.stem.0.weights" in msg


def test_wrong_architecture_is_named(tmp_path) -> None:
    torch.save(get_model("edgeface_xxs").state_dict(), tmp_path / "xxs.pt")
    with pytest.raises(CheckpointMismatch, match="shape mismatches"):
        load_model("edgeface_xs_gamma_06", tmp_path / "xxs.pt")


def test_a_training_file_names_the_network_it_holds(tmp_path) -> None:
    """model.pt from training.train records its network: a wrong --arch says which to pass,
    and training.stats reports that network's figures for the file."""
    path = tmp_path / "model.pt"
    torch.save({"backbone": get_model("edgeface_xxs").state_dict(), "network": "edgeface_xxs",
                "step": 7}, path)
    with pytest.raises(CheckpointMismatch, match=r"holds edgeface_xxs.*--arch edgeface_xxs"):
        load_model("edgeface_xs_gamma_06", path)
    assert count_params(load_model("edgeface_xxs", path)) == count_params(get_model("edgeface_xxs"))
    out = subprocess.run([sys.executable, "-m", "training.stats", str(path), "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    (row,) = json.loads(out)
    *_, params, mflops = PUBLISHED["edgeface_xxs"]
    assert "edgeface_xxs" in row["name"]
    assert row["params_m"] == pytest.approx(params, rel=0.01)
    assert row["mflops"] == pytest.approx(mflops, rel=0.01)


def test_unknown_model_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="edgeface_xs_gamma_06"):
        get_model("edgeface_huge")


def test_frozen_positional_encoding_is_constant_and_exact() -> None:
    model = load_model("edgeface_xs_q_float", CHECKPOINTS / "edgeface_xs_q.pt")
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        before = model(x)
        frozen = freeze_positional_encoding(model)
        after = frozen(x)
    from timm.models.edgenext import PositionalEncodingFourier

    assert not any(isinstance(m, PositionalEncodingFourier) for m in frozen.modules())
    torch.testing.assert_close(after, before)
