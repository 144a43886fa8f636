"""training.prepare: detect + align + cache crops with the device's own detector and aligner."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam.align import align_face
from edgeface_cam.detect import YuNetDetector
from tests.conftest import ASSETS, DATASETS, PEOPLE
from training import prepare as P
from training.common import DEFAULT_MIN_FACE, MainFace, open_detector


@pytest.fixture()
def photos(shared, tmp_path) -> Path:
    """Two identity folders of fixture photos and one image with no face in it."""
    src = tmp_path / "src"
    for rel in ("obama/obama_1.jpg", "obama/obama_2.jpg", "biden/biden_1.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PEOPLE / rel, src / rel)
    # A smooth colour gradient with a little noise: an image, but no face.
    y, x = np.mgrid[0:240, 0:320]
    rng = np.random.default_rng(0)
    img = np.stack([x * 255 // 320, y * 255 // 240, (x + y) * 255 // 560], -1)
    img = np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    (src / "biden").mkdir(exist_ok=True)
    cv2.imwrite(str(src / "biden" / "wall.png"), img)
    (src / "notes.txt").write_text("not an image")
    return src


def test_prepare_keeps_identity_folders_and_counts_no_face(photos, tmp_path) -> None:
    out = tmp_path / "out"
    stats = P.prepare(photos, out, progress=False)
    assert (stats.images, stats.written, stats.cached) == (4, 3, 0)
    assert stats.no_face == ["biden/wall.png"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["biden/biden_1.png", "obama/obama_1.png", "obama/obama_2.png"]
    for p in out.rglob("*.png"):
        assert cv2.imread(str(p)).shape == (112, 112, 3)
    assert (out / P.NO_FACE_LIST).read_text().split() == ["biden/wall.png"]


def test_prepare_resumes(photos, tmp_path) -> None:
    out = tmp_path / "out"
    P.prepare(photos, out, progress=False)
    (out / "obama" / "obama_2.png").unlink()  # as if the first run had stopped there
    stats = P.prepare(photos, out, progress=False)
    assert (stats.written, stats.cached, len(stats.no_face)) == (1, 2, 1)


def test_crop_is_the_device_path(shared, tmp_path) -> None:
    """The cached crop is exactly what the device computes: YuNet's largest face, align_face."""
    img = cv2.imread(str(PEOPLE / "obama" / "obama_1.jpg"))
    det = YuNetDetector()
    face = det.detect(img)[0]
    expected = align_face(img, face.landmarks, face.landmark_names)
    np.testing.assert_array_equal(MainFace(det).crop(img), expected)
    (tmp_path / "src" / "obama").mkdir(parents=True)
    shutil.copyfile(PEOPLE / "obama" / "obama_1.jpg", tmp_path / "src" / "obama" / "obama_1.jpg")
    P.prepare(tmp_path / "src", tmp_path / "out", progress=False)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "obama" / "obama_1.png")),
                                  expected)  # PNG is lossless


def test_cli_reports_no_face_count(photos, tmp_path, capsys) -> None:
    rc = P.main([str(photos), str(tmp_path / "out"), "--format", "jpg"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "no_face=1" in out and "1 images gave no face" in out
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 3


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    rc = P.main([str(tmp_path / "missing"), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "source folder not found" in err[0]
    src = tmp_path / "src"
    src.mkdir()
    assert P.main([str(src), str(src / "inside")]) == 2


def test_limit_spreads_over_identity_folders() -> None:
    items = [f"id{i // 10}/{i}.jpg" for i in range(100)]
    picked = P.spread(items, 10)
    assert len(picked) == 10 and len({p.split("/")[0] for p in picked}) == 10


@pytest.mark.slow
def test_pad_aligns_tight_crops(shared, tmp_path) -> None:
    """A CelebA 89x109 tight crop, padded, aligns like the same photo in the wild.

    celeba-10k and celeba-subset share some photos (same file name): the tight crop prepared with
    --pad and the in-the-wild copy prepared without must embed close together, and far from a
    different person.
    """
    from edgeface_cam.embed import Embedder

    pairs = [("000114.jpg", "07256"), ("000176.jpg", "07434")]
    tight, wild = tmp_path / "tight", tmp_path / "wild"
    for name, ident in pairs:
        (tight / ident).mkdir(parents=True)
        (wild / ident).mkdir(parents=True)
        shutil.copyfile(DATASETS / "celeba-10k" / name, tight / ident / name)
        shutil.copyfile(DATASETS / "celeba-subset" / ident / name, wild / ident / name)
    assert cv2.imread(str(tight / pairs[0][1] / pairs[0][0])).shape[:2] == (109, 89)
    assert P.main([str(tight), str(tmp_path / "t_out"), "--pad", "0.5"]) == 0
    assert P.main([str(wild), str(tmp_path / "w_out")]) == 0
    emb = Embedder(ASSETS / "edgeface_xs.tflite", num_threads=1)
    obama = emb.embed_one(MainFace(open_detector(), min_face=DEFAULT_MIN_FACE).crop(
        cv2.imread(str(PEOPLE / "obama" / "obama_1.jpg"))))
    for name, ident in pairs:
        png = Path(ident) / name.replace(".jpg", ".png")
        a = emb.embed_one(cv2.imread(str(tmp_path / "t_out" / png)))
        b = emb.embed_one(cv2.imread(str(tmp_path / "w_out" / png)))
        assert float(a @ b) > 0.5, (name, float(a @ b))
        assert float(a @ b) > float(a @ obama) + 0.4
