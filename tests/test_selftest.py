"""The whole-path self-test: it passes on a correct stack and names the stage that computes
wrongly when numpy, OpenCV, the detector or the embedder is broken."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from edgeface_cam import align, cli, doctor, selftest
from edgeface_cam.detect import make_detector
from edgeface_cam.embed import DEFAULT_MODEL, Embedder, SelfTestFailed

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def yunet():
    return make_detector("yunet", input_width=640, score_threshold=None)


@pytest.fixture(scope="module")
def embedder():
    return Embedder(DEFAULT_MODEL, num_threads=1)


def _failed(results: list[selftest.Stage]) -> list[str]:
    return [s.name for s in results if not s.ok]


@pytest.mark.parametrize("backend, model", [("yunet", None), ("blazeface", "short"),
                                            ("blazeface", "full")])
def test_every_stage_passes_on_this_stack(backend, model, embedder):
    det = make_detector(backend, model=model, input_width=640, score_threshold=None)
    results = selftest.stages(det, embedder)
    assert [s.name for s in results] == ["alignment", "warp", "detector", "embedding"]
    assert _failed(results) == []
    selftest.check(det, embedder)


class _WrongLinalg:
    """numpy whose SVD is slightly off, as a miscompiled BLAS kernel would be."""

    def __getattr__(self, name):
        return getattr(np.linalg, name)

    @staticmethod
    def svd(a, *args, **kwargs):
        u, s, vt = np.linalg.svd(a, *args, **kwargs)
        return u, s * 1.02, vt @ np.array([[np.cos(0.02), -np.sin(0.02)],
                                            [np.sin(0.02), np.cos(0.02)]])


def test_a_wrong_numpy_is_caught_at_the_alignment_stage(monkeypatch, yunet, embedder):
    fake = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake.linalg = _WrongLinalg()
    monkeypatch.setattr(align, "np", fake)
    assert "alignment" in _failed(selftest.stages(yunet, embedder))
    with pytest.raises(SelfTestFailed, match="alignment stage"):
        selftest.check(yunet, embedder)
    # The embedder's own check (the card's vector, an already aligned crop) does not see it.
    assert embedder.check() > 0.99


def test_a_wrong_warp_is_caught(monkeypatch, yunet, embedder):
    real = cv2.warpAffine

    def shifted(image, m, size, **kw):
        m = np.array(m, np.float64)
        m[:, 2] += 3.0
        return real(image, m, size, **kw)

    monkeypatch.setattr(cv2, "warpAffine", shifted)
    assert "warp" in _failed(selftest.stages(yunet, embedder))


def test_a_wrong_detector_is_caught(yunet, embedder):
    class Shifted:
        name = "yunet"

        def detect(self, image):
            faces = yunet.detect(image)
            for f in faces:
                f.landmarks = f.landmarks + np.float32(4.0)
            return faces

    results = selftest.stages(Shifted(), embedder)
    assert "detector" in _failed(results)


def test_a_wrong_embedder_is_caught(yunet):
    class Noise:
        def embed(self, crops):
            rng = np.random.default_rng(0)
            x = rng.normal(size=(len(crops), 512)).astype(np.float32)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

    assert _failed(selftest.stages(yunet, Noise())) == ["embedding"]


def test_a_broken_stack_stops_a_command_with_one_line(monkeypatch, capsys, tmp_path):
    fake = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake.linalg = _WrongLinalg()
    monkeypatch.setattr(align, "np", fake)
    photo = str(selftest.IMAGE)
    assert cli.main(["identify", photo, "--db", str(tmp_path / "g.db")]) == cli.EXIT_USER
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "self-test failed at the alignment stage" in err[0]


def test_doctor_names_the_broken_stage(monkeypatch):
    fake = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake.linalg = _WrongLinalg()
    ok = doctor.check_whole_path(DEFAULT_MODEL)
    assert ok.status == doctor.OK
    monkeypatch.setattr(align, "np", fake)
    bad = doctor.check_whole_path(DEFAULT_MODEL)
    assert bad.status == doctor.FAIL and bad.detail.startswith("alignment:")
